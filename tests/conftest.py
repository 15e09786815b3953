"""Fake kernels for every test: a sysfs tree in tmp_path answering writes like Linux 6.12."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakekernel import FakeKernel

# A fake kernel writes hundreds of small files: on tmpfs that is ten times faster than on disk.
_FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@pytest.fixture
def fake_kernel_base(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder for a fake kernel's sys/ and proc/ (on tmpfs when there is one)."""
    if _FAST_TMP is None:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="daxd-fakekernel-", dir=_FAST_TMP) as d:
        yield Path(d)


@pytest.fixture
def fake_kernel(fake_kernel_base: Path) -> FakeKernel:
    """Boot memory only (memory0..memory15 on node 0), no DAX devices; Debian's defaults."""
    return FakeKernel(fake_kernel_base)


@pytest.fixture
def pmem_kernel(fake_kernel: FakeKernel) -> FakeKernel:
    """The kernel-facts machine: dax0.0, a 1006 MiB devdax namespace bound to device_dax."""
    fake_kernel.add_pmem_device()
    fake_kernel.uevents.clear()
    return fake_kernel


@pytest.fixture
def hmem_kernel(fake_kernel: FakeKernel) -> FakeKernel:
    """dax0.0: 2 GiB of soft-reserved memory that kmem took at boot, blocks online in Normal."""
    fake_kernel.add_hmem_device()
    fake_kernel.uevents.clear()
    return fake_kernel


@pytest.fixture
def mixed_kernel(fake_kernel: FakeKernel) -> FakeKernel:
    """pmem dax0.0 (device_dax), hmem dax1.0 (kmem), CXL dax2.0 (kmem) and a seed dax2.1."""
    fake_kernel.add_pmem_device()
    fake_kernel.add_hmem_device()
    fake_kernel.add_cxl_device()
    fake_kernel.add_seed_device(2)
    fake_kernel.uevents.clear()
    return fake_kernel

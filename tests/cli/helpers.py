"""Running the `daxd` command in-process against a fake kernel, capturing what it prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daxd.cli.main import main
from tests.fakekernel import FakeKernel


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        doc = json.loads(self.out)
        assert isinstance(doc, dict)
        return doc


def daxd(
    capsys: pytest.CaptureFixture[str],
    kernel: FakeKernel,
    policy: Path,
    *args: str,
) -> Ran:
    """`daxd --root-dir <kernel> --policy POLICY ARGS...`: the kernel's sys/ and proc/, and its
    run/daxd for the writer lock and the auto_online_blocks record."""
    argv = ["--root-dir", str(kernel_root(kernel)), "--policy", str(policy), *args]
    capsys.readouterr()  # drop what earlier steps printed
    code = main(argv, sysfs=kernel.sysfs)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def kernel_root(kernel: FakeKernel) -> Path:
    """The folder holding the fake kernel's sys/ and proc/: what --root-dir takes."""
    return kernel.sysfs_root.parent


def devices(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The document's devices by name."""
    return {d["name"]: d for d in doc["devices"]}

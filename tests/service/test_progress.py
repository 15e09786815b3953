"""Progress while a conversion runs: the device's state is published half-way, rate-limited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daxd.service import reconciler
from daxd.service.status import DeviceState, DeviceStatus
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness, start, stop

DEVDAX = "rules:\n  - name: all-devdax\n    mode: devdax\n"
RAM = """\
rules:
  - name: all-ram
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""


def convert(kernel: FakeKernel, folder: Path) -> list[DeviceStatus]:
    """dax0.0 from devdax to movable RAM by reload; every status published for it."""
    with harness(kernel, folder, DEVDAX) as h:

        async def scenario() -> list[DeviceStatus]:
            task = await start(h)
            h.publisher.history.clear()
            h.policy.write_text(RAM)
            await h.daemon.reload()
            assert await stop(h, task) == 0
            return [s for s in h.publisher.history if s.name == "dax0.0"]

        return asyncio.run(scenario())


def test_blocks_coming_online_are_published_before_the_pass_ends(
    fake_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kernel.add_pmem_device(size=16 * fake_kernel.config.block_size + (32 << 20))
    monkeypatch.setattr(reconciler, "PROGRESS_INTERVAL", 0.0)
    statuses = convert(fake_kernel, tmp_path)
    total = statuses[-1].blocks_total
    assert total >= 12
    assert statuses[-1].state is DeviceState.APPLIED
    assert statuses[-1].blocks_online == total
    halfway = [
        s for s in statuses if s.state is DeviceState.PENDING and 0 < s.blocks_online < total
    ]
    assert len(halfway) >= 3, [(s.state, s.blocks_online) for s in statuses]
    counts = [s.blocks_online for s in halfway]
    assert counts == sorted(counts)  # onlining only goes forward


def test_progress_is_rate_limited(
    fake_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kernel.add_pmem_device(size=16 * fake_kernel.config.block_size + (32 << 20))
    monkeypatch.setattr(reconciler, "PROGRESS_INTERVAL", 3600.0)
    statuses = convert(fake_kernel, tmp_path)
    total = statuses[-1].blocks_total
    assert [s for s in statuses if 0 < s.blocks_online < total] == []

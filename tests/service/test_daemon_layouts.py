"""The daemon lays out a dynamic region before READY, binds each device by its entry, and says
so in one journal line; a second pass writes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel, GiB
from tests.service.daemon_harness import harness, start, stop

SPLIT = """\
layouts:
  - name: hbm
    match: {provider: hmem}
    devices:
      - {size: 1G, align: 1G, mode: devdax}
      - {size: rest, mode: system-ram, zone: movable}
"""


def test_region_laid_out_before_ready(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(tmp_path / "k", auto_online_blocks="online")
    kernel.add_hmem_device(size=4 * GiB, start=4 * GiB)
    with harness(kernel, tmp_path, SPLIT) as h:

        async def scenario() -> None:
            task = await start(h)
            assert any("READY=1" in m for m in h.notify.collect())
            # at READY: the devices exist and are bound as their entries say
            devices = read_state(kernel.sysfs).devices
            assert {n: d.size for n, d in devices.items()} == {
                "dax0.0": 1 * GiB,
                "dax0.1": 3 * GiB,
            }
            assert devices["dax0.0"].driver == "device_dax"
            assert devices["dax0.1"].driver == "kmem"
            assert h.publisher.devices["dax0.1"].state is DeviceState.APPLIED
            assert h.publisher.devices["dax0.1"].rule == "layout hbm device 2"
            assert h.publisher.devices["dax0.1"].zone == "movable"
            kernel.writes.clear()
            h.daemon.request(None)
            await h.daemon.wait_idle()
            assert kernel.writes == []
            assert await stop(h, task) == 0

        with caplog.at_level("INFO"):
            asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "layout 'hbm'" in r.getMessage()]
    assert any("laid out (" in line and "dax0.1 (device 2)" in line for line in lines), lines
    assert not any("changed outside daxd" in r.getMessage() for r in caplog.records)

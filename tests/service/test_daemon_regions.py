"""The daemon and the policy's CXL regions: built at coldplug before READY and the rules applied
to their dax devices; a memdev that appears after the start is waited for (by its uevent) and
the region built once it is there; one that never comes is reported and READY follows after
the bound; a region someone destroys is built again."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from daxd.kernel.cxl_topology import read_cxl_topology
from daxd.service.reconciler import BindNews
from daxd.service.status import DeviceState
from tests.apply.test_cxl_region_apply import A, B, machine
from tests.fakekernel import FakeKernel, MiB
from tests.service.daemon_harness import harness, start, stop

POLICY = """\
regions:
  - name: pair
    memdevs: [0x1000, 0x1001]
rules:
  - name: cxl-movable
    match: {provider: cxl}
    mode: system-ram
    zone: movable
"""


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def zones(kernel: FakeKernel, name: str) -> set[str]:
    return {(b.zone or "none") if b.online else "offline" for b in kernel.blocks_of(name)}


def test_region_built_and_its_memory_movable_before_ready(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)
            (region,) = read_cxl_topology(fake_kernel.sysfs).regions
            assert region.committed
            assert region.bound
            assert "dax2.0" in fake_kernel.devices
            assert zones(fake_kernel, "dax2.0") == {"Movable"}  # at READY already
            assert h.publisher.devices["dax2.0"].state is DeviceState.APPLIED
            assert h.daemon.regions[0]["state"] == "present"
            assert h.daemon.regions[0]["region"] == "region2"
            await stop(h, task)

        run(scenario())


def test_a_memdev_that_comes_late_is_waited_for(
    fake_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for uid in (52, 12):
        fake_kernel.add_cxl_host_bridge(uid)
    fake_kernel.add_cxl_memdev(A, 12, ram_size=256 * MiB)
    fake_kernel.add_cxl_window([12], start=0x1_1000_0000)
    fake_kernel.add_cxl_window([52], start=0x2_1000_0000)
    fake_kernel.add_cxl_window([12, 52], start=0x3_1000_0000, granularity=8192)
    with harness(fake_kernel, tmp_path, POLICY) as h:
        h.daemon.config.region_wait = 10.0

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(h.daemon.run())
            await h.until(lambda: h.daemon.regions != ())
            assert not h.daemon.ready  # waiting for serial 0x1001
            assert h.daemon.regions[0]["state"] == "waiting"
            began = time.monotonic()
            fake_kernel.add_cxl_memdev(B, 52, ram_size=256 * MiB)  # cxl_pci probes it late
            await h.until(lambda: h.daemon.ready, timeout=5)
            assert time.monotonic() - began < 5
            assert read_cxl_topology(fake_kernel.sysfs).regions[0].bound
            assert zones(fake_kernel, "dax2.0") == {"Movable"}
            await stop(h, task)

        with caplog.at_level(logging.INFO, logger="daxd"):
            run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("region pair")]
    assert any("waiting for serial 0x1001" in ln for ln in lines), lines
    done = [ln for ln in lines if "create region2" in ln and ": done (" in ln]
    assert done, lines
    assert done[0].endswith(": dax2.0"), done


def test_a_memdev_that_never_comes_is_reported_and_ready_follows(
    fake_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY.replace("0x1001]", "0x2000]")) as h:
        h.daemon.config.region_wait = 0.3

        async def scenario() -> None:
            began = time.monotonic()
            task = await start(h)
            assert time.monotonic() - began >= 0.3
            assert read_cxl_topology(fake_kernel.sysfs).regions == ()
            await stop(h, task)

        with caplog.at_level(logging.INFO, logger="daxd"):
            run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "region pair" in text
    assert "waiting for serial 0x2000: not on the cxl bus after 0.3 s; READY without it" in text


def test_a_region_destroyed_by_hand_is_built_again(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)
            for b in fake_kernel.blocks_of("dax2.0"):
                fake_kernel.sysfs.write(f"devices/system/memory/memory{b.index}/state", "offline")
            fake_kernel.destroy_cxl_region(2, force=True)  # cxl destroy-region -f
            await h.until(lambda: "dax2.0" in fake_kernel.devices, timeout=5)
            await h.settled()
            (region,) = read_cxl_topology(fake_kernel.sysfs).regions
            assert region.bound
            await h.until(lambda: zones(fake_kernel, "dax2.0") == {"Movable"}, timeout=5)
            assert fake_kernel.leaks == []
            await stop(h, task)

        run(scenario())


def test_reload_to_absent_offlines_then_tears_down(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)
            assert zones(fake_kernel, "dax2.0") == {"Movable"}
            h.policy.write_text(POLICY.replace("0x1001]", "0x1001]\n    state: absent"))
            await h.daemon.reload()
            assert read_cxl_topology(fake_kernel.sysfs).regions == ()  # in the same pass
            assert "dax2.0" not in fake_kernel.devices
            assert fake_kernel.leaks == []
            await h.until(lambda: "dax2.0" not in h.publisher.devices)
            assert h.daemon.regions[0]["state"] == "absent"
            await stop(h, task)

        run(scenario())


def test_bind_news_says_bound_only_after_the_bind_of_the_last_add() -> None:
    news = BindNews()
    assert not news.has_bound("dax2.0")
    news.note("add", "dax2.0")
    assert not news.has_bound("dax2.0")
    news.note("bind", "dax2.0")
    assert news.has_bound("dax2.0")
    news.note("remove", "dax2.0")
    news.note("add", "dax2.0")  # the region made again
    assert not news.has_bound("dax2.0")

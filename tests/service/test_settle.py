"""A device whose memory the kernel is still adding is planned only once the kernel is done.

[cxl-lab] With memmap_on_memory in effect kmem adds and onlines a CXL device's blocks one after
another, after the dax device's add event and before its bind event (tests/fakekernel/hotadd.py).
A plan made half-way is stale at once: daxd wrote online_movable to blocks the kernel was about
to online (EINVAL, FAILED lines) for a conversion that then succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from daxd.apply.settle import unsettled
from daxd.kernel.model import (
    DRIVER_KMEM,
    BlockState,
    DaxDevice,
    HotplugSettings,
    MemoryBlock,
    Provider,
    Range,
)
from daxd.service.status import DeviceState
from tests.cli.helpers import daxd
from tests.fakekernel import FakeKernel, GiB
from tests.fakekernel.hotadd import GradualKmemAdd
from tests.service.daemon_harness import harness, start, stop

POLICY = """\
rules:
  - name: cxl-movable
    match: {provider: cxl}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
"""
BLOCK = 128 << 20


def test_blocks_arriving_one_by_one_are_planned_once_the_kernel_is_done(
    fake_kernel_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")  # memmap in effect on CXL
    caplog.set_level(logging.INFO, "daxd")
    with harness(kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)
            before = len(kernel.writes)
            device = kernel.add_cxl_device(size=GiB, bound=None)  # the add uevent
            adding = GradualKmemAdd(kernel, device, interval=0.04)
            adding.start()  # kmem's probe: 8 blocks added, 8 onlined, then the bind
            await h.until(lambda: adding.done, timeout=20)
            await h.until(lambda: _published(h) == (DeviceState.APPLIED, 8), timeout=20)
            await h.settled()
            # Nothing was written while the kernel was still at it.
            assert adding.writes_before_bind == before
            assert [a for a in h.publisher.actions if a[2] != "ok"] == []
            await stop(h, task)

        asyncio.run(scenario())
    blocks = kernel.blocks_of("dax0.0")
    assert len(blocks) == 8
    assert {(b.online, b.zone) for b in blocks} == {(True, "Movable")}
    text = caplog.text
    assert "FAILED" not in text
    assert "dax0.0: waiting for the kernel to finish adding its memory" in text
    assert "dax0.0: the kernel is done after" in text
    assert "planning although" not in text
    assert 'dax0.0: rule "cxl-movable"' in text


def test_memory_that_never_arrives_is_planned_after_a_bounded_wait(
    fake_kernel_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    caplog.set_level(logging.INFO, "daxd")
    with harness(kernel, tmp_path, POLICY) as h:
        h.daemon.reconciler.config.settle_quiet = 0.3

        async def scenario() -> None:
            task = await start(h)
            device = kernel.add_cxl_device(size=GiB, bound=None)
            adding = GradualKmemAdd(kernel, device, interval=0.02)
            adding.start()
            stuck = adding._steps.index(("add", adding._steps[3][1]))
            adding._steps = adding._steps[:stuck]  # the kernel stops after 3 blocks, no bind
            await h.until(lambda: "planning although" in caplog.text, timeout=10)
            await h.settled()
            # Planned anyway: the 3 blocks there went to Movable; the plan says why it did not
            # wait longer.
            plans = h.daemon._plans["dax0.0"]
            assert any("planned before the kernel was done" in n for n in plans["notes"])
            started = caplog.text.count("waiting for the kernel")
            await h.daemon.reconcile()  # the same state again: not waited for again
            assert caplog.text.count("waiting for the kernel") == started
            await stop(h, task)

        asyncio.run(scenario())
    assert {(b.online, b.zone) for b in kernel.blocks_of("dax0.0")} == {(True, "Movable")}
    assert "kmem has added 3 of its 8 memory blocks so far" in caplog.text


def _published(h: object) -> tuple[DeviceState, int] | None:
    status = h.publisher.devices.get("dax0.0")  # type: ignore[attr-defined]
    return None if status is None else (status.state, status.blocks_movable)


# --- the rule --------------------------------------------------------------------------------
HOTPLUG = HotplugSettings(BLOCK, None, True, None, hotremove=True)


def cxl(driver: str | None = DRIVER_KMEM) -> DaxDevice:
    return DaxDevice(
        name="dax0.0", region_id=0, size=4 * BLOCK, align=None, target_node=2, numa_node=None,
        resource=None, ranges=(Range(8 * BLOCK, 12 * BLOCK - 1),), memmap_on_memory=True,
        driver=driver, provider=Provider.CXL, devpath="devices/x/dax0.0",
    )  # fmt: skip


def block(index: int, state: str = "online") -> MemoryBlock:
    return MemoryBlock(index, BlockState(state), (), index, True, 2)


@pytest.mark.parametrize(
    ("blocks", "driver", "bind_pending", "why"),
    [
        ((8, 9, 10, 11), DRIVER_KMEM, False, None),
        ((8, 9), DRIVER_KMEM, False, "kmem has added 2 of its 4 memory blocks so far"),
        ((8, 9, 10, 11), DRIVER_KMEM, True, "udev has not reported kmem's bind yet"),
        ((8, 9), "device_dax", True, None),  # not kmem's: nothing of the kernel's to wait for
        ((8, 9), None, True, None),
    ],
)
def test_what_unsettled_means(
    blocks: tuple[int, ...], driver: str | None, bind_pending: bool, why: str | None
) -> None:
    got = unsettled(
        cxl(driver), tuple(block(i) for i in blocks), HOTPLUG, bind_pending=bind_pending
    )
    assert (got or "")[: len(why or "")] == (why or "")
    assert (got is None) == (why is None)


def test_a_block_in_a_passing_state_is_unsettled_but_going_offline_is_not() -> None:
    blocks = (block(8), block(9, "going-online"), block(10), block(11))
    assert unsettled(cxl(), blocks, HOTPLUG) == "memory9 reads going-online"
    blocks = (block(8), block(9, "going-offline"), block(10), block(11))
    assert unsettled(cxl(), blocks, HOTPLUG) is None  # another writer's: the drift rules wait


def test_daxd_apply_without_a_daemon_waits_too(
    capsys: pytest.CaptureFixture[str], fake_kernel_base: Path, tmp_path: Path
) -> None:
    # blocks come offline (auto_online_blocks=offline): only their arrival is gradual
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y", auto_online_blocks="offline")
    device = kernel.add_cxl_device(size=GiB, bound=None)
    GradualKmemAdd(kernel, device, interval=0.02).start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ran = daxd(capsys, kernel, policy, "apply", "--json")
    assert ran.code == 0, ran.err
    (entry,) = ran.json()["devices"]
    assert entry["outcome"] == "applied"
    # planned once all 8 blocks were there (not from the moment kmem had added none)
    assert [s["action"] for s in entry["plan"]["steps"]] == ["online-block"] * 8
    assert all(s["ok"] for s in entry["steps"])
    assert entry["final"]["zone"] == "movable"
    assert entry["final"]["blocks"] == {"online": 8, "total": 8}

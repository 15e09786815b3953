"""apply_device() against the fake kernel: what sysfs reads afterwards, and what never happens.

Every test reads the outcome back from the fake sysfs (driver link, memoryN/state and
valid_zones, memmap_on_memory) and checks the kernel's records of what must never happen:
leaked kmem ranges, SIGBUS victims, offline writes without a timeout.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daxd.apply import executor
from daxd.apply.executor import ApplyOptions, DeviceResult, Outcome, StepResult, apply_device
from daxd.kernel.layout import AUTO_ONLINE_PATH as AUTO
from daxd.kernel.roots import DEFAULT_OFFLINE_TIMEOUT
from daxd.kernel.scan import read_hotplug_settings
from daxd.plan.steps import Action, DevicePlan, Step, Verdict
from tests.fakekernel import FakeKernel, Uevent
from tests.plan.helpers import (
    DEVDAX,
    PMEM_RAM_MEMMAP,
    RAM_MOVABLE,
    Block,
    apply,
    auto_online,
    blocks,
    device_block_indices,
    driver,
    load,
    memmap,
    move_block,
    walk_order,
)


def assert_clean(kernel: FakeKernel) -> None:
    """Nothing daxd must never do happened."""
    assert kernel.leaks == []
    assert kernel.sigbus == []
    assert kernel.untimed_blocking_writes == []
    assert kernel.risky_reads == []
    # no id written to a driver's new_id outlives the apply, rolled back or not
    assert kernel.dynamic_ids() == {}


def assert_all_movable(kernel: FakeKernel, count: int, name: str = "dax0.0") -> None:
    found = blocks(kernel, name)
    assert len(found) == count
    assert all(b.state == "online" and b.zones == "Movable" for b in found), found


def failed(result: DeviceResult) -> list[StepResult]:
    return [r for r in result.results if not r.ok]


def rollbacks(result: DeviceResult) -> list[StepResult]:
    return [r for r in result.results if r.rollback]


def written(result: DeviceResult, action: Action) -> list[StepResult]:
    return [r for r in result.results if r.step.action is action and not r.rollback]


# --- the round trip ------------------------------------------------------------------------------
def test_pmem_to_movable_ram_with_memmap_and_back(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_pmem_device()
    assert memmap(kernel) == "0"

    result = apply(kernel, load(tmp_path, PMEM_RAM_MEMMAP))
    assert result.outcome is Outcome.APPLIED, result.error
    assert driver(kernel) == "kmem"
    assert memmap(kernel) == "1"
    assert_all_movable(kernel, 7)  # memory33..memory39 [facts]
    assert [b.index for b in blocks(kernel)] == list(range(33, 40))
    assert all(r.ok for r in result.results)
    assert result.final is not None
    assert (result.final.mode, result.final.zone, result.final.blocks_online) == (
        "system-ram",
        "movable",
        7,
    )
    assert_clean(kernel)

    back = apply(kernel, load(tmp_path, DEVDAX))
    assert back.outcome is Outcome.APPLIED, back.error
    assert driver(kernel) == "device_dax"
    assert blocks(kernel) == []  # hot-removed
    assert not any(kernel.sysfs.exists(f"devices/system/memory/memory{i}") for i in range(33, 40))
    assert back.final is not None
    assert (back.final.mode, back.final.blocks_total) == ("devdax", 0)
    assert_clean(kernel)


def test_kmem_is_unbound_only_after_every_block_reads_offline(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    seen: list[tuple[str, str]] = []

    def listener(event: Uevent) -> None:
        if event.subsystem == "dax" and event.action == "unbind":
            # The moment kmem lets go: every block of the device is already gone.
            seen.append(("unbind", ",".join(b.state for b in blocks(hmem_kernel))))

    hmem_kernel.listener = listener
    result = apply(hmem_kernel, load(tmp_path, DEVDAX))
    assert result.outcome is Outcome.APPLIED
    assert seen == [("unbind", "")]
    offlines = [w for w in hmem_kernel.writes if w[1] == "offline"]
    unbind = hmem_kernel.writes.index(("bus/dax/drivers/kmem/unbind", "dax0.0"))
    assert len(offlines) == 16
    assert all(hmem_kernel.writes.index(w) < unbind for w in offlines)
    assert_clean(hmem_kernel)


def test_kmem_is_not_unbound_when_a_block_came_back_online(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    """Something else (a udev rule, an admin) onlines a block again before kmem is unbound."""
    indices = device_block_indices(hmem_kernel)

    def listener(event: Uevent) -> None:
        if event.action == "offline" and event.sysname == f"memory{walk_order(indices)[-1]}":
            hmem_kernel.listener = None
            hmem_kernel.sysfs.write(f"devices/system/memory/memory{indices[4]}/state", "online")

    hmem_kernel.listener = listener
    result = apply(hmem_kernel, load(tmp_path, DEVDAX))
    assert result.outcome is Outcome.FAILED
    assert f"refusing to unbind kmem while memory{indices[4]} is still online" in result.error
    assert ("bus/dax/drivers/kmem/unbind", "dax0.0") not in hmem_kernel.writes
    assert driver(hmem_kernel) == "kmem"
    assert {b.state for b in blocks(hmem_kernel)} == {"online"}
    assert len(rollbacks(result)) == 15  # every block but the one already back
    assert_clean(hmem_kernel)


def test_hmem_auto_onlined_in_normal_is_moved_to_movable(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    assert {b.zones for b in blocks(hmem_kernel)} == {"Normal"}
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert result.outcome is Outcome.APPLIED, result.error
    assert_all_movable(hmem_kernel, 16)
    assert driver(hmem_kernel) == "kmem"
    assert len(written(result, Action.OFFLINE_BLOCK)) == 16
    assert len(written(result, Action.ONLINE_BLOCK)) == 16
    assert_clean(hmem_kernel)


def test_hmem_to_devdax_binds_device_dax_by_id(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    result = apply(hmem_kernel, load(tmp_path, DEVDAX))
    assert result.outcome is Outcome.APPLIED, result.error
    assert driver(hmem_kernel) == "device_dax"
    assert blocks(hmem_kernel) == []
    # hmem matches kmem by type: only the id written to device_dax/new_id makes it take it.
    assert ("bus/dax/drivers/device_dax/new_id", "dax0.0") in hmem_kernel.writes
    assert ("bus/dax/drivers/kmem/remove_id", "dax0.0") in hmem_kernel.writes
    assert_clean(hmem_kernel)


def test_devdax_to_ram_onlines_blocks_when_the_kernel_does_not(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(fake_kernel_base, auto_online_blocks="offline")
    kernel.add_pmem_device()
    text = "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n"
    result = apply(kernel, load(tmp_path, text))
    assert result.outcome is Outcome.APPLIED, result.error
    assert_all_movable(kernel, 7)
    # Onlined once, straight into Movable: no offline was needed.
    assert written(result, Action.OFFLINE_BLOCK) == []


def test_online_false_leaves_the_memory_offline(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    text = "rules:\n  - mode: system-ram\n    online: false\n"
    result = apply(hmem_kernel, load(tmp_path, text))
    assert result.outcome is Outcome.APPLIED, result.error
    found = blocks(hmem_kernel)
    assert len(found) == 16
    assert {b.state for b in found} == {"offline"}
    assert driver(hmem_kernel) == "kmem"


def test_memmap_change_while_kmem_holds_the_device(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_cxl_device()
    assert memmap(kernel) == "1"
    text = "rules:\n  - mode: system-ram\n    memmap_on_memory: false\n"
    result = apply(kernel, load(tmp_path, text))
    assert result.outcome is Outcome.APPLIED, result.error
    assert memmap(kernel) == "0"
    assert driver(kernel) == "kmem"
    assert_all_movable(kernel, 32)
    assert_clean(kernel)


@pytest.mark.parametrize("text", [DEVDAX, RAM_MOVABLE, "rules: []\n", "rules:\n  - mode: ignore\n"])
def test_nothing_is_written_when_nothing_is_to_do(
    fake_kernel: FakeKernel, tmp_path: Path, text: str
) -> None:
    fake_kernel.add_hmem_device(bound="kmem")
    if text == DEVDAX:
        fake_kernel.add_pmem_device(region=5)
        name = "dax5.0"
    else:
        name = "dax0.0"
        for i in device_block_indices(fake_kernel):
            move_block(fake_kernel, i, "online_movable")
    before = len(fake_kernel.writes)
    result = apply(fake_kernel, load(tmp_path, text), name)
    assert result.outcome in (Outcome.IN_SYNC, Outcome.UNMANAGED, Outcome.IGNORED)
    assert result.results == []
    assert len(fake_kernel.writes) == before


def test_pmem_without_consent_is_refused_and_untouched(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    result = apply(pmem_kernel, load(tmp_path, "rules:\n  - mode: system-ram\n"))
    assert result.outcome is Outcome.REFUSED
    assert "allow_pmem_data_loss" in result.error
    assert result.results == []
    assert pmem_kernel.writes == []
    assert driver(pmem_kernel) == "device_dax"


# --- a block that will not go offline during a conversion ---------------------------------------
def zones_before_devdax(kernel: FakeKernel) -> dict[int, str]:
    """hmem blocks in both zones: the first four moved to Movable, the rest still Normal."""
    indices = device_block_indices(kernel)
    for i in indices[:4]:
        move_block(kernel, i, "online_movable")
    zones = {b.index: b.zones for b in blocks(kernel)}
    assert {zones[i] for i in indices[:4]} == {"Movable"}
    assert {zones[i] for i in indices[4:]} == {"Normal"}
    return zones


def assert_rolled_back(kernel: FakeKernel, before: dict[int, str], result: DeviceResult) -> None:
    """kmem still bound, every block online in the zone it was in, the undo steps recorded."""
    assert result.outcome is Outcome.FAILED
    assert driver(kernel) == "kmem"
    assert ("bus/dax/drivers/kmem/unbind", "dax0.0") not in kernel.writes
    assert {b.index: b.zones for b in blocks(kernel)} == before
    assert {b.state for b in blocks(kernel)} == {"online"}
    offlined = [r.step.block for r in written(result, Action.OFFLINE_BLOCK) if r.ok]
    undone = rollbacks(result)
    assert offlined, "the failure should come after some blocks went offline"
    assert [r.step.block for r in undone] == offlined[::-1]
    assert all(r.ok and r.step.action is Action.ONLINE_BLOCK for r in undone)
    for r in undone:
        assert r.step.value == (
            "online_movable" if before[r.step.block or 0] == "Movable" else "online_kernel"
        )
    assert result.final is not None
    assert (result.final.mode, result.final.blocks_online) == ("system-ram", 16)
    assert_clean(kernel)


def test_offline_ebusy_mid_conversion_rolls_back(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    before = zones_before_devdax(hmem_kernel)
    stuck = walk_order(device_block_indices(hmem_kernel))[9]  # the 10th to go
    hmem_kernel.block_offline_fails(stuck, errno.EBUSY)
    result = apply(hmem_kernel, load(tmp_path, DEVDAX))
    assert_rolled_back(hmem_kernel, before, result)
    (failure,) = failed(result)
    assert failure.errno == "EBUSY"
    assert failure.step.block == stuck
    assert "EBUSY" in result.error
    assert f"memory{stuck}/state" in result.error
    assert len([r for r in written(result, Action.OFFLINE_BLOCK) if r.ok]) == 9


def test_offline_that_hangs_is_interrupted_and_rolled_back(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    before = zones_before_devdax(hmem_kernel)
    stuck = device_block_indices(hmem_kernel)[6]
    hmem_kernel.block_offline_hangs(stuck)
    result = apply(hmem_kernel, load(tmp_path, DEVDAX), offline_timeout=0.25)
    assert_rolled_back(hmem_kernel, before, result)
    (failure,) = failed(result)
    assert failure.errno == "ETIMEDOUT"
    assert failure.step.block == stuck
    assert "within 0.25 s" in result.error
    assert hmem_kernel.untimed_blocking_writes == []


# --- processes using /dev/daxX.Y --------------------------------------------------------------
@pytest.mark.parametrize("how", ["open", "mapped", "mapped, fd closed"])
def test_device_in_use_is_not_unbound(pmem_kernel: FakeKernel, tmp_path: Path, how: str) -> None:
    pmem_kernel.open_device(4242, "pmem-app", "dax0.0", mapped=how != "open")
    if how == "mapped, fd closed":
        pmem_kernel.close_device(4242, "dax0.0")
    text = "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n"
    result = apply(pmem_kernel, load(tmp_path, text))
    assert result.outcome is Outcome.FAILED
    assert "pmem-app (pid 4242)" in result.error
    assert "/dev/dax0.0 is in use" in result.error
    (failure,) = failed(result)
    assert failure.step.action is Action.UNBIND
    assert pmem_kernel.sigbus == []
    assert pmem_kernel.writes == []  # refused before writing anything
    assert driver(pmem_kernel) == "device_dax"
    assert result.final is not None
    assert result.final.mode == "devdax"


def test_every_user_is_named(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    pmem_kernel.open_device(100, "writer", "dax0.0")
    pmem_kernel.open_device(200, "reader", "dax0.0", mapped=True)
    pmem_kernel.open_device(300, "bystander", "dax7.0")
    text = "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n"
    result = apply(pmem_kernel, load(tmp_path, text))
    assert "writer (pid 100)" in result.error
    assert "reader (pid 200)" in result.error
    assert "bystander" not in result.error
    assert pmem_kernel.sigbus == []


def test_once_the_user_exits_the_conversion_goes_through(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    pmem_kernel.open_device(4242, "pmem-app", "dax0.0", mapped=True)
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n")
    assert apply(pmem_kernel, policy).outcome is Outcome.FAILED
    pmem_kernel.exit_process(4242)
    assert apply(pmem_kernel, policy).outcome is Outcome.APPLIED
    assert driver(pmem_kernel) == "kmem"
    assert pmem_kernel.sigbus == []


# --- driver writes that fail -------------------------------------------------------------------
@pytest.mark.parametrize("err", [errno.ENOMEM, errno.ENXIO])
def test_kmem_new_id_failure_is_reported_precisely(
    pmem_kernel: FakeKernel, tmp_path: Path, err: int
) -> None:
    name = errno.errorcode[err]
    pmem_kernel.fail("bus/dax/drivers/kmem/new_id", err)
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n")
    result = apply(pmem_kernel, policy)
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith(
        f"writing 'dax0.0' to bus/dax/drivers/kmem/new_id failed with {name}"
    )
    failure = next(r for r in result.results if not r.ok)
    assert (failure.step.action, failure.errno) == (Action.NEW_ID, name)
    assert [(r.step.action, r.step.path, r.rollback) for r in result.results] == [
        (Action.UNBIND, "bus/dax/drivers/device_dax/unbind", False),
        (Action.REMOVE_ID, "bus/dax/drivers/device_dax/remove_id", False),
        (Action.SET_AUTO_ONLINE, AUTO, False),
        (Action.NEW_ID, "bus/dax/drivers/kmem/new_id", False),
        (Action.RESTORE_AUTO_ONLINE, AUTO, True),  # the kernel's setting first
        (Action.REMOVE_ID, "bus/dax/drivers/kmem/remove_id", True),  # kmem keeps no id
        (Action.NEW_ID, "bus/dax/drivers/device_dax/new_id", True),
        (Action.REMOVE_ID, "bus/dax/drivers/device_dax/remove_id", True),
    ]
    assert auto_online(pmem_kernel) == "online"
    # Not left unbound half-way: device_dax has it back, /dev/dax0.0 works again.
    assert driver(pmem_kernel) == "device_dax"
    assert blocks(pmem_kernel) == []
    assert result.final is not None
    assert (result.final.mode, result.final.driver) == ("devdax", "device_dax")
    assert_clean(pmem_kernel)
    # Nothing is stuck half-way: the next apply finishes the job.
    again = apply(pmem_kernel, policy)
    assert again.outcome is Outcome.APPLIED, again.error
    assert driver(pmem_kernel) == "kmem"
    assert_all_movable(pmem_kernel, 7)


def test_device_dax_unbind_failure_leaves_the_device_as_it_was(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    pmem_kernel.fail("bus/dax/drivers/device_dax/unbind", errno.EBUSY)
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n")
    result = apply(pmem_kernel, policy)
    assert result.outcome is Outcome.FAILED
    assert "device_dax/unbind failed with EBUSY" in result.error
    assert len(result.results) == 1
    assert driver(pmem_kernel) == "device_dax"
    assert ("bus/dax/drivers/kmem/new_id", "dax0.0") not in pmem_kernel.writes


def test_memmap_write_failure_stops_before_kmem(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_pmem_device()
    kernel.fail("bus/dax/devices/dax0.0/memmap_on_memory", errno.EOPNOTSUPP)
    result = apply(kernel, load(tmp_path, PMEM_RAM_MEMMAP))
    assert result.outcome is Outcome.FAILED
    assert "memmap_on_memory failed with EOPNOTSUPP" in result.error
    assert ("bus/dax/drivers/kmem/new_id", "dax0.0") not in kernel.writes
    assert memmap(kernel) == "0"
    assert blocks(kernel) == []
    assert_clean(kernel)


def test_device_dax_new_id_failure_after_kmem_let_go(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    hmem_kernel.fail("bus/dax/drivers/device_dax/new_id", errno.ENOMEM)
    result = apply(hmem_kernel, load(tmp_path, DEVDAX))
    assert result.outcome is Outcome.FAILED
    assert "device_dax/new_id failed with ENOMEM" in result.error
    (failure,) = failed(result)
    assert failure.errno == "ENOMEM"
    # kmem gave the memory back cleanly, device_dax refused it: kmem takes it again and every
    # block is back online in the zone it was in, nothing leaked.
    assert driver(hmem_kernel) == "kmem"
    assert {(b.state, b.zones) for b in blocks(hmem_kernel)} == {("online", "Normal")}
    assert_clean(hmem_kernel)
    assert result.final is not None
    assert result.final.mode == "system-ram"


# --- zone fixes ---------------------------------------------------------------------------------
def test_zone_fix_goes_on_past_a_block_that_will_not_move(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    indices = device_block_indices(hmem_kernel)
    stuck = indices[5]
    hmem_kernel.block_offline_fails(stuck, errno.EBUSY)
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert result.outcome is Outcome.FAILED
    assert f"memory{stuck}/state" in result.error
    assert "EBUSY" in result.error
    found = {b.index: b for b in blocks(hmem_kernel)}
    assert found[stuck] == Block(stuck, "online", "Normal")
    assert all(found[i] == Block(i, "online", "Movable") for i in indices if i != stuck)
    (failure,) = failed(result)
    assert failure.step.block == stuck
    assert rollbacks(result) == []
    assert_clean(hmem_kernel)


def test_zone_fix_block_that_cannot_come_back_in_movable_comes_back_anyway(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    target = device_block_indices(hmem_kernel)[2]

    def listener(event: Uevent) -> None:
        # The block went offline; its online_movable write will now fail once.
        if event.action == "offline" and event.sysname == f"memory{target}":
            hmem_kernel.fail(f"devices/system/memory/memory{target}/state", errno.ENOMEM)

    hmem_kernel.listener = listener
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert result.outcome is Outcome.FAILED
    assert "ENOMEM" in result.error
    # Memory is never left offline: the undo onlined it in a kernel zone.
    assert {b.state for b in blocks(hmem_kernel)} == {"online"}
    (undo,) = rollbacks(result)
    assert (undo.ok, undo.step.block, undo.step.value) == (True, target, "online_kernel")


def test_a_hanging_offline_in_a_zone_fix_is_timed(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    stuck = device_block_indices(hmem_kernel)[0]
    hmem_kernel.block_offline_hangs(stuck)
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE), offline_timeout=0.1)
    assert result.outcome is Outcome.FAILED
    assert failed(result)[0].errno == "ETIMEDOUT"
    assert hmem_kernel.untimed_blocking_writes == []
    assert sum(1 for b in blocks(hmem_kernel) if b.zones == "Movable") == 15


# --- the device goes away, or daxd is asked to stop ------------------------------------------
def test_device_gone_before_apply(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    pmem_kernel.remove_device("dax0.0")
    result = apply(pmem_kernel, load(tmp_path, DEVDAX))
    assert result.outcome is Outcome.GONE
    assert result.results == []
    assert result.final is None


def test_device_removed_mid_conversion(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    def listener(event: Uevent) -> None:
        if event.subsystem == "dax" and event.action == "unbind":
            pmem_kernel.remove_device(event.sysname)  # the namespace is disabled meanwhile

    pmem_kernel.listener = listener
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n")
    result = apply(pmem_kernel, policy)
    assert result.outcome in (Outcome.FAILED, Outcome.GONE)
    assert "disappeared" in result.error
    assert result.final is None
    assert not pmem_kernel.sysfs.exists("bus/dax/devices/dax0.0")
    assert ("bus/dax/drivers/kmem/new_id", "dax0.0") not in pmem_kernel.writes
    assert_clean(pmem_kernel)


def test_device_removed_while_its_blocks_are_moved(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    """Someone offlines the memory and destroys the region while daxd moves its blocks."""
    indices = device_block_indices(hmem_kernel)

    def listener(event: Uevent) -> None:
        if event.action == "online" and event.sysname == f"memory{indices[2]}":
            hmem_kernel.listener = None
            for i in indices:
                hmem_kernel.sysfs.write(
                    f"devices/system/memory/memory{i}/state", "offline", timeout=5
                )
            hmem_kernel.remove_device("dax0.0")

    hmem_kernel.listener = listener
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert result.outcome in (Outcome.FAILED, Outcome.GONE)
    # Onlining memory34 found it gone, and the device with it: no attempt on the other blocks.
    assert result.error == (f"the device disappeared (memory{indices[2]} disappeared)")
    assert [r.step.block for r in result.results if not r.ok] == [indices[2]]
    assert result.final is None
    assert not hmem_kernel.sysfs.exists("bus/dax/devices/dax0.0")
    assert blocks_gone(hmem_kernel, indices)
    assert hmem_kernel.leaks == []


def blocks_gone(kernel: FakeKernel, indices: list[int]) -> bool:
    return not any(kernel.sysfs.exists(f"devices/system/memory/memory{i}") for i in indices)


def test_stop_mid_conversion_rolls_back(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    before = zones_before_devdax(hmem_kernel)
    start = len(hmem_kernel.writes)
    result = apply(
        hmem_kernel,
        load(tmp_path, DEVDAX),
        should_stop=lambda: len(hmem_kernel.writes) - start >= 5,
    )
    assert result.outcome is Outcome.STOPPED
    assert "stopped" in result.error
    assert driver(hmem_kernel) == "kmem"
    assert {b.index: b.zones for b in blocks(hmem_kernel)} == before
    assert {b.state for b in blocks(hmem_kernel)} == {"online"}
    assert len(rollbacks(result)) == 5
    assert_clean(hmem_kernel)


def test_stop_before_anything_changes_nothing(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n")
    result = apply(pmem_kernel, policy, should_stop=lambda: True)
    assert result.outcome is Outcome.STOPPED
    assert pmem_kernel.writes == []
    assert driver(pmem_kernel) == "device_dax"


@pytest.mark.parametrize("after", [1, 2, 3, 6])
def test_stop_during_a_zone_fix_leaves_no_memory_offline(
    hmem_kernel: FakeKernel, tmp_path: Path, after: int
) -> None:
    """Moving a block is offline + online: a stop in between must not leave it offline."""
    start = len(hmem_kernel.writes)
    result = apply(
        hmem_kernel,
        load(tmp_path, RAM_MOVABLE),
        should_stop=lambda: len(hmem_kernel.writes) - start >= after,
    )
    assert result.outcome is Outcome.STOPPED
    found = blocks(hmem_kernel)
    assert len(found) == 16
    assert {b.state for b in found} == {"online"}, [b for b in found if b.state != "online"]
    assert all(b.zones in ("Normal", "Movable") for b in found)
    assert_clean(hmem_kernel)


# --- changing memmap_on_memory of memory kmem holds: kmem must get it back if that fails -------
CXL_NO_MEMMAP = "rules:\n  - mode: system-ram\n    memmap_on_memory: false\n"


def cxl_with_memmap(base: Path) -> FakeKernel:
    kernel = FakeKernel(base, memmap_on_memory="Y")
    kernel.add_cxl_device()
    for i in device_block_indices(kernel):
        move_block(kernel, i, "online_movable")
    return kernel


def assert_memory_back(kernel: FakeKernel, result: DeviceResult) -> None:
    """kmem re-bound (an undo step, its id taken out again), every block online again (in the
    kernel's default zone)."""
    assert [(r.step.action, r.step.path, r.ok) for r in rollbacks(result)] == [
        (Action.NEW_ID, "bus/dax/drivers/kmem/new_id", True),
        (Action.REMOVE_ID, "bus/dax/drivers/kmem/remove_id", True),
    ]
    assert kernel.dynamic_ids() == {}
    found = blocks(kernel)
    assert len(found) == 32
    assert {b.state for b in found} == {"online"}
    assert result.final is not None
    assert (result.final.mode, result.final.blocks_online) == ("system-ram", 32)


def test_memmap_change_failing_after_kmem_let_go_gives_the_memory_back(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = cxl_with_memmap(fake_kernel_base)
    kernel.fail("bus/dax/devices/dax0.0/memmap_on_memory", errno.EBUSY)
    result = apply(kernel, load(tmp_path, CXL_NO_MEMMAP))
    assert result.outcome is Outcome.FAILED
    assert "memmap_on_memory failed with EBUSY" in result.error
    assert driver(kernel) == "kmem"
    assert memmap(kernel) == "1"
    assert_memory_back(kernel, result)
    again = apply(kernel, load(tmp_path, CXL_NO_MEMMAP))
    assert again.outcome is Outcome.APPLIED, again.error
    assert memmap(kernel) == "0"
    assert_all_movable(kernel, 32)
    assert_clean(kernel)


def test_stop_after_kmem_let_go_for_a_memmap_change_gives_the_memory_back(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = cxl_with_memmap(fake_kernel_base)
    start = len(kernel.writes)
    unbind = ("bus/dax/drivers/kmem/unbind", "dax0.0")
    result = apply(
        kernel, load(tmp_path, CXL_NO_MEMMAP), should_stop=lambda: unbind in kernel.writes[start:]
    )
    assert result.outcome is Outcome.STOPPED
    assert driver(kernel) == "kmem"
    assert_memory_back(kernel, result)
    assert_clean(kernel)


def test_memmap_rollback_onlines_blocks_the_kernel_leaves_offline(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = cxl_with_memmap(fake_kernel_base)
    kernel.configure(auto_online_blocks="offline")
    kernel.fail("bus/dax/devices/dax0.0/memmap_on_memory", errno.EBUSY)
    result = apply(kernel, load(tmp_path, CXL_NO_MEMMAP))
    assert result.outcome is Outcome.FAILED
    assert driver(kernel) == "kmem"
    assert_all_movable(kernel, 32)  # back in the zone they were in
    assert len(rollbacks(result)) == 34  # kmem's new_id and remove_id, 32 blocks
    assert all(r.ok for r in rollbacks(result))


def test_process_that_cannot_be_inspected_blocks_the_unbind(
    pmem_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process whose fd table daxd may not read might map the device: no SIGBUS gamble.
    pmem_kernel.open_device(77, "hidden", "dax0.0")
    real_listdir = os.listdir

    def listdir(path: object) -> list[str]:
        if str(path).endswith("/77/fd"):
            raise PermissionError(13, "denied")
        return real_listdir(path)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(os, "listdir", listdir)
    result = apply(
        pmem_kernel,
        load(tmp_path, "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n"),
    )
    assert result.outcome is Outcome.FAILED
    assert "hidden (pid 77, cannot inspect it)" in result.error
    assert driver(pmem_kernel) == "device_dax"
    assert pmem_kernel.sigbus == []


# --- the executor decides by what a step says it acts on, never by its path --------------------
def run_one(kernel: FakeKernel, step: Step, monkeypatch: pytest.MonkeyPatch) -> DeviceResult:
    """apply_device() whose every plan is this one step."""
    plan = DevicePlan("dax0.0", Verdict.CHANGE, rule="r", steps=(step,))
    monkeypatch.setattr(executor, "plan_device", lambda *args: plan)
    policy = load(kernel.sysfs_root.parent, DEVDAX)
    opts = ApplyOptions(proc_root=kernel.proc_root, offline_timeout=5.0)
    return apply_device(kernel.sysfs, policy, "dax0.0", read_hotplug_settings(kernel.sysfs), opts)


def test_a_kmem_unbind_is_one_whatever_its_path(
    hmem_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = "bus/dax/drivers/device_dax/unbind"  # misleading: the step says kmem
    step = Step(Action.UNBIND, path, "dax0.0", "test", driver="kmem", device="dax0.0")
    result = run_one(hmem_kernel, step, monkeypatch)
    assert result.outcome is Outcome.FAILED
    assert "refusing to unbind kmem while memory" in result.error
    assert hmem_kernel.writes == []
    assert hmem_kernel.leaks == []


def test_a_device_dax_unbind_is_one_whatever_its_path(
    pmem_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    pmem_kernel.open_device(4242, "pmem-app", "dax0.0", mapped=True)
    path = "bus/dax/drivers/kmem/unbind"  # misleading: the step says device_dax
    step = Step(Action.UNBIND, path, "dax0.0", "test", driver="device_dax", device="dax0.0")
    result = run_one(pmem_kernel, step, monkeypatch)
    assert result.outcome is Outcome.FAILED
    assert "/dev/dax0.0 is in use by pmem-app (pid 4242)" in result.error
    assert pmem_kernel.writes == []
    assert pmem_kernel.sigbus == []


def test_a_bind_is_read_back_against_the_driver_the_step_names(
    fake_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kernel.add_pmem_device(bound=None)
    path = "bus/dax/drivers/device_dax/new_id"  # binds device_dax; the step says kmem
    step = Step(Action.NEW_ID, path, "dax0.0", "test", driver="kmem", device="dax0.0")
    result = run_one(fake_kernel, step, monkeypatch)
    assert driver(fake_kernel) == "device_dax"
    assert result.outcome is Outcome.FAILED
    assert result.error == "kmem did not bind (driver: device_dax)"


def test_a_zone_daxd_does_not_know_fails_the_read_back_by_name(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    target = device_block_indices(hmem_kernel)[3]
    zones = f"devices/system/memory/memory{target}/valid_zones"

    def listener(event: Uevent) -> None:
        if event.action == "online" and event.sysname == f"memory{target}":
            hmem_kernel.tree.attr(zones, "Foreign")

    hmem_kernel.listener = listener
    result = apply(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert hmem_kernel.sysfs.read(zones) == "Foreign"
    assert result.outcome is Outcome.FAILED
    assert result.error == f"memory{target} came online in Foreign, not Movable"
    (failure,) = failed(result)
    assert (failure.step.block, failure.step.value) == (target, "online_movable")


def test_the_offline_timeout_default_is_the_one_default() -> None:
    assert ApplyOptions().offline_timeout == DEFAULT_OFFLINE_TIMEOUT

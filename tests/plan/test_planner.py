"""plan_device(): what daxd decides for a device read from the fake kernel under a small policy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daxd.kernel.layout import AUTO_ONLINE_PATH as AUTO
from daxd.kernel.model import BlockState, KernelZone, MemoryBlock, OnlineType
from daxd.kernel.scan import read_state
from daxd.plan.planner import plan_device, zone_fits, zone_walk_order
from daxd.plan.steps import Action, Desired, DevicePlan, Step, Verdict, block_step
from daxd.policy.model import Zone
from tests.fakekernel import FakeKernel
from tests.plan.helpers import (
    DEVDAX,
    PMEM_RAM_MEMMAP,
    RAM_MOVABLE,
    apply,
    device_block_indices,
    load,
    move_block,
    plan_of,
    step_problems,
    walk_order,
)

PMEM_RAM = """\
rules:
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    allow_pmem_data_loss: true
"""


def actions(plan: DevicePlan) -> list[tuple[Action, str, str]]:
    return [(s.action, s.path, s.value) for s in plan.steps]


def targets(plan: DevicePlan) -> list[tuple[Action, str | None, str | None, int | None]]:
    """What each step acts on: (action, driver, device, block)."""
    return [(s.action, s.driver, s.device, s.block) for s in plan.steps]


def assert_nothing_to_do(plan: DevicePlan, verdict: Verdict) -> None:
    assert plan.verdict is verdict
    assert plan.steps == ()
    assert not plan.continues


# --- no rule, ignore, seeds, foreign drivers ------------------------------------------------------
def test_a_device_no_rule_matches_is_unmanaged(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    policy = load(tmp_path, "rules:\n  - match: {provider: cxl}\n    mode: system-ram\n")
    plan = plan_of(pmem_kernel, policy)
    assert_nothing_to_do(plan, Verdict.UNMANAGED)
    assert plan.rule is None
    assert plan.desired is None
    assert plan.reason == "no rule matches"


def test_an_empty_policy_manages_nothing(mixed_kernel: FakeKernel, tmp_path: Path) -> None:
    policy = load(tmp_path, "# nothing yet\n")
    for name in ("dax0.0", "dax1.0", "dax2.0", "dax2.1"):
        assert_nothing_to_do(plan_of(mixed_kernel, policy, name), Verdict.UNMANAGED)


def test_ignore_wins_over_later_rules(mixed_kernel: FakeKernel, tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        'rules:\n  - name: hands-off\n    match: {device: "dax1.*"}\n    mode: ignore\n'
        "  - name: everything\n    mode: devdax\n",
    )
    plan = plan_of(mixed_kernel, policy, "dax1.0")  # bound to kmem: devdax would mean work
    assert_nothing_to_do(plan, Verdict.IGNORED)
    assert plan.rule == "hands-off"
    assert plan.rule_location == f"{tmp_path / 'policy.yaml'}:2"
    assert plan_of(mixed_kernel, policy, "dax2.0").verdict is Verdict.CHANGE  # the next rule


@pytest.mark.parametrize("mode", ["devdax", "system-ram"])
def test_a_region_seed_is_never_touched(
    mixed_kernel: FakeKernel, tmp_path: Path, mode: str
) -> None:
    plan = plan_of(mixed_kernel, load(tmp_path, f"rules:\n  - mode: {mode}\n"), "dax2.1")
    assert_nothing_to_do(plan, Verdict.UNMANAGED)
    assert "seed" in plan.reason
    assert plan.rule == "rule 1"


def test_a_device_bound_to_another_driver_is_refused(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    dev = fake_kernel.add_pmem_device(bound=None)
    fake_kernel.tree.dir("bus/dax/drivers/vfio_dax")
    fake_kernel.tree.link(f"{dev.devpath}/driver", "bus/dax/drivers/vfio_dax")
    for text in (DEVDAX, PMEM_RAM):
        plan = plan_of(fake_kernel, load(tmp_path, text))
        assert_nothing_to_do(plan, Verdict.REFUSED)
        assert "'vfio_dax'" in plan.reason
        assert "does not manage" in plan.reason


# --- devdax -> system-ram ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule",
    [
        "rules:\n  - mode: system-ram\n",
        "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: false\n",
        "rules:\n  - mode: system-ram\n    zone: normal\n    memmap_on_memory: false\n",
    ],
)
def test_pmem_without_consent_is_refused(
    pmem_kernel: FakeKernel, tmp_path: Path, rule: str
) -> None:
    plan = plan_of(pmem_kernel, load(tmp_path, rule))
    assert_nothing_to_do(plan, Verdict.REFUSED)
    assert "persistent memory" in plan.reason
    assert "allow_pmem_data_loss: true" in plan.reason
    assert plan.desired is not None
    assert plan.desired.mode == "system-ram"


def test_consent_is_needed_for_pmem_only(mixed_kernel: FakeKernel, tmp_path: Path) -> None:
    policy = load(tmp_path, "rules:\n  - mode: system-ram\n    zone: normal\n")
    # hmem and cxl are volatile: the same rule is fine for them (and they are in sync already).
    assert plan_of(mixed_kernel, policy, "dax1.0").verdict is Verdict.IN_SYNC
    assert plan_of(mixed_kernel, policy, "dax2.0").verdict is Verdict.IN_SYNC
    assert plan_of(mixed_kernel, policy, "dax0.0").verdict is Verdict.REFUSED


def test_pmem_with_consent_goes_to_kmem(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = plan_of(pmem_kernel, load(tmp_path, PMEM_RAM))
    assert plan.verdict is Verdict.CHANGE
    # The kernel would online the blocks itself (into Normal, in address order): daxd binds
    # with auto-onlining off and onlines them itself.
    assert actions(plan) == [
        (Action.UNBIND, "bus/dax/drivers/device_dax/unbind", "dax0.0"),
        (Action.REMOVE_ID, "bus/dax/drivers/device_dax/remove_id", "dax0.0"),
        (Action.SET_AUTO_ONLINE, AUTO, "offline"),
        (Action.NEW_ID, "bus/dax/drivers/kmem/new_id", "dax0.0"),
        (Action.RESTORE_AUTO_ONLINE, AUTO, "online"),
        # bound: the id is taken out again, so that the kernel's own matching is as it was
        (Action.REMOVE_ID, "bus/dax/drivers/kmem/remove_id", "dax0.0"),
    ]
    assert all(s.reason for s in plan.steps)
    assert "in use" in plan.steps[0].reason
    assert plan.continues  # the blocks appear only once kmem binds
    assert plan.desired == Desired(mode="system-ram", zone="movable", memmap_on_memory=None)
    assert plan.notes == ("then: online 7 blocks memory33..memory39 as movable",)


@pytest.mark.parametrize("auto", ["online", "online_kernel", "online_movable", "offline"])
@pytest.mark.parametrize("rule", ["zone: movable", "zone: normal", "zone: auto", "online: false"])
def test_auto_online_is_off_for_the_bind_unless_it_is_off_already(
    fake_kernel_base: Path, tmp_path: Path, auto: str, rule: str
) -> None:
    kernel = FakeKernel(fake_kernel_base, auto_online_blocks=auto)
    kernel.add_pmem_device()
    text = f"rules:\n  - mode: system-ram\n    {rule}\n    allow_pmem_data_loss: true\n"
    steps = plan_of(kernel, load(tmp_path, text)).steps
    switched = [s for s in steps if s.path == AUTO]
    if auto == "offline":  # the operator's choice, and what daxd binds with anyway
        assert switched == []
        return
    set_, restore = switched
    assert (set_.action, set_.value) == (Action.SET_AUTO_ONLINE, "offline")
    assert (restore.action, restore.value) == (Action.RESTORE_AUTO_ONLINE, auto)
    # exactly around the bind
    bind = [i for i, s in enumerate(steps) if s.path == "bus/dax/drivers/kmem/new_id"]
    assert [steps.index(set_) + 1, steps.index(restore) - 1] == bind * 2


def test_planning_writes_nothing(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan_of(pmem_kernel, load(tmp_path, PMEM_RAM))
    assert pmem_kernel.writes == []


def test_an_unbound_device_needs_no_unbind(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    fake_kernel.add_pmem_device(bound=None)
    plan = plan_of(fake_kernel, load(tmp_path, PMEM_RAM))
    assert [s.action for s in plan.steps] == [
        Action.REMOVE_ID,
        Action.SET_AUTO_ONLINE,
        Action.NEW_ID,
        Action.RESTORE_AUTO_ONLINE,
        Action.REMOVE_ID,
    ]


def test_memmap_on_memory_is_set_before_kmem_binds(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_pmem_device()
    plan = plan_of(kernel, load(tmp_path, PMEM_RAM_MEMMAP))
    assert plan.verdict is Verdict.CHANGE
    assert actions(plan) == [
        (Action.UNBIND, "bus/dax/drivers/device_dax/unbind", "dax0.0"),
        (Action.REMOVE_ID, "bus/dax/drivers/device_dax/remove_id", "dax0.0"),
        (Action.SET_MEMMAP, "bus/dax/devices/dax0.0/memmap_on_memory", "1"),
        (Action.SET_AUTO_ONLINE, AUTO, "offline"),
        (Action.NEW_ID, "bus/dax/drivers/kmem/new_id", "dax0.0"),
        (Action.RESTORE_AUTO_ONLINE, AUTO, "online"),
        (Action.REMOVE_ID, "bus/dax/drivers/kmem/remove_id", "dax0.0"),
    ]
    assert plan.desired is not None
    assert plan.desired.memmap_on_memory is True


def test_memmap_already_as_wanted_needs_no_step(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    fake_kernel.add_pmem_device()  # memmap_on_memory reads 0
    plan = plan_of(fake_kernel, load(tmp_path, PMEM_RAM + "    memmap_on_memory: false\n"))
    assert Action.SET_MEMMAP not in [s.action for s in plan.steps]
    assert plan.verdict is Verdict.CHANGE


def test_memmap_before_linux_6_8_is_refused_but_not_the_rest(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_pmem_device(memmap_on_memory=None)  # no per-device attribute
    plan = plan_of(kernel, load(tmp_path, PMEM_RAM_MEMMAP))
    assert plan.verdict is Verdict.CHANGE  # to kmem all the same, without a memmap step
    assert Action.SET_MEMMAP not in [s.action for s in plan.steps]
    assert "memmap_on_memory: true cannot be met" in plan.reason
    assert "Linux 6.8" in plan.reason
    # Without the key, the kernel's default is fine on any kernel.
    without = plan_of(kernel, load(tmp_path, PMEM_RAM))
    assert (without.verdict, without.reason) == (Verdict.CHANGE, "")


def test_memmap_true_is_refused_when_the_kernel_booted_without_it(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    # pmem_kernel: memory_hotplug.memmap_on_memory reads N; writing 1 would be EOPNOTSUPP
    plan = plan_of(pmem_kernel, load(tmp_path, PMEM_RAM_MEMMAP))
    assert plan.verdict is Verdict.CHANGE
    assert Action.SET_MEMMAP not in [s.action for s in plan.steps]
    assert plan.reason == (
        "memmap_on_memory: true cannot be met: the kernel was booted without "
        "memory_hotplug.memmap_on_memory=1; the rest of the rule is applied without it (the "
        "memmap stays in RAM)"
    )


def test_pmem_consent_is_checked_before_memmap(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    fake_kernel.add_pmem_device(memmap_on_memory=None)
    text = "rules:\n  - mode: system-ram\n    memmap_on_memory: true\n"
    plan = plan_of(fake_kernel, load(tmp_path, text))
    assert_nothing_to_do(plan, Verdict.REFUSED)
    assert "allow_pmem_data_loss" in plan.reason


# --- kmem: zones, online, memmap ----------------------------------------------------------------
def test_blocks_in_normal_are_moved_one_by_one(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = plan_of(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    indices = device_block_indices(hmem_kernel)
    assert len(indices) == 16
    assert plan.verdict is Verdict.CHANGE
    assert not plan.continues
    expected = []
    for i in walk_order(indices):
        path = f"devices/system/memory/memory{i}/state"
        expected += [
            (Action.OFFLINE_BLOCK, path, "offline"),
            (Action.ONLINE_BLOCK, path, "online_movable"),
        ]
    assert actions(plan) == expected
    assert [s.block for s in plan.steps] == [i for i in walk_order(indices) for _ in (0, 1)]
    assert plan.steps[0].reason == "online in normal, the rule wants movable"


def test_only_blocks_in_the_wrong_zone_are_moved(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    indices = device_block_indices(hmem_kernel)
    for i in indices[:-2]:
        move_block(hmem_kernel, i, "online_movable")
    plan = plan_of(hmem_kernel, load(tmp_path, RAM_MOVABLE))
    assert sorted({s.block for s in plan.steps if s.block is not None}) == indices[-2:]


@pytest.mark.parametrize("zone", ["auto", "normal"])
def test_blocks_auto_onlined_in_normal_fit_zone(
    hmem_kernel: FakeKernel, tmp_path: Path, zone: str
) -> None:
    text = f"rules:\n  - mode: system-ram\n    zone: {zone}\n"
    plan = plan_of(hmem_kernel, load(tmp_path, text))
    assert_nothing_to_do(plan, Verdict.IN_SYNC)
    assert plan.reason == "system-ram as the rule wants"


def test_zone_normal_moves_movable_blocks(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    first = device_block_indices(hmem_kernel)[0]
    move_block(hmem_kernel, first, "online_movable")
    plan = plan_of(hmem_kernel, load(tmp_path, "rules:\n  - mode: system-ram\n    zone: normal\n"))
    path = f"devices/system/memory/memory{first}/state"
    assert actions(plan) == [
        (Action.OFFLINE_BLOCK, path, "offline"),
        (Action.ONLINE_BLOCK, path, "online_kernel"),
    ]


def test_online_false_offlines_every_block(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    text = "rules:\n  - mode: system-ram\n    online: false\n"
    plan = plan_of(hmem_kernel, load(tmp_path, text))
    indices = device_block_indices(hmem_kernel)
    assert plan.verdict is Verdict.CHANGE
    assert [(s.action, s.block, s.value) for s in plan.steps] == [
        (Action.OFFLINE_BLOCK, i, "offline") for i in walk_order(indices)
    ]
    assert {s.reason for s in plan.steps} == {"the rule says online: false"}


def test_offline_blocks_are_onlined_in_the_rule_zone(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(fake_kernel_base, auto_online_blocks="offline")
    kernel.add_hmem_device()
    plan = plan_of(kernel, load(tmp_path, RAM_MOVABLE))
    assert [(s.action, s.value) for s in plan.steps] == [
        (Action.ONLINE_BLOCK, "online_movable")
    ] * 16


def test_memmap_change_on_kmem_rebinds(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_cxl_device()  # cxl.c sets memmap_on_memory; kmem took it at boot
    text = "rules:\n  - mode: system-ram\n    memmap_on_memory: false\n"
    plan = plan_of(kernel, load(tmp_path, text))
    kinds = [s.action for s in plan.steps]
    n = len(device_block_indices(kernel))
    # zone: movable by default; the kernel's auto_online_blocks=online would put them in Normal
    assert kinds == [Action.OFFLINE_BLOCK] * n + [
        Action.UNBIND,
        Action.SET_MEMMAP,
        Action.SET_AUTO_ONLINE,
        Action.NEW_ID,
        Action.RESTORE_AUTO_ONLINE,
        Action.REMOVE_ID,
    ]
    assert plan.steps[n].path == "bus/dax/drivers/kmem/unbind"
    assert plan.steps[n + 1].value == "0"
    assert plan.continues


def test_memmap_change_on_unremovable_kmem_is_only_noted(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_cxl_device()
    kernel.set_removable(device_block_indices(kernel)[3], False)
    text = "rules:\n  - mode: system-ram\n    zone: normal\n    memmap_on_memory: false\n"
    plan = plan_of(kernel, load(tmp_path, text))
    assert_nothing_to_do(plan, Verdict.IN_SYNC)
    assert any("memmap_on_memory stays True" in n and "removable=0" in n for n in plan.notes)


@pytest.mark.parametrize(
    "text",
    [
        RAM_MOVABLE,
        "rules:\n  - mode: system-ram\n    zone: normal\n",
        "rules:\n  - mode: system-ram\n    online: false\n",
    ],
)
def test_without_hotremove_blocks_cannot_be_offlined_so_no_offline_is_planned(
    fake_kernel_base: Path, tmp_path: Path, text: str
) -> None:
    """No CONFIG_MEMORY_HOTREMOVE: valid_zones is absent and every offline fails with EINVAL."""
    kernel = FakeKernel(fake_kernel_base, hotremove=False)
    kernel.add_hmem_device()
    plan = plan_of(kernel, load(tmp_path, text))
    assert_nothing_to_do(plan, Verdict.REFUSED)
    assert "CONFIG_MEMORY_HOTREMOVE" in plan.reason


def test_without_hotremove_zone_auto_is_in_sync(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, hotremove=False)
    kernel.add_hmem_device()
    plan = plan_of(kernel, load(tmp_path, "rules:\n  - mode: system-ram\n    zone: auto\n"))
    assert_nothing_to_do(plan, Verdict.IN_SYNC)


# --- system-ram -> devdax ---------------------------------------------------------------------
def test_kmem_to_devdax_offlines_everything_first(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = plan_of(hmem_kernel, load(tmp_path, DEVDAX))
    indices = device_block_indices(hmem_kernel)
    assert plan.verdict is Verdict.CHANGE
    assert plan.desired == Desired(mode="devdax")
    offline = [
        (Action.OFFLINE_BLOCK, f"devices/system/memory/memory{i}/state", "offline")
        for i in walk_order(indices)
    ]
    assert actions(plan) == [
        *offline,
        (Action.UNBIND, "bus/dax/drivers/kmem/unbind", "dax0.0"),
        (Action.REMOVE_ID, "bus/dax/drivers/kmem/remove_id", "dax0.0"),
        (Action.NEW_ID, "bus/dax/drivers/device_dax/new_id", "dax0.0"),
        (Action.REMOVE_ID, "bus/dax/drivers/device_dax/remove_id", "dax0.0"),
    ]


def test_offline_blocks_need_no_offline_step(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    indices = device_block_indices(hmem_kernel)
    for i in indices[:4]:
        hmem_kernel.sysfs.write(f"devices/system/memory/memory{i}/state", "offline", timeout=5)
    plan = plan_of(hmem_kernel, load(tmp_path, DEVDAX))
    offlined = [s.block for s in plan.steps if s.action is Action.OFFLINE_BLOCK]
    assert offlined == [i for i in walk_order(indices) if i in indices[4:]]


def test_devdax_already_is_in_sync(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = plan_of(pmem_kernel, load(tmp_path, DEVDAX))
    assert_nothing_to_do(plan, Verdict.IN_SYNC)
    assert plan.rule == "keep-devdax"


def test_unbound_to_devdax(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    fake_kernel.add_hmem_device(bound=None)
    plan = plan_of(fake_kernel, load(tmp_path, DEVDAX))
    assert [s.action for s in plan.steps] == [Action.REMOVE_ID, Action.NEW_ID, Action.REMOVE_ID]
    assert plan.steps[1].path == "bus/dax/drivers/device_dax/new_id"
    assert plan.steps[2].path == "bus/dax/drivers/device_dax/remove_id"


def test_devdax_is_refused_when_a_block_is_not_removable(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    pinned = device_block_indices(hmem_kernel)[5]
    hmem_kernel.set_removable(pinned, False)
    plan = plan_of(hmem_kernel, load(tmp_path, DEVDAX))
    assert_nothing_to_do(plan, Verdict.REFUSED)
    assert plan.reason == f"cannot go back to devdax: memory{pinned} not removable (removable=0)"


def test_devdax_is_refused_without_hotremove(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, hotremove=False)
    kernel.add_hmem_device()
    plan = plan_of(kernel, load(tmp_path, DEVDAX))
    assert_nothing_to_do(plan, Verdict.REFUSED)
    assert "CONFIG_MEMORY_HOTREMOVE is off" in plan.reason


# --- idempotence -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("builder", "text"),
    [
        ("pmem", PMEM_RAM_MEMMAP),
        ("pmem", PMEM_RAM + "    zone: normal\n"),
        ("pmem", PMEM_RAM + "    online: false\n"),
        ("hmem", RAM_MOVABLE),
        ("hmem", "rules:\n  - mode: system-ram\n    online: false\n"),
        ("hmem", DEVDAX),
        ("cxl", "rules:\n  - mode: system-ram\n    memmap_on_memory: false\n"),
    ],
)
def test_after_apply_the_plan_is_in_sync(
    fake_kernel_base: Path, tmp_path: Path, builder: str, text: str
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    if builder == "pmem":
        kernel.add_pmem_device()
    elif builder == "hmem":
        kernel.add_hmem_device()
    else:
        kernel.add_cxl_device()
    policy = load(tmp_path, text)
    assert plan_of(kernel, policy).verdict is Verdict.CHANGE
    result = apply(kernel, policy)
    assert result.outcome == "applied", result.error
    plan = plan_of(kernel, policy)
    assert_nothing_to_do(plan, Verdict.IN_SYNC)
    writes = len(kernel.writes)
    assert apply(kernel, policy).outcome == "in-sync"
    assert len(kernel.writes) == writes


@pytest.mark.parametrize(
    ("indices", "order"),
    [
        ([], []),
        ([7], [7]),
        ([8, 7], [7, 8]),
        ([10, 11, 12], [11, 12, 10]),
        ([15, 10, 11, 12, 13, 14], [11, 15, 14, 13, 12, 10]),
    ],
)
def test_blocks_go_in_an_order_that_keeps_a_hole_near_the_zone_start(
    indices: list[int], order: list[int]
) -> None:
    """set_zone_contiguous() walks the zone from its start to the first hole after every block:
    the second block first and the first block last keep that walk one block long."""
    blocks = [MemoryBlock(i, BlockState.OFFLINE, (), i, True, 1) for i in indices]
    assert [b.index for b in zone_walk_order(blocks)] == order


# --- what each step acts on --------------------------------------------------------------------
# plan_of() checks every step of every plan above against its path (helpers.step_problems).
def test_the_step_check_catches_a_step_that_does_not_say_what_it_acts_on() -> None:
    unbind = "bus/dax/drivers/kmem/unbind"
    good = Step(Action.UNBIND, unbind, "dax0.0", "r", driver="kmem", device="dax0.0")
    assert step_problems(good, "dax0.0") == []
    assert step_problems(replace(good, driver="device_dax"), "dax0.0") != []
    assert step_problems(replace(good, device="dax1.0"), "dax0.0") != []
    assert step_problems(good, "dax1.0") != []
    assert step_problems(replace(block_step(7, OnlineType.OFFLINE, "r"), block=8), "dax0.0") != []


def test_a_conversion_names_its_drivers_and_device(
    mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    plan = plan_of(mixed_kernel, load(tmp_path, DEVDAX), "dax1.0")
    walk = walk_order(device_block_indices(mixed_kernel, "dax1.0"))
    assert targets(plan) == [
        *[(Action.OFFLINE_BLOCK, None, None, i) for i in walk],
        (Action.UNBIND, "kmem", "dax1.0", None),
        (Action.REMOVE_ID, "kmem", "dax1.0", None),
        (Action.NEW_ID, "device_dax", "dax1.0", None),
        (Action.REMOVE_ID, "device_dax", "dax1.0", None),
    ]


def test_pmem_to_ram_names_its_drivers_and_device(fake_kernel_base: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_pmem_device()
    assert targets(plan_of(kernel, load(tmp_path, PMEM_RAM_MEMMAP))) == [
        (Action.UNBIND, "device_dax", "dax0.0", None),
        (Action.REMOVE_ID, "device_dax", "dax0.0", None),
        (Action.SET_MEMMAP, None, "dax0.0", None),
        (Action.SET_AUTO_ONLINE, None, None, None),  # kernel-wide
        (Action.NEW_ID, "kmem", "dax0.0", None),
        (Action.RESTORE_AUTO_ONLINE, None, None, None),
        (Action.REMOVE_ID, "kmem", "dax0.0", None),
    ]


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        (Action.UNBIND, {"device": "dax0.0"}),
        (Action.NEW_ID, {"driver": "kmem"}),
        (Action.ONLINE_BLOCK, {}),
        (Action.SET_MEMMAP, {"driver": "kmem"}),
    ],
)
def test_a_step_cannot_leave_out_what_it_acts_on(action: Action, fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="needs"):
        Step(action, "x", "y", "why", **fields)  # type: ignore[arg-type]


def test_a_step_value_is_plain_text() -> None:
    step = block_step(3, OnlineType.ONLINE_MOVABLE, "why")
    assert type(step.value) is str
    assert step.describe() == "write 'online_movable' to devices/system/memory/memory3/state  # why"


# --- zones as typed values ---------------------------------------------------------------------
def _online(*zones: str) -> MemoryBlock:
    return MemoryBlock(1, BlockState.ONLINE, tuple(KernelZone(z) for z in zones), 1, True, 0)


@pytest.mark.parametrize(
    ("zones", "movable", "normal"),
    [
        (("Movable",), True, False),
        (("Normal",), False, True),
        (("DMA32",), False, True),
        (("none",), False, False),  # spans zones (memory.c prints "none")
        (("Foreign",), False, True),  # a kernel zone daxd does not know: not Movable
        ((), False, False),  # no valid_zones (no CONFIG_MEMORY_HOTREMOVE): zone unknown
    ],
)
def test_zone_fits(zones: tuple[str, ...], movable: bool, normal: bool) -> None:
    block = _online(*zones)
    assert (zone_fits(block, Zone.MOVABLE), zone_fits(block, Zone.NORMAL)) == (movable, normal)
    assert zone_fits(block, Zone.AUTO)


def _plan_with(kernel: FakeKernel, tmp_path: Path, text: str, zone: str) -> DevicePlan:
    """The plan for dax0.0 when its first block reads ``zone`` in valid_zones."""
    state = read_state(kernel.sysfs)
    device = state.devices["dax0.0"]
    first, *rest = state.blocks_of("dax0.0")
    blocks = (replace(first, valid_zones=(KernelZone(zone),)), *rest)
    return plan_device(device, blocks, state.hotplug, load(tmp_path, text).match(device))


def test_a_block_spanning_zones_keeps_kmem(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = _plan_with(hmem_kernel, tmp_path, DEVDAX, "none")
    assert_nothing_to_do(plan, Verdict.REFUSED)
    first = device_block_indices(hmem_kernel)[0]
    assert plan.reason == (
        f"cannot go back to devdax: memory{first} span several zones and cannot be offlined"
    )


def test_an_unknown_zone_is_named_in_the_reason(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    plan = _plan_with(hmem_kernel, tmp_path, RAM_MOVABLE, "Foreign")
    first = device_block_indices(hmem_kernel)[0]
    moves = [s for s in plan.steps if s.block == first]
    assert [s.reason for s in moves] == ["online in foreign, the rule wants movable"] * 2

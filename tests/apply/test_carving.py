"""Carving a dynamic dax region by a layout, against the fake kernel: the devices sysfs shows
afterwards, what the plan says, and what a failure leaves (the region as it was)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from daxd.apply.carving import apply_layouts, layout_rules, with_device_rules
from daxd.apply.executor import ApplyOptions, Outcome, apply_device
from daxd.kernel.scan import read_state
from daxd.plan.carving import CarveAction, CarveVerdict, plan_layouts
from daxd.policy.layouts import Layout, LayoutDevice
from daxd.policy.model import Policy, Rule
from daxd.policy.selectors import Selector
from tests.fakekernel import FakeKernel, GiB
from tests.plan.helpers import blocks, driver

HMEM_START = 4 * GiB  # 1 GiB-aligned, as the lab's soft-reserved range


def layout(*devices: dict[str, object], match: dict[str, object] | None = None) -> Layout:
    entries = tuple(LayoutDevice.model_validate(d) for d in devices)
    return Layout(
        name="split",
        location="policy.yaml:2",
        selector=Selector.model_validate({"provider": "hmem"} if match is None else match),
        devices=entries,
        device_locations=tuple(f"policy.yaml:{4 + i}" for i in range(len(entries))),
    )


SPLIT = layout(
    {"size": "1G", "align": "1G", "mode": "devdax"},
    {"size": "rest", "mode": "system-ram", "zone": "movable"},
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path, auto_online_blocks="online")
    k.add_hmem_device(size=4 * GiB, start=HMEM_START)
    return k


def sizes(kernel: FakeKernel) -> dict[str, int]:
    return {n: d.size for n, d in read_state(kernel.sysfs).devices.items()}


def opts(kernel: FakeKernel) -> ApplyOptions:
    return ApplyOptions(proc_root=kernel.proc_root, offline_timeout=5.0)


def carve_and_bind(kernel: FakeKernel, policy: Policy) -> list[object]:
    """What the daemon's pass does: the layouts, then every device by its rule."""
    state = read_state(kernel.sysfs)
    outcomes = apply_layouts(kernel.sysfs, policy, state, opts(kernel))
    after = with_device_rules(policy, layout_rules(outcomes))
    state = read_state(kernel.sysfs)
    for name in state.devices:
        apply_device(kernel.sysfs, after, name, state.hotplug, opts(kernel))
    return list(outcomes)


def test_whole_hmem_region_is_split_into_devdax_and_movable_ram(kernel: FakeKernel) -> None:
    policy = Policy(rules=(), layouts=(SPLIT,))
    [planned] = plan_layouts(policy, read_state(kernel.sysfs))
    assert planned.plan.verdict is CarveVerdict.CHANGE
    actions = [s.action for s in planned.plan.steps]
    assert actions == [
        CarveAction.RELEASE,  # kmem had it whole, online
        CarveAction.SET_SIZE,  # dax0.0 to 0
        CarveAction.SET_ALIGN,
        CarveAction.SET_SIZE,  # dax0.0: 1G
        CarveAction.CREATE,
        CarveAction.SET_SIZE,  # the new device: the rest
    ]
    carve_and_bind(kernel, policy)
    assert sizes(kernel) == {"dax0.0": 1 * GiB, "dax0.1": 3 * GiB}
    assert driver(kernel, "dax0.0") == "device_dax"
    assert read_state(kernel.sysfs).devices["dax0.0"].align == 1 * GiB
    assert driver(kernel, "dax0.1") == "kmem"
    ram = blocks(kernel, "dax0.1")
    assert len(ram) == 24
    assert all(b.state == "online" and b.zones == "Movable" for b in ram), ram
    assert kernel.leaks == []
    assert kernel.dynamic_ids() == {}

    # laid out: no write the second time
    again = plan_layouts(policy, read_state(kernel.sysfs))
    assert again[0].plan.verdict is CarveVerdict.IN_SYNC
    assert again[0].plan.assigned == {"dax0.0": 0, "dax0.1": 1}
    kernel.writes.clear()
    carve_and_bind(kernel, policy)
    assert kernel.writes == []


def test_a_changed_layout_keeps_the_devices_that_still_match(kernel: FakeKernel) -> None:
    carve_and_bind(kernel, Policy(rules=(), layouts=(SPLIT,)))
    three = layout(
        {"size": "1G", "align": "1G", "mode": "devdax"},
        {"size": "1G", "align": "1G", "mode": "devdax"},
        {"size": "rest", "mode": "system-ram"},
    )
    policy = Policy(rules=(), layouts=(three,))
    [planned] = plan_layouts(policy, read_state(kernel.sysfs))
    assert all(s.device != "dax0.0" for s in planned.plan.steps)  # kept as it is
    carve_and_bind(kernel, policy)
    assert sizes(kernel) == {"dax0.0": 1 * GiB, "dax0.1": 1 * GiB, "dax0.2": 2 * GiB}
    assert [driver(kernel, n) for n in ("dax0.0", "dax0.1", "dax0.2")] == [
        "device_dax",
        "device_dax",
        "kmem",
    ]
    assert kernel.leaks == []


def test_a_mapped_device_blocks_the_change_and_says_who(kernel: FakeKernel) -> None:
    carve_and_bind(kernel, Policy(rules=(), layouts=(SPLIT,)))
    kernel.open_device(4242, "qemu-system-x86", "dax0.0", mapped=True)
    whole = layout({"size": "rest", "mode": "system-ram"})
    policy = Policy(rules=(), layouts=(whole,))
    kernel.writes.clear()
    [outcome] = carve_and_bind(kernel, policy)
    plan = outcome.planned.plan  # type: ignore[attr-defined]
    assert plan.verdict is CarveVerdict.REFUSED
    assert "/dev/dax0.0 is in use (pid 4242 qemu-system-x86" in plan.reason
    assert kernel.writes == []
    assert sizes(kernel) == {"dax0.0": 1 * GiB, "dax0.1": 3 * GiB}
    assert kernel.sigbus == []


def test_a_failed_write_puts_the_region_back_with_its_memory_online(kernel: FakeKernel) -> None:
    before = blocks(kernel, "dax0.0")
    kernel.fail("bus/dax/devices/dax0.1/size", errno.ENOSPC)
    [outcome] = carve_and_bind(kernel, Policy(rules=(), layouts=(SPLIT,)))
    result = outcome.result  # type: ignore[attr-defined]
    assert result.outcome is Outcome.FAILED
    assert "No space left" in result.error or "ENOSPC" in result.error
    assert sizes(kernel) == {"dax0.0": 4 * GiB}  # the created device deleted, dax0.0 whole
    assert driver(kernel, "dax0.0") == "kmem"
    after = blocks(kernel, "dax0.0")
    assert len(after) == len(before)
    assert all(b.state == "online" for b in after), after
    assert kernel.leaks == []


def test_what_the_region_cannot_take_is_refused_with_the_layout_located(
    kernel: FakeKernel,
) -> None:
    too_big = layout({"size": "8G", "mode": "devdax"})
    rule = Rule(name="all-ram", location="policy.yaml:20", mode="system-ram")  # type: ignore[arg-type]
    cases = [
        (Policy(rules=(), layouts=(too_big,)), "needs 8G, more than the region's 4G"),
        (Policy(rules=(rule,), layouts=(SPLIT,)), "rule 'all-ram' (policy.yaml:20) also matches"),
        (Policy(rules=(), layouts=(SPLIT, too_big)), "also matches region 0: one per region"),
    ]
    for policy, words in cases:
        [planned] = plan_layouts(policy, read_state(kernel.sysfs))
        assert planned.plan.verdict is CarveVerdict.REFUSED
        assert words in planned.plan.reason
    unaligned = layout(
        {"size": "512M", "mode": "system-ram"}, {"size": "1G", "align": "1G", "mode": "devdax"}
    )
    [planned] = plan_layouts(Policy(rules=(), layouts=(unaligned,)), read_state(kernel.sysfs))
    assert "device 2 (policy.yaml:5) would start at 0x120000000" in planned.plan.reason


def test_a_static_pmem_region_takes_no_layout(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path)
    kernel.add_pmem_device(size=2 * GiB)
    policy = Policy(rules=(), layouts=(layout({"size": "rest", "mode": "devdax"}, match={}),))
    [planned] = plan_layouts(policy, read_state(kernel.sysfs))
    assert planned.plan.verdict is CarveVerdict.REFUSED
    assert "is static (pmem)" in planned.plan.reason


def test_memory_that_cannot_go_offline_is_not_carved(kernel: FakeKernel) -> None:
    pinned = blocks(kernel, "dax0.0")[3].index
    kernel.set_removable(pinned, False)
    [planned] = plan_layouts(Policy(rules=(), layouts=(SPLIT,)), read_state(kernel.sysfs))
    assert planned.plan.verdict is CarveVerdict.REFUSED
    assert f"dax0.0: memory{pinned} not removable (removable=0)" in planned.plan.reason

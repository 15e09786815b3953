"""observed device + matching rule → desired state → ordered steps, each with its reason.

Pure: the same inputs give the same plan, and a device that already matches gets no steps.  A
plan only ever covers what can be done from the state it saw; when binding kmem makes memory
blocks appear, ``continues`` is set and the executor plans again from the new state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from daxd.kernel.blocks import block_intervals
from daxd.kernel.model import (
    DRIVER_DEVDAX,
    DRIVER_KMEM,
    BlockState,
    DaxDevice,
    HotplugSettings,
    KernelState,
    KernelZone,
    MemoryBlock,
    OnlineType,
    Provider,
    memmap_in_effect,
)
from daxd.kernel.view import zone_word
from daxd.plan.steps import (
    Action,
    Desired,
    DevicePlan,
    Step,
    Verdict,
    auto_online_step,
    block_step,
    driver_step,
    memmap_step,
)
from daxd.policy.model import Mode, Policy, Rule, Zone

# What to write to memoryN/state for each zone the policy can ask for.
ONLINE_VALUE = {
    Zone.MOVABLE: OnlineType.ONLINE_MOVABLE,
    Zone.NORMAL: OnlineType.ONLINE_KERNEL,
    Zone.AUTO: OnlineType.ONLINE,
}


def zone_fits(block: MemoryBlock, zone: Zone) -> bool:
    """Whether an online block sits in the zone the policy wants."""
    if zone is Zone.AUTO:
        return True
    if zone is Zone.MOVABLE:
        return block.zone is KernelZone.MOVABLE
    # normal: a kernel zone; not a block spanning zones, nor one whose zone cannot be told
    return block.zone not in (KernelZone.MOVABLE, KernelZone.NONE, None)


def expected_span(device: DaxDevice, block_size: int | None) -> str:
    """block_span() of the blocks kmem will add (whole blocks inside each mapping range),
    counted rather than listed: a range as sysfs shows it may span billions of blocks."""
    intervals = block_intervals(device.ranges, block_size) if block_size else []
    count = sum(last - first + 1 for first, last in intervals)
    if count == 0:
        return block_span([])
    if count == 1:
        return block_span([intervals[0][0]])
    return f"{count} blocks memory{intervals[0][0]}..memory{intervals[-1][1]}"


def block_span(indices: list[int]) -> str:
    if not indices:
        return "no memory blocks"
    if len(indices) == 1:
        return f"memory{indices[0]}"
    return f"{len(indices)} blocks memory{indices[0]}..memory{indices[-1]}"


def plan_device(
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    hotplug: HotplugSettings,
    rule: Rule | None,
) -> DevicePlan:
    if rule is None:
        return DevicePlan(device.name, Verdict.UNMANAGED, reason="no rule matches")
    base = DevicePlan(device.name, Verdict.IN_SYNC, rule=rule.name, rule_location=rule.location)
    if rule.mode is Mode.IGNORE:
        return _with(base, verdict=Verdict.IGNORED, reason="the rule says ignore")
    if device.is_seed:
        return _with(base, verdict=Verdict.UNMANAGED, reason="size 0: a region seed, no memory")
    if device.driver not in (None, DRIVER_DEVDAX, DRIVER_KMEM):
        return _with(
            base,
            verdict=Verdict.REFUSED,
            reason=f"bound to driver {device.driver!r}, which daxd does not manage",
        )
    if rule.mode is Mode.DEVDAX:
        return _plan_devdax(base, device, blocks, hotplug)
    return _plan_system_ram(base, device, blocks, hotplug, rule)


def _with(plan: DevicePlan, **changes: Any) -> DevicePlan:
    return replace(plan, **changes)


def removal_blockers(blocks: tuple[MemoryBlock, ...], hotplug: HotplugSettings) -> str | None:
    """Why kmem could not give this memory back, or None."""
    if blocks and not hotplug.hotremove:
        return "the kernel cannot remove memory (CONFIG_MEMORY_HOTREMOVE is off)"
    pinned = [b.index for b in blocks if b.removable is False]
    if pinned:
        return f"{block_span(pinned)} not removable (removable=0)"
    mixed = [b.index for b in blocks if b.online and b.zone is KernelZone.NONE]
    if mixed:
        return f"{block_span(mixed)} span several zones and cannot be offlined"
    return None


def zone_walk_order(blocks: Sequence[MemoryBlock]) -> list[MemoryBlock]:
    """The order to online or offline a device's blocks in: the second, the last down to the
    third, then the first.

    Linux (6.12) checks a zone's contiguity again after every block it onlines or offlines
    (set_zone_contiguous() in move_pfn_range_to_zone() and remove_pfn_range_from_zone()) by
    walking the zone's pageblocks from its start up to the first hole. In address order each
    walk crosses every block done so far: a device's conversion costs time quadratic in its
    blocks (docs/benchmarks.md). This order keeps a hole right after the zone's first block
    until the last two blocks, so every other walk stops there.
    """
    ordered = sorted(blocks, key=lambda b: b.index)
    if len(ordered) < 3:
        return ordered
    return [ordered[1], *reversed(ordered[2:]), ordered[0]]


def _offline_steps(blocks: tuple[MemoryBlock, ...], why: str) -> list[Step]:
    return [
        block_step(b.index, OnlineType.OFFLINE, why)
        for b in zone_walk_order(blocks)
        if b.state is not BlockState.OFFLINE
    ]


def _plan_devdax(
    base: DevicePlan,
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    hotplug: HotplugSettings,
) -> DevicePlan:
    plan = _with(base, desired=Desired(mode="devdax"))
    if device.driver == DRIVER_DEVDAX:
        return _with(plan, reason="bound to device_dax as the rule wants")
    steps: list[Step] = []
    if device.driver == DRIVER_KMEM:
        blocker = removal_blockers(blocks, hotplug)
        if blocker:
            return _with(
                plan, verdict=Verdict.REFUSED, reason=f"cannot go back to devdax: {blocker}"
            )
        steps += _offline_steps(blocks, "kmem may be unbound only when all its memory is offline")
        steps.append(driver_step(Action.UNBIND, DRIVER_KMEM, device.name, "leave kmem"))
    steps.append(
        driver_step(
            Action.REMOVE_ID,
            DRIVER_KMEM,
            device.name,
            "so that a re-probe does not hand the device to kmem again",
        )
    )
    # new_id, not bind: since 6.3 hmem/CXL devices match only kmem by type, and device_dax
    # takes them only by id (as daxctl does). Adding the id binds an unbound device at once.
    steps.append(driver_step(Action.NEW_ID, DRIVER_DEVDAX, device.name, "the rule wants devdax"))
    steps.append(_forget_id(DRIVER_DEVDAX, device.name))
    return _with(plan, verdict=Verdict.CHANGE, steps=tuple(steps))


def _forget_id(driver: str, name: str) -> Step:
    """remove_id right after a new_id bound the device: the id stays in the driver otherwise
    (Linux keeps it until reboot) and hands the next device of that name to the driver, where
    the kernel alone would bind it as it does any other. The device stays bound."""
    return driver_step(
        Action.REMOVE_ID,
        driver,
        name,
        f"bound: take the id out of {driver} again, so that a device appearing later binds "
        "as the kernel alone would bind it",
    )


def _plan_system_ram(
    base: DevicePlan,
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    hotplug: HotplugSettings,
    rule: Rule,
) -> DevicePlan:
    desired = Desired(
        mode="system-ram",
        zone=str(rule.zone),
        memmap_on_memory=rule.memmap_on_memory,
        online=rule.online,
    )
    plan = _with(base, desired=desired)
    want_memmap = rule.memmap_on_memory
    # What is in effect, not what the attribute reads: on CXL it reads 1 while the kernel (global
    # parameter N) keeps the memmap in RAM.
    in_effect = bool(memmap_in_effect(device.memmap_on_memory, hotplug.memmap_on_memory))
    unmet = _memmap_unmet(device, hotplug, want_memmap)
    memmap_differs = want_memmap is not None and unmet is None and in_effect != want_memmap

    if device.driver != DRIVER_KMEM:
        if device.provider is Provider.PMEM and not rule.allow_pmem_data_loss:
            return _with(
                plan,
                verdict=Verdict.REFUSED,
                reason=(
                    "persistent memory: system-ram destroys what it stores; the rule must say "
                    "allow_pmem_data_loss: true to consent"
                ),
            )
        steps: list[Step] = []
        if device.driver == DRIVER_DEVDAX:
            steps.append(
                driver_step(
                    Action.UNBIND,
                    DRIVER_DEVDAX,
                    device.name,
                    "leave device_dax (refused while /dev/" + device.name + " is in use)",
                )
            )
        steps.append(
            driver_step(
                Action.REMOVE_ID,
                DRIVER_DEVDAX,
                device.name,
                "so that a re-probe does not hand the device to device_dax again",
            )
        )
        if memmap_differs:
            steps.append(_memmap_step(device, bool(want_memmap)))
        steps += _kmem_bind_steps(device, hotplug, rule, "hand the memory to kmem (binds at once)")
        then = (_after_bind_note(device, hotplug, rule),)
        return _with(
            plan,
            verdict=Verdict.CHANGE,
            steps=tuple(steps),
            notes=then,
            continues=True,
            reason=unmet or "",
        )

    # Bound to kmem already: the memory is system RAM; settle memmap, then the blocks.
    notes: list[str] = []
    if memmap_differs:
        problem = removal_blockers(blocks, hotplug)
        if problem:
            notes.append(f"memmap_on_memory stays {in_effect}: {problem}")
        else:
            steps = _offline_steps(blocks, "memmap_on_memory can change only while kmem is unbound")
            steps += [
                driver_step(
                    Action.UNBIND,
                    DRIVER_KMEM,
                    device.name,
                    "leave kmem to change memmap_on_memory",
                ),
                _memmap_step(device, bool(want_memmap)),
                *_kmem_bind_steps(device, hotplug, rule, "hand the memory back to kmem"),
            ]
            return _with(plan, verdict=Verdict.CHANGE, steps=tuple(steps), continues=True)

    steps = _block_steps(blocks, rule)
    to_offline = [
        s.block for s in steps if s.action is Action.OFFLINE_BLOCK and s.block is not None
    ]
    if to_offline and not hotplug.hotremove:
        # Without CONFIG_MEMORY_HOTREMOVE every offline fails (EINVAL) and valid_zones is absent.
        return _with(
            plan,
            verdict=Verdict.REFUSED,
            reason=(
                f"{block_span(to_offline)} would have to go offline, which this kernel cannot do "
                "(CONFIG_MEMORY_HOTREMOVE is off)"
            ),
            notes=tuple(notes),
        )
    if not blocks:
        notes.append("kmem is bound but the device holds no whole memory block")
    if steps:
        return _with(
            plan,
            verdict=Verdict.CHANGE,
            steps=tuple(steps),
            notes=tuple(notes),
            reason=unmet or "",
        )
    if unmet:
        return _with(plan, verdict=Verdict.REFUSED, reason=unmet, notes=tuple(notes))
    return _with(plan, reason="system-ram as the rule wants", notes=tuple(notes))


MEMMAP_UNMET = (
    "memmap_on_memory: true cannot be met: {why}; the rest of the rule is applied without it "
    "(the memmap stays in RAM)"
)


def _memmap_unmet(device: DaxDevice, hotplug: HotplugSettings, want: bool | None) -> str | None:
    """Why this kernel cannot place the device's memmap on the device as the rule wants, or None.

    The same answer whatever the device's history (kmem-bound reading 1 or 0, device_dax-bound,
    unbound): only the memmap part of the rule is refused, the rest is applied; the plan says it
    in its reason (verdict refused once nothing else is left to do).
    """
    if not want or memmap_in_effect(device.memmap_on_memory, hotplug.memmap_on_memory):
        return None
    if device.memmap_on_memory is None:
        why = "the device has no memmap_on_memory attribute (it needs Linux 6.8 or later)"
    elif hotplug.memmap_on_memory is False:
        why = "the kernel was booted without memory_hotplug.memmap_on_memory=1"
    else:
        return None  # the attribute reads 0 and can be set: a step does it
    return MEMMAP_UNMET.format(why=why)


def _memmap_step(device: DaxDevice, value: bool) -> Step:
    return memmap_step(device.name, value, f"the rule wants memmap_on_memory: {str(value).lower()}")


def _block_steps(blocks: tuple[MemoryBlock, ...], rule: Rule) -> list[Step]:
    steps: list[Step] = []
    online_value = ONLINE_VALUE[rule.zone]
    for b in zone_walk_order(blocks):
        if not rule.online:
            if b.state is not BlockState.OFFLINE:
                steps.append(block_step(b.index, OnlineType.OFFLINE, "the rule says online: false"))
            continue
        if b.state is BlockState.OFFLINE:
            steps.append(block_step(b.index, online_value, f"online as {rule.zone}"))
        elif b.online and not zone_fits(b, rule.zone):
            now = zone_word(b.zone) or "an unknown zone"
            why = f"online in {now}, the rule wants {rule.zone}"
            steps.append(block_step(b.index, OnlineType.OFFLINE, why))
            steps.append(block_step(b.index, online_value, why))
    return steps


def _kmem_bind_steps(
    device: DaxDevice, hotplug: HotplugSettings, rule: Rule, reason: str
) -> list[Step]:
    """Bind kmem with the kernel's auto-onlining switched off for the length of the bind.

    The kernel onlines hot-added memory inside the bind (add_memory) when auto_online_blocks
    says so: with ``online`` into ZONE_NORMAL, from where a movable rule must offline every block
    again (as slow as onlining, and EBUSY once the kernel put unmovable allocations there); and
    always in address order, which Linux 6.12 makes quadratic in the blocks (see
    zone_walk_order). With ``offline`` for the bind, daxd onlines the blocks itself, in the
    rule's zone and in an order that stays linear. The old value is put back right after, also
    when the bind fails; an ``offline`` already there is left alone.
    """
    bind = driver_step(Action.NEW_ID, DRIVER_KMEM, device.name, reason)
    forget = _forget_id(DRIVER_KMEM, device.name)
    now = hotplug.auto_online_blocks
    if now is None or now is OnlineType.OFFLINE:
        return [bind, forget]
    return [
        auto_online_step(
            Action.SET_AUTO_ONLINE,
            OnlineType.OFFLINE,
            f"so that kmem's blocks come offline and daxd onlines them (not {now} in the "
            "kernel's order and zone); put back after the bind",
        ),
        bind,
        auto_online_step(Action.RESTORE_AUTO_ONLINE, now, "put the kernel's setting back"),
        forget,
    ]


def _after_bind_note(device: DaxDevice, hotplug: HotplugSettings, rule: Rule) -> str:
    span = expected_span(device, hotplug.block_size)
    if not rule.online:
        return f"then: {span} stay offline (the rule says online: false)"
    return f"then: online {span} as {rule.zone}"


def plan_all(
    state: KernelState, policy: Policy, names: list[str] | None = None
) -> list[DevicePlan]:
    """A plan for every device (or the named ones), in name order."""
    chosen = sorted(state.devices, key=device_sort_key) if names is None else names
    return [
        plan_device(
            state.devices[n], state.blocks_of(n), state.hotplug, policy.match(state.devices[n])
        )
        for n in chosen
        if n in state.devices
    ]


def device_sort_key(name: str) -> tuple[int, ...]:
    """dax2.0 before dax10.0."""
    try:
        return tuple(int(p) for p in name[3:].split("."))
    except ValueError:
        return (1 << 30,)

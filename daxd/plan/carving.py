"""Planning a dynamic dax region's layout: which devices stay, which are given back to the region,
which are made, and why a layout cannot be applied.

hmem and CXL dax regions are dynamic (drivers/dax/bus.c, Linux 6.12): a device's ``size`` can
be written while it is unbound, ``dax_region/create`` adds an empty device (the lowest free id)
and ``dax_region/delete`` removes an empty unbound one other than daxR.0. Growing a device takes
the region's free space first-fit from its lowest address, so devices sized one after another in
the layout's order sit in that order: a layout's devices are told by address, not by name.

The plan keeps the devices that already match the layout from the region's start (the matching
prefix), gives the others back (their memory offline and the driver unbound first, then size
0), sizes a device for each entry left (an empty one the region has, or a new one), and deletes
the emptied ones no entry needed, last. Binding each device as its entry says is the device
planner's (daxd.plan.planner), with the entry's actions as the device's rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from daxd.kernel.layout import device_path, driver_path, region_path
from daxd.kernel.model import (
    DRIVER_DEVDAX,
    DRIVER_KMEM,
    DaxDevice,
    DaxRegion,
    HotplugSettings,
    KernelState,
    MemoryBlock,
)
from daxd.plan.planner import removal_blockers
from daxd.policy.layouts import Fitted, Layout, fit
from daxd.policy.model import Actions, Mode, Policy, Rule
from daxd.policy.regions import show_bytes

DEFAULT_ALIGN = 2 << 20  # PMD_SIZE: what hmem and CXL regions have


class CarveVerdict(StrEnum):
    IN_SYNC = "in-sync"  # the region's devices are the layout's
    CHANGE = "change"
    REFUSED = "refused"  # cannot be laid out as described, or a device to change is in use


class CarveAction(StrEnum):
    RELEASE = "release"  # memory offline (kmem), then the driver unbound
    SET_ALIGN = "set-align"
    SET_SIZE = "set-size"
    CREATE = "create-device"
    DELETE = "delete-device"


@dataclass(frozen=True)
class CarveStep:
    action: CarveAction
    device: str  # the dax device acted on; for CREATE the name the kernel is expected to give
    path: str  # relative to the sysfs root
    value: str
    reason: str
    expect: str | None = None  # what the attribute reads after the write (None: not read back)
    driver: str | None = None  # RELEASE: the driver it is taken from

    def describe(self) -> str:
        return f"write {self.value!r} to {self.path}  # {self.reason}"


@dataclass(frozen=True)
class CarvePlan:
    region: int  # the dax region's id
    layout: str
    location: str
    verdict: CarveVerdict
    reason: str = ""
    steps: tuple[CarveStep, ...] = ()
    # device -> index of its layout entry: now (in sync), or once the steps ran (names of
    # created devices as predicted)
    assignments: tuple[tuple[str, int], ...] = ()
    sizes: tuple[int, ...] = ()  # each entry's size in bytes, once fitted
    notes: tuple[str, ...] = field(default=())

    @property
    def assigned(self) -> dict[str, int]:
        return dict(self.assignments)


def _start(device: DaxDevice) -> int:
    if device.ranges:
        return min(r.start for r in device.ranges)
    return device.resource if device.resource is not None else 1 << 64


def _id(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def _conflicts(
    layout: Layout, region: DaxRegion, devices: Sequence[DaxDevice], rules: Sequence[Rule]
) -> str | None:
    whole = region.whole()
    for rule in rules:
        hit = next((d.name for d in devices if rule.matches(d)), None)
        if hit is None and rule.matches(whole):
            hit = f"region {region.id}"
        if hit is not None:
            return (
                f"rule {rule.name!r} ({rule.location}) also matches {hit}, which layout "
                f"{layout.name!r} lays out: a device is decided by one of them; narrow the rule "
                f"(e.g. region: '!{region.id}') or drop the layout"
            )
    return None


def _unaligned(region: DaxRegion, fitted: Sequence[Fitted]) -> str | None:
    """A device starts where the ones before it end: its start must be a multiple of its align
    for /dev/daxX.Y to map with pages of that size."""
    if region.start is None:
        return None
    at = region.start
    for f in fitted:
        if at % f.align:
            return (
                f"device {f.index + 1} ({f.location}) would start at {at:#x}, not a multiple "
                f"of its align {show_bytes(f.align)}; put it first or make the devices before "
                f"it multiples of {show_bytes(f.align)}"
            )
        at += f.size
    return None


def _matches(device: DaxDevice, f: Fitted, region: DaxRegion) -> bool:
    align = device.align if device.align is not None else region.align
    if device.size != f.size or align != f.align:
        return False
    # Kept only where it maps with pages of its align (a device made before the layout may not).
    return region.start is None or _start(device) % f.align == 0


def _release_blocker(
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    hotplug: HotplugSettings,
    users: Mapping[str, str],
) -> str | None:
    if device.driver not in (None, DRIVER_DEVDAX, DRIVER_KMEM):
        return f"{device.name} is bound to driver {device.driver!r}, which daxd does not manage"
    if device.driver == DRIVER_DEVDAX and device.name in users:
        return f"/dev/{device.name} is in use ({users[device.name]})"
    if device.driver == DRIVER_KMEM and (why := removal_blockers(blocks, hotplug)):
        return f"{device.name}: {why}"
    return None


def plan_carve(
    region: DaxRegion,
    layout: Layout,
    devices: Mapping[str, DaxDevice],
    blocks: Mapping[str, tuple[MemoryBlock, ...]],
    hotplug: HotplugSettings,
    *,
    rules: Sequence[Rule] = (),
    others: Sequence[Layout] = (),
    users: Mapping[str, str] | None = None,
) -> CarvePlan:
    """The steps that give ``region`` the devices of ``layout``.

    ``devices``: the region's dax devices (seeds included); ``rules``: the policy's rules, none
    of which may match a device the layout lays out; ``others``: further layouts that match this
    region; ``users``: who has each of its /dev/daxX.Y open or mapped, in words.
    """
    base = CarvePlan(region.id, layout.name, layout.location, CarveVerdict.REFUSED)
    users = users or {}
    if not region.dynamic:
        return _r(
            base,
            reason=f"region {region.id} is static ({region.provider}): its devices cannot be "
            "resized; layouts apply to hmem and CXL regions",
        )
    if others:
        where = ", ".join(f"{o.name!r} ({o.location})" for o in others)
        return _r(base, reason=f"layout {where} also matches region {region.id}: one per region")
    mine = sorted(devices.values(), key=_start)
    conflict = _conflicts(layout, region, mine, rules)
    if conflict:
        return _r(base, reason=conflict)
    fitted = fit(layout, region.size, region.align or DEFAULT_ALIGN, hotplug.block_size)
    if isinstance(fitted, str):
        return _r(base, reason=f"region {region.id} ({show_bytes(region.size)}): {fitted}")
    sizes = tuple(f.size for f in fitted)
    base = _r(base, sizes=sizes, notes=_notes(fitted, hotplug))
    unaligned = _unaligned(region, fitted)
    if unaligned:
        return _r(base, reason=unaligned)

    sized = [d for d in mine if d.size > 0]
    kept = 0
    while kept < min(len(sized), len(fitted)) and _matches(sized[kept], fitted[kept], region):
        kept += 1
    assignments = [(d.name, i) for i, d in enumerate(sized[:kept])]
    if kept == len(fitted) and kept == len(sized):
        return _r(base, verdict=CarveVerdict.IN_SYNC, assignments=tuple(assignments))

    give_back = sized[kept:]
    for d in give_back:
        blocker = _release_blocker(d, blocks.get(d.name, ()), hotplug, users)
        if blocker:
            return _r(
                base,
                reason=f"{blocker}: {d.name} would have to be resized or deleted; nothing changed",
            )
    steps: list[CarveStep] = []
    for d in give_back:
        if d.driver is not None:
            steps.append(_release(d))
    for d in give_back:
        steps.append(_size(d.name, 0, "give its memory back to the region"))
    # Empty devices to size, lowest id first: the emptied ones and the region's seeds.
    empty = sorted({d.name for d in give_back} | {d.name for d in mine if d.size == 0}, key=_id)
    taken = {d.name for d in mine}
    reuse: list[str] = []
    align_of = {d.name: d.align for d in mine}
    for f in fitted[kept:]:
        what = f"device {f.index + 1} of layout {layout.name!r} ({f.location})"
        if empty:
            name = empty.pop(0)
            reuse.append(name)
        else:
            name = _next_name(region.id, taken)
            steps.append(
                CarveStep(
                    CarveAction.CREATE,
                    name,
                    region_path(region.parent, "create"),
                    "1",
                    f"a new device for {what}",
                )
            )
            align_of[name] = region.align or DEFAULT_ALIGN
        taken.add(name)
        if align_of.get(name) != f.align:
            steps.append(
                CarveStep(
                    CarveAction.SET_ALIGN,
                    name,
                    device_path(name, "align"),
                    str(f.align),
                    f"{what}: align {show_bytes(f.align)}",
                    expect=str(f.align),
                )
            )
        steps.append(_size(name, f.size, f"{what}: {show_bytes(f.size)}"))
        assignments.append((name, f.index))
    emptied = {d.name for d in give_back}
    for name in empty:
        if name in emptied and _id(name) > 0:
            steps.append(
                CarveStep(
                    CarveAction.DELETE,
                    name,
                    region_path(region.parent, "delete"),
                    name,
                    "emptied and not needed by the layout",
                )
            )
    return _r(
        base,
        verdict=CarveVerdict.CHANGE,
        steps=tuple(steps),
        assignments=tuple(assignments),
    )


def _r(plan: CarvePlan, **changes: Any) -> CarvePlan:
    return replace(plan, **changes)


def _next_name(region: int, taken: set[str]) -> str:
    """What dax_region/create names its device: the lowest id the region does not use (ida)."""
    i = 0
    while f"dax{region}.{i}" in taken:
        i += 1
    return f"dax{region}.{i}"


def _release(device: DaxDevice) -> CarveStep:
    driver = device.driver
    assert driver is not None
    why = (
        "take its memory offline, then unbind kmem"
        if driver == DRIVER_KMEM
        else "unbind device_dax (nothing has it open or mapped)"
    )
    return CarveStep(
        CarveAction.RELEASE,
        device.name,
        driver_path(driver, "unbind"),
        device.name,
        f"{why}: it is resized or deleted",
        driver=driver,
    )


def _size(name: str, size: int, reason: str) -> CarveStep:
    return CarveStep(
        CarveAction.SET_SIZE, name, device_path(name, "size"), str(size), reason, expect=str(size)
    )


def _notes(fitted: Sequence[Fitted], hotplug: HotplugSettings) -> tuple[str, ...]:
    """Memory kmem would leave out: it hot-adds whole memory blocks only."""
    bs = hotplug.block_size
    notes = []
    if bs:
        for f in fitted:
            if f.entry.mode == "system-ram" and f.size % bs:
                notes.append(
                    f"device {f.index + 1} ({f.location}): {show_bytes(f.size % bs)} of it is not "
                    f"a whole memory block ({show_bytes(bs)}) and stays out of system RAM"
                )
    return tuple(notes)


@dataclass(frozen=True)
class RegionLayout:
    """A dax region the policy lays out, and the plan for it."""

    region: DaxRegion
    layout: Layout
    plan: CarvePlan
    devices: dict[str, DaxDevice]  # the region's devices as planned from


def plan_layouts(
    policy: Policy, state: KernelState, users: Mapping[str, str] | None = None
) -> list[RegionLayout]:
    """A plan for every dax region a layout of the policy matches, by region id."""
    out = []
    for region in sorted(state.regions.values(), key=lambda r: r.id):
        matching = [layout for layout in policy.layouts if layout.matches(region)]
        if not matching:
            continue
        devices = {n: state.devices[n] for n in region.devices if n in state.devices}
        plan = plan_carve(
            region,
            matching[0],
            devices,
            state.blocks,
            state.hotplug,
            rules=policy.rules,
            others=matching[1:],
            users=users,
        )
        out.append(RegionLayout(region, matching[0], plan, devices))
    return out


def entry_rule(layout: Layout, index: int) -> Rule:
    """The rule a layout's device is bound by: its entry's actions."""
    entry = layout.devices[index]
    actions = {k: getattr(entry, k) for k in Actions.model_fields}
    label = f" ({entry.name})" if entry.name else ""
    return Rule(
        name=f"layout {layout.name} device {index + 1}{label}",
        location=layout.device_locations[index],
        **actions,
    )


def hold_rule(layout: Layout, why: str) -> Rule:
    """For the devices of a region whose layout is not (yet) in place: left as they are."""
    return Rule(
        name=f"layout {layout.name} (not laid out: {why})",
        location=layout.location,
        mode=Mode.IGNORE,
    )


def layout_device_rules(
    layout: Layout, assigned: Mapping[str, int] | None, devices: Sequence[str], why: str
) -> dict[str, Rule]:
    """Each device of a laid-out region gets its entry's rule; ``assigned`` None (the layout is
    not in place): every device of the region is held."""
    if assigned is None:
        return {name: hold_rule(layout, why) for name in devices}
    rules = {name: entry_rule(layout, i) for name, i in assigned.items()}
    for name in devices:  # empty devices the layout left (seeds): nothing to bind
        rules.setdefault(name, hold_rule(layout, "not one of its devices"))
    return rules

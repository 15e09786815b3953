"""Acting on a region's layout: run a carve plan through sysfs, read every write back, and on a
failure put the region back as it was.

"As it was" means: the devices this run made are emptied and deleted, the ones it resized get
their size and align back, and every device it took from its driver is given back to that
driver with its memory online in the zone it was in (daxd.apply.executor does the binding and
onlining, with its own safety rules). A device is never left half-sized, and memory that was
online is never left offline. The kernel hands free space out first-fit, so a device grown back
may sit at another address than before: its size and driver are what they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from daxd.apply.executor import ApplyOptions, Outcome, apply_device, release_device
from daxd.kernel.layout import device_dir, device_path, region_path
from daxd.kernel.model import (
    DRIVER_DEVDAX,
    DRIVER_KMEM,
    DaxDevice,
    DaxRegion,
    HotplugSettings,
    KernelState,
    KernelZone,
    MemoryBlock,
)
from daxd.kernel.sysfs import Sysfs, SysfsError
from daxd.kernel.users import device_users
from daxd.plan.carving import (
    CarveAction,
    CarvePlan,
    CarveStep,
    CarveVerdict,
    RegionLayout,
    layout_device_rules,
    plan_layouts,
)
from daxd.policy.model import Mode, Policy, Rule, Zone
from daxd.policy.selectors import Selector

log = logging.getLogger("daxd.apply")


@dataclass(frozen=True)
class CarveStepResult:
    step: CarveStep
    ok: bool
    error: str = ""
    errno: str = ""
    rollback: bool = False


@dataclass
class CarveResult:
    plan: CarvePlan
    outcome: Outcome = Outcome.IN_SYNC
    error: str = ""
    results: list[CarveStepResult] = field(default_factory=list)
    # device -> layout entry index as the kernel named the devices (created ones included)
    assignments: dict[str, int] = field(default_factory=dict)


class _Failed(Exception):
    pass


def device_rule(name: str, rule: Rule) -> Rule:
    """``rule`` for the one device ``name``: put before a policy's rules, it decides for it."""
    return rule.model_copy(update={"selector": Selector.model_validate({"device": name})})


def with_device_rules(policy: Policy, rules: dict[str, Rule]) -> Policy:
    """``policy`` with a rule of its own for each named device, ahead of the policy's rules."""
    if not rules:
        return policy
    first = tuple(device_rule(name, rule) for name, rule in sorted(rules.items()))
    return replace(policy, rules=(*first, *policy.rules))


def restore_rule(device: DaxDevice, blocks: tuple[MemoryBlock, ...], why: str) -> Rule:
    """A rule that gives ``device`` back as it is now: its driver, its memory online (or not)
    in the zone it is in."""
    if device.driver != DRIVER_KMEM:
        return Rule(name=why, location="", mode=Mode.DEVDAX)
    zones = {b.zone for b in blocks if b.online}
    if zones == {KernelZone.MOVABLE}:
        zone = Zone.MOVABLE
    elif zones and KernelZone.MOVABLE not in zones and None not in zones:
        zone = Zone.NORMAL
    else:
        zone = Zone.AUTO
    online = any(b.online for b in blocks) or not blocks
    return Rule(name=why, location="", mode=Mode.SYSTEM_RAM, zone=zone, online=online)


class _Carve:
    def __init__(
        self,
        sysfs: Sysfs,
        plan: CarvePlan,
        *,
        region: DaxRegion,
        devices: dict[str, DaxDevice],
        blocks: dict[str, tuple[MemoryBlock, ...]],
        hotplug: HotplugSettings,
        opts: ApplyOptions,
    ) -> None:
        self.sysfs = sysfs
        self.plan = plan
        self.region = region
        self.devices = devices
        self.blocks = blocks
        self.hotplug = hotplug
        self.opts = opts
        self.result = CarveResult(plan)
        self.names: dict[str, str] = {}  # predicted name -> the kernel's
        self.released: list[str] = []
        self.resized: dict[str, tuple[int, int | None]] = {}  # original size and align
        self.created: list[str] = []

    def name(self, predicted: str) -> str:
        return self.names.get(predicted, predicted)

    def run(self) -> CarveResult:
        try:
            for step in self.plan.steps:
                if self.opts.should_stop():
                    raise _Failed("stopped before finishing; the region is put back as it was")
                self.do(step)
        except _Failed as e:
            self.result.outcome = Outcome.STOPPED if self.opts.should_stop() else Outcome.FAILED
            self.result.error = str(e)
            self.undo()
            return self.result
        self.result.outcome = Outcome.APPLIED
        self.result.assignments = {self.name(n): i for n, i in self.plan.assignments}
        return self.result

    def do(self, step: CarveStep) -> None:
        name = self.name(step.device)
        if step.action is CarveAction.RELEASE:
            done = release_device(self.sysfs, name, self.hotplug, step.reason, self.opts)
            self.released.append(name)
            ok = done.outcome in (Outcome.APPLIED, Outcome.IN_SYNC)
            self.record(CarveStepResult(step, ok, done.error))
            if not ok:
                raise _Failed(f"{name}: {done.error or done.outcome}")
            return
        if step.action is CarveAction.CREATE:
            before = set(self.devices) | set(self.created)
            self.write(step, step.path, step.value)
            # Reading create shows the device it made last (bus.c create_show(): youngest).
            made = (self.sysfs.read(step.path) or "").strip()
            if not made or made in before or not self.sysfs.exists(device_dir(made)):
                self.fail(step, f"dax_region/create names {made or 'no device'} after the write")
            self.names[step.device] = made
            self.created.append(made)
            return
        if step.action is CarveAction.DELETE:
            # Last, once the layout stands: an empty device left over is reported, not undone.
            try:
                self.write(step, step.path, name)
                if self.sysfs.exists(device_dir(name)):
                    self.fail(step, f"{name} is still there after delete")
            except _Failed as e:
                self.result.error = f"{name} emptied but not deleted: {e}"
            return
        device = self.devices.get(name)
        if device is not None and name not in self.resized:
            self.resized[name] = (device.size, device.align)
        path = device_path(name, "size" if step.action is CarveAction.SET_SIZE else "align")
        self.write(step, path, step.value)
        now = (self.sysfs.read(path) or "").strip()
        if step.expect is not None and now != step.expect:
            self.fail(step, f"{path} reads {now or 'nothing'} after writing {step.value}")

    def write(self, step: CarveStep, path: str, value: str, rollback: bool = False) -> None:
        try:
            self.sysfs.write(path, value)
        except SysfsError as e:
            self.record(CarveStepResult(step, False, e.message, e.errno_name, rollback))
            raise _Failed(e.message) from None
        self.record(CarveStepResult(step, True, rollback=rollback))

    def fail(self, step: CarveStep, message: str) -> None:
        self.record(CarveStepResult(step, False, message))
        raise _Failed(message)

    def record(self, result: CarveStepResult) -> None:
        # A failed write is already in the list when its read-back is what failed.
        if self.result.results and self.result.results[-1].step is result.step and not result.ok:
            self.result.results[-1] = result
        else:
            self.result.results.append(result)
        step = result.step
        what = f"{step.action} {step.value!r} > {step.path}"
        where = f"dax region {self.plan.region} (layout {self.plan.layout!r})"
        if result.ok:
            log.info("%s: %s: ok%s", where, what, " (undo)" if result.rollback else "")
        else:
            log.warning("%s: %s: FAILED: %s", where, what, result.error)

    # --- undo ----------------------------------------------------------------------------------
    def undo(self) -> None:
        for name in reversed(self.created):
            self.quiet(name, "size", "0")
            self.quiet_delete(name)
        # Back in address order: first-fit then gives each its old place where it is free.
        originals = sorted(self.resized, key=lambda n: _start(self.devices[n]))
        for name in originals:
            self.quiet(name, "size", "0")
        for name in originals:
            size, align = self.resized[name]
            if align is not None:
                self.quiet(name, "align", str(align))
            self.quiet(name, "size", str(size))
        for name in self.released:
            device = self.devices.get(name)
            if device is None:
                continue
            rule = restore_rule(device, self.blocks.get(name, ()), "undo: the layout failed")
            policy = with_device_rules(Policy(rules=()), {name: rule})
            back = apply_device(self.sysfs, policy, name, self.hotplug, self.opts)
            if back.outcome not in (Outcome.APPLIED, Outcome.IN_SYNC):
                log.warning("%s: could not be given back: %s", name, back.error)

    def quiet(self, name: str, attr: str, value: str) -> None:
        path = device_path(name, attr)
        step = CarveStep(CarveAction.SET_SIZE, name, path, value, "undo: the layout failed")
        try:
            if (self.sysfs.read(path) or "").strip() == value:
                return
            self.sysfs.write(path, value)
            self.record(CarveStepResult(step, True, rollback=True))
        except SysfsError as e:
            self.record(CarveStepResult(step, False, e.message, e.errno_name, True))

    def quiet_delete(self, name: str) -> None:
        path = region_path(self.region.parent, "delete")
        step = CarveStep(CarveAction.DELETE, name, path, name, "undo: the layout failed")
        try:
            self.sysfs.write(path, name)
            self.record(CarveStepResult(step, True, rollback=True))
        except SysfsError as e:
            self.record(CarveStepResult(step, False, e.message, e.errno_name, True))


def _start(device: DaxDevice) -> int:
    return min((r.start for r in device.ranges), default=1 << 64)


def apply_carve(
    sysfs: Sysfs,
    plan: CarvePlan,
    *,
    region: DaxRegion,
    devices: dict[str, DaxDevice],
    blocks: dict[str, tuple[MemoryBlock, ...]],
    hotplug: HotplugSettings,
    opts: ApplyOptions | None = None,
) -> CarveResult:
    """Run a CHANGE plan (any other verdict has nothing to write); never raises.

    ``devices`` and ``blocks``: the region's devices as the plan saw them, for the undo.
    """
    if plan.verdict is not CarveVerdict.CHANGE:
        outcome = Outcome.IN_SYNC if plan.verdict is CarveVerdict.IN_SYNC else Outcome.REFUSED
        return CarveResult(plan, outcome, plan.reason, assignments=plan.assigned)
    return _Carve(
        sysfs,
        plan,
        region=region,
        devices=devices,
        blocks=blocks,
        hotplug=hotplug,
        opts=opts or ApplyOptions(),
    ).run()


@dataclass
class LayoutOutcome:
    """One laid-out region after a pass: its plan, what was written, the rules of its devices."""

    planned: RegionLayout
    result: CarveResult | None  # None: nothing was to be written, or it was held
    rules: dict[str, Rule]
    held: str = ""  # why a change was not made (it would take memory away unasked)


def apply_layouts(
    sysfs: Sysfs,
    policy: Policy,
    state: KernelState,
    opts: ApplyOptions | None = None,
    *,
    may_change: Callable[[RegionLayout], str | None] = lambda _: None,
) -> list[LayoutOutcome]:
    """Plan every laid-out region and carve those that need it; never raises.

    ``may_change(planned)``: None to go ahead, or why the change waits (it is then reported and
    its devices are held). The rules returned are for :func:`with_device_rules`; names of
    devices made here are the kernel's.
    """
    opts = opts or ApplyOptions()
    devdax = [n for n, d in state.devices.items() if d.driver == DRIVER_DEVDAX]
    users = device_users(opts.proc_root, [n for n in devdax if _laid_out(policy, state, n)])
    out = []
    for planned in plan_layouts(policy, state, users):
        plan = planned.plan
        names = list(planned.devices)
        if plan.verdict is CarveVerdict.IN_SYNC:
            rules = layout_device_rules(planned.layout, plan.assigned, names, "")
            out.append(LayoutOutcome(planned, None, rules))
            continue
        if plan.verdict is CarveVerdict.REFUSED:
            rules = layout_device_rules(planned.layout, None, names, "refused")
            out.append(LayoutOutcome(planned, None, rules))
            continue
        held = may_change(planned)
        if held is not None:
            rules = layout_device_rules(planned.layout, None, names, "held")
            out.append(LayoutOutcome(planned, None, rules, held))
            continue
        region = planned.region
        result = apply_carve(
            sysfs,
            plan,
            region=region,
            devices=planned.devices,
            blocks=dict(state.blocks),
            hotplug=state.hotplug,
            opts=opts,
        )
        if result.outcome is Outcome.APPLIED:
            after = layout_device_rules(planned.layout, result.assignments, names, "")
        else:
            after = layout_device_rules(planned.layout, None, names, str(result.outcome))
        out.append(LayoutOutcome(planned, result, after))
    return out


def _laid_out(policy: Policy, state: KernelState, name: str) -> bool:
    device = state.devices[name]
    region = state.regions.get(device.region_id)
    return region is not None and any(layout.matches(region) for layout in policy.layouts)


def layout_rules(outcomes: list[LayoutOutcome]) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for o in outcomes:
        rules.update(o.rules)
    return rules

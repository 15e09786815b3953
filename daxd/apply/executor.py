"""Acting: run a device's plan through sysfs, read every write back, and say what happened.

The executor re-reads the device and plans again after each round, so steps that depend on what
the kernel does in between (blocks appearing and auto-onlining when kmem binds) are planned from
what is really there.  Its safety rules hold whatever the plan says:

- kmem is never unbound while any of the device's blocks is online (the kernel would "succeed"
  and leak the range until reboot);
- device_dax is never unbound while a process has /dev/daxX.Y open or mapped (it would get
  SIGBUS on its next access);
- blocks taken offline on the way to a conversion that then fails are put back online in the
  zone they were in, so a failure never leaves memory missing; when kmem was unbound only to be
  bound again (to change memmap_on_memory), a failure puts memmap_on_memory back (kmem may be
  unable to add the memory with the new value, e.g. ENOMEM for a memmap in RAM) and binds it
  again first;
- an id daxd writes to a driver's new_id is taken out again (remove_id) once the device is
  bound, and when the conversion fails, so that no device appearing later binds differently
  from how the kernel alone would bind it.  A remove_id the kernel refuses after the bind is
  reported (a failed step, a warning) and the conversion stays;
- a block write the kernel refuses with EINVAL because the block is already as wanted (the
  kernel onlined it itself, someone offlined it first) counts as done; one whose block changed
  otherwise meanwhile is planned again in the next round.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from daxd.apply import autoonline
from daxd.kernel.layout import block_path
from daxd.kernel.model import (
    DRIVER_KMEM,
    BlockState,
    DaxDevice,
    HotplugSettings,
    KernelZone,
    MemoryBlock,
    OnlineType,
    parse_zones,
)
from daxd.kernel.roots import DEFAULT_OFFLINE_TIMEOUT
from daxd.kernel.scan import DeviceReading, read_binding, read_device
from daxd.kernel.sysfs import Sysfs, SysfsError
from daxd.kernel.users import find_device_users
from daxd.kernel.view import DeviceView, view
from daxd.plan.planner import plan_device, zone_walk_order
from daxd.plan.steps import (
    BLOCK_ACTIONS,
    Action,
    DevicePlan,
    Step,
    Verdict,
    auto_online_step,
    block_step,
    driver_step,
    memmap_step,
)
from daxd.policy.model import Policy

log = logging.getLogger("daxd.apply")


class Outcome(StrEnum):
    APPLIED = "applied"  # steps ran and the device now matches its rule
    IN_SYNC = "in-sync"  # nothing to do
    FAILED = "failed"  # a step failed; see error and results for how far it got
    REFUSED = "refused"
    UNMANAGED = "unmanaged"
    IGNORED = "ignored"
    GONE = "gone"  # the device disappeared
    STOPPED = "stopped"  # asked to stop between steps; rolled back where needed


_VERDICT_OUTCOME = {
    Verdict.IN_SYNC: Outcome.IN_SYNC,
    Verdict.REFUSED: Outcome.REFUSED,
    Verdict.UNMANAGED: Outcome.UNMANAGED,
    Verdict.IGNORED: Outcome.IGNORED,
}


@dataclass(frozen=True)
class StepResult:
    step: Step
    ok: bool
    error: str = ""
    errno: str = ""  # "EBUSY", "ETIMEDOUT", ... when the kernel refused the write
    rollback: bool = False  # this step undid an earlier one after a failure


@dataclass
class DeviceResult:
    device: str
    outcome: Outcome
    plan: DevicePlan | None = None  # the first plan of this apply
    results: list[StepResult] = field(default_factory=list)
    error: str = ""
    final: DeviceView | None = None  # what the kernel shows afterwards
    final_blocks: tuple[MemoryBlock, ...] = ()  # the memory blocks that view was made from
    final_device: DaxDevice | None = None  # the device that view was made from


@dataclass(frozen=True)
class ApplyOptions:
    proc_root: Path = Path("/proc")
    # per block; offlining loops in the kernel until interrupted
    offline_timeout: float = DEFAULT_OFFLINE_TIMEOUT
    max_rounds: int = 4
    should_stop: Callable[[], bool] = lambda: False
    on_step: Callable[[str, StepResult], None] | None = None  # after every write
    # Where a switched auto_online_blocks is recorded until put back (autoonline.py); None: no
    # record (a sysfs tree that is not the running kernel's).
    runtime_dir: Path | None = None


class _StepFailed(Exception):
    pass


class _BlockChanged(Exception):
    """A block write the kernel refused (EINVAL) because the block changed meanwhile: the next
    round plans from what it is now."""


class _Run:
    """One device's apply: the rounds, the results so far, and what to undo on failure."""

    def __init__(
        self,
        sysfs: Sysfs,
        policy: Policy,
        name: str,
        hotplug: HotplugSettings,
        opts: ApplyOptions,
    ) -> None:
        self.sysfs = sysfs
        self.policy = policy
        self.name = name
        self.hotplug = hotplug
        self.opts = opts
        self.result = DeviceResult(name, Outcome.IN_SYNC)
        self.rule = ""
        # Blocks online when this apply began: memory it must not leave offline on a failure.
        self.online_at_start: set[int] | None = None
        # The blocks of the last reading: re-read for their state and zone only.
        self.known: dict[int, MemoryBlock] = {}

    def read(self) -> DeviceReading:
        reading = read_device(self.sysfs, self.name, self.hotplug, self.known)
        self.known = {b.index: b for b in reading.blocks}
        return reading

    def run(self, first: DeviceReading | None = None) -> DeviceResult:
        if self.opts.runtime_dir is not None:
            done = autoonline.recover(self.sysfs, self.opts.runtime_dir)
            if done:
                log.warning("%s", done)
        for _ in range(self.opts.max_rounds):
            reading = first if first is not None else self.read()
            first = None
            if self.online_at_start is None:
                self.online_at_start = {b.index for b in reading.blocks if b.online}
                self.known = {b.index: b for b in reading.blocks}
            if reading.device is None:
                return self.finish(
                    Outcome.GONE if not self.result.results else Outcome.FAILED,
                    "the device disappeared" if self.result.results else "",
                    reading,
                )
            rule = self.policy.match(reading.device)
            plan = plan_device(reading.device, reading.blocks, self.hotplug, rule)
            self.rule = plan.rule or ""
            if self.result.plan is None:
                self.result.plan = plan
            if plan.verdict is not Verdict.CHANGE:
                if self.result.results:
                    if plan.verdict is Verdict.REFUSED:
                        # the rest is done; a part the kernel cannot do (memmap_on_memory) is not
                        return self.finish(Outcome.REFUSED, plan.reason, reading)
                    return self.finish(Outcome.APPLIED, "", reading)
                return self.finish(_VERDICT_OUTCOME[plan.verdict], plan.reason, reading)
            try:
                self.run_plan(plan, reading)
            except _StepFailed as e:
                return self.finish(self.failure_outcome(), str(e), self.read())
        return self.finish(
            Outcome.FAILED,
            f"still not as the rule wants after {self.opts.max_rounds} rounds",
            self.read(),
        )

    def failure_outcome(self) -> Outcome:
        return Outcome.STOPPED if self.opts.should_stop() else Outcome.FAILED

    def finish(self, outcome: Outcome, error: str, reading: DeviceReading) -> DeviceResult:
        self.result.outcome = outcome
        self.result.error = error
        if reading.device is not None:
            self.result.final = view(reading.device, reading.blocks, self.hotplug)
            self.result.final_blocks = reading.blocks
            self.result.final_device = reading.device
        return self.result

    def run_plan(self, plan: DevicePlan, reading: DeviceReading) -> None:
        structural = any(s.action not in BLOCK_ACTIONS for s in plan.steps)
        if structural:
            memmap = reading.device.memmap_on_memory if reading.device is not None else None
            self.run_structural(plan.steps, reading.blocks, memmap)
        else:
            self.run_block_steps(plan.steps, reading.blocks)

    # A conversion: all-or-nothing; blocks it offlined come back if a later step fails.
    def run_structural(
        self, steps: tuple[Step, ...], blocks: tuple[MemoryBlock, ...], memmap: bool | None
    ) -> None:
        zones = {b.index: b.zone for b in blocks}
        offlined: list[int] = []
        left: str | None = None  # the driver this run unbound the device from
        memmap_changed = False  # this run tried to change memmap_on_memory
        switched: str | None = None  # auto_online_blocks before this run switched it
        ids: list[str] = []  # drivers this run wrote the device's id to (new_id), not taken out
        try:
            for step in steps:
                if self.opts.should_stop():
                    raise _StepFailed("stopped before finishing; nothing left half-done")
                if step.action is Action.SET_AUTO_ONLINE:
                    switched = self.switch_auto_online(step)
                    continue
                if step.action is Action.RESTORE_AUTO_ONLINE:
                    if switched is not None:
                        original, switched = switched, None
                        self.restore_auto_online(step, original)
                    continue
                if step.action is Action.REMOVE_ID and step.driver in ids:
                    # after the bind: a refusal is reported, the conversion stays
                    if self.forget_id(step):
                        ids.remove(step.driver)
                    continue
                self.check_preconditions(step)
                if step.action is Action.SET_MEMMAP:
                    memmap_changed = True
                if step.action is Action.NEW_ID and step.driver is not None:
                    ids.append(step.driver)  # first: the kernel keeps the id even if probe fails
                self.write(step)
                if step.action is Action.OFFLINE_BLOCK and step.block is not None:
                    offlined.append(step.block)
                elif step.action is Action.UNBIND:
                    left = step.driver
        except _StepFailed:
            if switched is not None:  # first, so that a rebind below binds as the kernel would
                original, switched = switched, None
                self.undo_switch(original)
            for driver in ids:
                self.undo_id(driver)
            if left is not None and self.still_unbound():
                # Half-way between drivers: give the device back to the one it had, as it had
                # it, so that /dev/daxX.Y or the memory comes back instead of an unbound device.
                if memmap_changed and memmap is not None:
                    self.restore_memmap(memmap)
                self.rebind(left)
            self.restore_online(offlined, zones)
            raise
        finally:
            if switched is not None:  # left by an exception other than a failed step
                self.undo_switch(switched)

    def undo_switch(self, original: str) -> None:
        step = auto_online_step(
            Action.RESTORE_AUTO_ONLINE, original, "undo: put the kernel's setting back"
        )
        self.restore_auto_online(step, original, rollback=True)

    def switch_auto_online(self, step: Step) -> str | None:
        """Switch auto_online_blocks for the bind that follows; the value to put back, or None
        when nothing was switched (already so, or the switch could not be recorded)."""
        try:
            original = self.sysfs.read(step.path)
        except SysfsError as e:
            log.warning("%s: not switching auto_online_blocks: %s", self.name, e.message)
            return None
        if original is None or original == step.value:
            return None
        if self.opts.runtime_dir is not None:
            try:
                autoonline.save(self.opts.runtime_dir, original, step.value)
            except OSError as e:
                # Without the record a crash could leave the setting switched: bind without it.
                log.warning(
                    "%s: not switching auto_online_blocks: cannot record it in %s: %s",
                    self.name,
                    self.opts.runtime_dir,
                    e.strerror,
                )
                return None
        try:
            self.write(step)
        except _StepFailed:
            self.forget_switch()
            raise
        return original

    def restore_auto_online(self, step: Step, original: str, rollback: bool = False) -> None:
        """Put auto_online_blocks back; a failure fails the apply (unless this is already a
        rollback) and leaves the record, so that the next apply tries again."""
        try:
            self.write(replace(step, value=original), rollback=rollback)
        except _StepFailed as e:
            if rollback:
                return
            raise _StepFailed(f"auto_online_blocks is left switched: {e}") from None
        self.forget_switch()

    def forget_switch(self) -> None:
        if self.opts.runtime_dir is not None:
            autoonline.clear(self.opts.runtime_dir)

    def forget_id(self, step: Step) -> bool:
        """remove_id after the bind; False (reported, nothing undone) when the kernel refuses."""
        try:
            self.write(step)
        except _StepFailed as e:
            log.warning(
                "%s: the id stays in %s (%s): the device stays bound, but a device of that name "
                "appearing later binds to %s until it is taken out",
                self.name,
                step.driver,
                e,
                step.driver,
            )
            return False
        return True

    def undo_id(self, driver: str) -> None:
        step = driver_step(
            Action.REMOVE_ID,
            driver,
            self.name,
            f"undo: the change failed, take the id out of {driver} again",
        )
        with contextlib.suppress(_StepFailed):
            self.write(step, rollback=True)

    def restore_memmap(self, value: bool) -> None:
        device = read_binding(self.sysfs, self.name)
        if device is None or device.memmap_on_memory is value:
            return
        step = memmap_step(self.name, value, "undo: the change failed, put memmap_on_memory back")
        with contextlib.suppress(_StepFailed):
            self.write(step, rollback=True)

    def rebind(self, driver: str) -> None:
        step = driver_step(
            Action.NEW_ID,
            driver,
            self.name,
            f"undo: the change failed, give the device back to {driver}",
        )
        with contextlib.suppress(_StepFailed):
            self.write(step, rollback=True)
        self.undo_id(driver)

    def restore_online(self, offlined: list[int], zones: dict[int, KernelZone | None]) -> None:
        for index in reversed(offlined):
            with contextlib.suppress(SysfsError):
                if self.sysfs.read(block_path(index)) != BlockState.OFFLINE:
                    continue  # removed with kmem's unbind, or onlined again when kmem re-bound
            movable = zones.get(index) is KernelZone.MOVABLE
            value = OnlineType.ONLINE_MOVABLE if movable else OnlineType.ONLINE_KERNEL
            step = block_step(index, value, "undo: the conversion failed, give the memory back")
            # A failed undo is recorded; the final view shows the block offline.
            with contextlib.suppress(_StepFailed):
                self.write(step, rollback=True)

    # Zone fixes and onlining: each block on its own; one failure does not stop the others.
    def run_block_steps(self, steps: tuple[Step, ...], blocks: tuple[MemoryBlock, ...]) -> None:
        zones = {b.index: b.zone for b in blocks}
        failures: list[str] = []
        skip: set[int] = set()
        moving: int | None = None
        for step in steps:
            # A block being moved (offline, then online in its new zone) is finished first.
            if step.block != moving and self.opts.should_stop():
                failures.append("stopped before finishing")
                break
            moving = step.block if step.action is Action.OFFLINE_BLOCK else None
            if step.block in skip:
                continue
            try:
                self.write(step)
            except _BlockChanged as e:
                log.info("%s: %s; planning again", self.name, e)
                if step.block is not None:
                    skip.add(step.block)
            except _StepFailed as e:
                if self.read().device is None:
                    raise _StepFailed(f"the device disappeared ({e})") from None
                failures.append(str(e))
                if step.block is None:
                    continue
                skip.add(step.block)
                was_online = zones.get(step.block) is not None or step.block in (
                    self.online_at_start or ()
                )
                if step.action is Action.ONLINE_BLOCK and was_online:
                    # Offlined to move zones (or by a rebind) and could not come back as the
                    # rule wants: any zone beats none.
                    self.restore_online([step.block], {step.block: None})
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise _StepFailed(failures[0] + more)

    def check_preconditions(self, step: Step) -> None:
        if step.action is Action.UNBIND and step.driver == DRIVER_KMEM:
            online = [b.index for b in self.read().blocks if b.state is not BlockState.OFFLINE]
            if online:
                self.refuse(
                    step,
                    f"refusing to unbind kmem while memory{online[0]} is still online "
                    "(the kernel would leak the range until reboot)",
                )
        elif step.action is Action.UNBIND:
            users = find_device_users(self.opts.proc_root, self.name)
            if users:
                names = ", ".join(
                    f"{u.comm} (pid {u.pid}"
                    + (", cannot inspect it)" if u.how == "cannot inspect" else ")")
                    for u in users[:5]
                )
                self.refuse(
                    step,
                    f"/dev/{self.name} is in use by {names}; unbinding would kill it with SIGBUS",
                )

    def refuse(self, step: Step, message: str) -> None:
        self.record(StepResult(step, ok=False, error=message))
        raise _StepFailed(message)

    def write(self, step: Step, rollback: bool = False) -> None:
        timeout = self.opts.offline_timeout if step.action is Action.OFFLINE_BLOCK else None
        try:
            self.sysfs.write(step.path, step.value, timeout=timeout)
        except SysfsError as e:
            if e.errno == errno.EINVAL and step.block is not None and not rollback:
                # the current state again is EINVAL: maybe the kernel got there first
                with contextlib.suppress(SysfsError):
                    if self.already_done(step, step.block):
                        self.record(StepResult(step, ok=True))
                        return
            self.record(
                StepResult(step, ok=False, error=e.message, errno=e.errno_name, rollback=rollback)
            )
            raise _StepFailed(e.message) from None
        try:
            problem = self.read_back(step)
        except SysfsError as e:
            problem = e.message
        if (
            problem
            and step.action is Action.NEW_ID
            and step.driver is not None
            and step.device is not None
            and self.still_unbound()
        ):
            # new_id binds only when the driver's match says so; bind asks explicitly.
            self.record(StepResult(step, ok=True, rollback=rollback))
            bind = driver_step(Action.BIND, step.driver, step.device, "bind now")
            self.write(bind, rollback=rollback)
            return
        if problem:
            self.record(StepResult(step, ok=False, error=problem, rollback=rollback))
            raise _StepFailed(problem)
        self.record(StepResult(step, ok=True, rollback=rollback))

    def already_done(self, step: Step, index: int) -> bool:
        """After EINVAL: True when the block already is as the step wants; raises _BlockChanged
        when it is no longer in the state the step was planned from (onlined or offlined
        meanwhile); False when it is as it was (a real refusal)."""
        if step.action not in BLOCK_ACTIONS:
            return False
        text = self.sysfs.read(block_path(index, "state"))
        if text is None:
            return False
        state = BlockState(text)
        if step.action is Action.OFFLINE_BLOCK:
            if state is BlockState.OFFLINE:
                log.info("%s: memory%d is offline already (EINVAL): done", self.name, index)
                return True
            return False
        if state is not BlockState.ONLINE:
            return False
        if self.read_back_block(step, index) is None:
            log.info("%s: memory%d is %s already (EINVAL): done", self.name, index, step.value)
            return True
        zones = " ".join(parse_zones(self.sysfs.read(block_path(index, "valid_zones"))))
        raise _BlockChanged(f"memory{index} came online meanwhile, in {zones or 'a zone'}")

    def still_unbound(self) -> bool:
        device = read_binding(self.sysfs, self.name)
        return device is not None and device.driver is None

    def read_back(self, step: Step) -> str | None:
        """What is wrong after a write that the kernel accepted, or None."""
        if step.block is not None and step.action in BLOCK_ACTIONS:
            return self.read_back_block(step, step.block)
        if step.action is Action.REMOVE_ID:
            return None
        if step.action in (Action.SET_AUTO_ONLINE, Action.RESTORE_AUTO_ONLINE):
            now = self.sysfs.read(step.path)
            return None if now == step.value else f"{step.path} reads {now} after the write"
        device = read_binding(self.sysfs, self.name)
        if device is None:
            return "the device disappeared"
        driver = step.driver
        if step.action is Action.UNBIND and device.driver == driver:
            return f"still bound to {driver} after unbind"
        if step.action in (Action.BIND, Action.NEW_ID) and device.driver != driver:
            return f"{driver} did not bind (driver: {device.driver or 'none'})"
        if step.action is Action.SET_MEMMAP and device.memmap_on_memory != (step.value == "1"):
            return f"memmap_on_memory reads {device.memmap_on_memory} after writing {step.value}"
        return None

    def read_back_block(self, step: Step, index: int) -> str | None:
        text = self.sysfs.read(block_path(index, "state"))
        if text is None:
            return f"memory{index} disappeared"
        state = BlockState(text)
        if step.action is Action.OFFLINE_BLOCK:
            if state is BlockState.OFFLINE:
                return None
            return f"memory{index} is {state} after offline"
        if state is not BlockState.ONLINE:
            return f"memory{index} is {state} after {step.value}"
        # only now: valid_zones of a block that is not online can oops (blocks.read_block)
        zones = parse_zones(self.sysfs.read(block_path(index, "valid_zones")))
        movable = zones == (KernelZone.MOVABLE,)
        wanted = OnlineType.parse(step.value)
        if wanted is OnlineType.ONLINE_MOVABLE and not movable:
            return f"memory{index} came online in {' '.join(zones)}, not Movable"
        if wanted is OnlineType.ONLINE_KERNEL and movable:
            return f"memory{index} came online in Movable, not a kernel zone"
        return None

    def record(self, result: StepResult) -> None:
        self.result.results.append(result)
        step = result.step
        what = f"{step.action} {step.value!r} > {step.path}"
        rule = f" rule={self.rule!r}" if self.rule else ""
        if result.ok:
            log.info("%s: %s: ok%s", self.name, what, rule)
        else:
            log.warning("%s: %s: FAILED: %s%s", self.name, what, result.error, rule)
        if self.opts.on_step is not None:
            self.opts.on_step(self.name, result)


def apply_device(
    sysfs: Sysfs,
    policy: Policy,
    name: str,
    hotplug: HotplugSettings,
    opts: ApplyOptions | None = None,
    *,
    reading: DeviceReading | None = None,
) -> DeviceResult:
    """Bring one device to what its rule wants, as far as the kernel allows; never raises.

    ``reading``: the device as the caller read it a moment ago (``read_device``), planned from
    instead of reading it again; every later round re-reads.
    """
    return _Run(sysfs, policy, name, hotplug, opts or ApplyOptions()).run(reading)


def release_device(
    sysfs: Sysfs,
    name: str,
    hotplug: HotplugSettings,
    reason: str,
    opts: ApplyOptions | None = None,
) -> DeviceResult:
    """Take the device from its driver, so that it can be resized or deleted; never raises.

    kmem: every block offline first (the order of zone_walk_order), then the unbind, which is
    refused while any block is online; device_dax: the unbind, refused while a process has the
    device open or mapped. All or nothing: blocks offlined on the way come back online (in the
    zone they were in) when a later write fails.
    """
    run = _Run(sysfs, Policy(rules=()), name, hotplug, opts or ApplyOptions())
    run.rule = reason
    reading = run.read()
    device = reading.device
    if device is None:
        return run.finish(Outcome.GONE, "", reading)
    run.online_at_start = {b.index for b in reading.blocks if b.online}
    if device.driver is None:
        return run.finish(Outcome.IN_SYNC, "", reading)
    steps = [
        block_step(b.index, OnlineType.OFFLINE, reason)
        for b in zone_walk_order([b for b in reading.blocks if b.state is not BlockState.OFFLINE])
        if device.driver == DRIVER_KMEM
    ]
    steps.append(driver_step(Action.UNBIND, device.driver, name, reason))
    try:
        run.run_structural(tuple(steps), reading.blocks, device.memmap_on_memory)
    except _StepFailed as e:
        return run.finish(run.failure_outcome(), str(e), run.read())
    return run.finish(Outcome.APPLIED, "", run.read())

"""The daemon's sysfs passes: read, decide, act. Runs in the worker thread only.

Everything here belongs to that thread: what daxd knows of each device between passes, which
device owns which memory block, when udev last spoke of each. The event loop hands in a
:class:`Batch` (what to look at, and the policy to look with) and gets back a
:class:`PassReport`; while a pass runs, the statuses and step results it produces are handed to
the loop thread through a :class:`Sink`, and only the loop thread publishes them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from daxd.apply.carving import with_device_rules
from daxd.apply.executor import ApplyOptions, DeviceResult, Outcome, StepResult, apply_device
from daxd.apply.report import plan_entry, result_entry
from daxd.apply.settle import SETTLE_LIMIT, SETTLE_QUIET, progress, wait_settled
from daxd.kernel.model import BlockState, HotplugSettings, KernelState
from daxd.kernel.roots import Roots
from daxd.kernel.scan import DeviceReading, read_device, read_state
from daxd.kernel.sysfs import Sysfs
from daxd.kernel.view import DeviceView, view
from daxd.plan.planner import device_sort_key, plan_device
from daxd.plan.steps import DevicePlan, Verdict
from daxd.policy.model import Policy
from daxd.service.drift import DriftAction, DriftFacts, decide, takes_memory_away
from daxd.service.layouts import LayoutKeeper
from daxd.service.regions import RegionKeeper, RegionStatus
from daxd.service.status import DeviceState, DeviceStatus

log = logging.getLogger("daxd")


@dataclass(frozen=True)
class Batch:
    """One pass's work, as the loop collected it from events and requests."""

    policy: Policy
    names: frozenset[str] | None  # devices to look at; None: every device (a full scan)
    blocks: frozenset[int] = frozenset()  # memory blocks udev named; their owners are looked at
    requested: frozenset[str] = frozenset()  # asked for through daxd: never drift
    request_all: bool = False
    # When udev last spoke of a device, a block (int) or something unknown (None), monotonic.
    seen: tuple[tuple[str | int | None, float], ...] = ()
    offline_timeout: float | None = None  # a request's own; None: the daemon's
    regions: bool = False  # something came or went on the cxl bus: the policy's regions again


@dataclass(frozen=True)
class PassReport:
    hotplug: HotplugSettings | None
    plans: dict[str, dict[str, Any]]  # plan entries (report.plan_entry) of the devices looked at
    results: dict[str, dict[str, Any]]  # apply entries of the requested devices
    gone: frozenset[str]  # devices that disappeared
    diagnostics: tuple[str, ...] | None = None  # what a full read found odd; None: no full read
    regions: tuple[RegionStatus, ...] | None = None  # the policy's regions; None: not looked at
    waiting: tuple[str, ...] = ()  # regions whose memdevs are not all on the cxl bus


class Sink(Protocol):
    """How a pass hands things to the loop thread while it runs."""

    def device(self, status: DeviceStatus) -> None: ...

    def removed(self, name: str) -> None: ...

    def step(self, device: str, result: StepResult) -> None: ...

    def look_again(self, name: str, delay: float) -> None: ...


@dataclass
class Tracked:
    """What daxd knows of one device between passes."""

    known: DeviceView | None = None  # as daxd last saw or left it
    status: DeviceStatus | None = None  # as last handed to the loop
    changed_at: int = 0
    holding: bool = False  # a restore that takes memory away waits for a request
    drift_seen: DeviceView | None = None  # the drift last logged (logged once)


@dataclass
class ReconcilerConfig:
    sysfs: Sysfs
    roots: Roots
    offline_timeout: float
    drift_grace: float
    # How long a device whose memory the kernel is still adding is left to settle before it is
    # planned (daxd/apply/settle.py): at most, and without any progress.
    settle_limit: float = SETTLE_LIMIT
    settle_quiet: float = SETTLE_QUIET


class BindNews:
    """The devices udev announced (``add``) whose bind it has not reported yet: kmem may still
    be adding their memory. The loop thread notes events as they arrive; the worker asks while
    it waits for a device to settle, so this one thing is shared, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._added: set[str] = set()
        self._bound: set[str] = set()  # bind reported since the last add

    def note(self, action: str, name: str) -> None:
        with self._lock:
            if action == "add":
                self._added.add(name)
                self._bound.discard(name)
            elif action in ("bind", "unbind", "remove"):
                self._added.discard(name)
                if action == "bind":
                    self._bound.add(name)
                else:
                    self._bound.discard(name)

    def has_bound(self, name: str) -> bool:
        """udev has reported the device's bind: its driver's probe is over (for kmem: the
        memory is added, and onlined if the kernel was to)."""
        with self._lock:
            return name in self._bound

    def awaiting_bind(self, name: str) -> bool:
        with self._lock:
            return name in self._added


def now_usec() -> int:
    return time.time_ns() // 1000


@dataclass
class Reconciler:
    config: ReconcilerConfig
    sink: Sink
    stop: threading.Event
    tracked: dict[str, Tracked] = field(default_factory=dict)
    block_owner: dict[int, str] = field(default_factory=dict)  # memoryN -> device
    last_event: dict[str | None, float] = field(default_factory=dict)
    hotplug: HotplugSettings | None = None
    passes: int = 0
    news: BindNews = field(default_factory=BindNews)
    # Devices planned before the kernel was done, and what they showed then: not waited for
    # again while they show the same (memory that never arrives would cost every pass a wait).
    given_up: dict[str, tuple[object, ...]] = field(default_factory=dict)
    _regions: RegionKeeper | None = None
    _layouts: LayoutKeeper | None = None

    @property
    def layouts(self) -> LayoutKeeper:
        if self._layouts is None:
            self._layouts = LayoutKeeper(self.config.sysfs)
        return self._layouts

    @property
    def regions(self) -> RegionKeeper:
        if self._regions is None:
            roots = self.config.roots
            self._regions = RegionKeeper(
                self.config.sysfs, roots.proc, roots.runtime, bound=self.news.has_bound
            )
        return self._regions

    def run_pass(self, batch: Batch) -> PassReport:
        self.passes += 1
        self._note_events(batch)
        names = batch.names
        keeper = self.regions
        region_pass = None
        if batch.policy.regions and (names is None or batch.regions):
            # Regions first: the dax devices they bring are then planned in this same pass.
            region_pass = keeper.run(batch.policy)
            if region_pass.built:
                names = None
        elif not batch.policy.regions:
            keeper.status.clear()
        unknown_block = any(b not in self.block_owner for b in batch.blocks)
        layouts = self.layouts
        if (
            batch.policy.layouts
            and names is not None
            and any(layouts.concerns(_region_of(n)) for n in names)
        ):
            names = None  # a device of a laid-out (or unknown) region: the layouts first
        gone: set[str] = set()
        diagnostics: tuple[str, ...] | None = None
        if names is None or unknown_block or self.hotplug is None:
            state = read_state(self.config.sysfs)
            if batch.policy.layouts:
                state = self._lay_out(batch, state)
            else:
                layouts.status.clear()
                layouts.rules = {}
            self.hotplug = state.hotplug
            diagnostics = tuple(str(d) for d in state.diagnostics)
            for d in diagnostics:
                log.warning("sysfs: %s", d)
            gone = set(self.tracked) - set(state.devices)
            chosen = set(state.devices)
            self.block_owner = {b.index: n for n, blocks in state.blocks.items() for b in blocks}
        else:
            chosen = set(names) | {self.block_owner[b] for b in batch.blocks}
        plans: dict[str, dict[str, Any]] = {}
        results: dict[str, dict[str, Any]] = {}
        if layouts.rules:
            batch = replace(batch, policy=with_device_rules(batch.policy, layouts.rules))
        for name in sorted(chosen, key=device_sort_key):
            if self.stop.is_set():
                break
            requested = batch.request_all or name in batch.requested
            if not self._device(batch, name, requested, plans, results):
                gone.add(name)
        for name in gone:
            self._forget(name)
        if region_pass is not None and region_pass.releasing and not self.stop.is_set():
            # Their memory went offline above: the regions can go now.
            region_pass = keeper.run(batch.policy)
        regions = None
        if region_pass is not None or not batch.policy.regions:
            regions = tuple(keeper.status.values())  # frozen: a snapshot for the loop thread
        return PassReport(
            self.hotplug,
            plans,
            results,
            frozenset(gone),
            diagnostics,
            regions=regions,
            waiting=region_pass.waiting if region_pass is not None else (),
        )

    def _lay_out(self, batch: Batch, state: KernelState) -> KernelState:
        """The policy's layouts carved where needed; the state as it is afterwards."""
        opts = ApplyOptions(
            proc_root=self.config.roots.proc,
            offline_timeout=batch.offline_timeout or self.config.offline_timeout,
            runtime_dir=self.config.roots.runtime,
            should_stop=self.stop.is_set,
        )
        done = self.layouts.run(batch.policy, state, opts, requested=batch.request_all)
        if not done.changed:
            return state
        # daxd's own doing, never drift: what it knew of these devices no longer holds.
        for name, device in state.devices.items():
            if device.region_id in done.changed and name in self.tracked:
                self.tracked[name].known = None
        state = read_state(self.config.sysfs)
        self.layouts.refresh(state)
        return state

    def _note_events(self, batch: Batch) -> None:
        for key, at in batch.seen:
            owner = self.block_owner.get(key) if isinstance(key, int) else key
            self.last_event[owner] = max(at, self.last_event.get(owner, 0.0))

    def quiet_for(self, name: str) -> float:
        """Seconds since udev last said something about the device (or an unknown block)."""
        last = max(self.last_event.get(name, 0.0), self.last_event.get(None, 0.0))
        return time.monotonic() - last

    def _device(
        self,
        batch: Batch,
        name: str,
        requested: bool,
        plans: dict[str, dict[str, Any]],
        results: dict[str, dict[str, Any]],
    ) -> bool:
        """Look at one device and act as the rules say; False when it is gone. Says how it
        ended in the journal, one line (outcome_line)."""
        assert self.hotplug is not None
        policy = batch.policy
        reading = read_device(self.config.sysfs, name, self.hotplug)
        not_done = None
        if reading.device is not None:
            reading, not_done = self._settle(name, reading)
        if reading.device is None:
            log.info("%s", outcome_line(name, None, "gone"))
            return False
        for b in reading.blocks:
            self.block_owner[b.index] = name
        tracked = self.tracked.setdefault(name, Tracked())
        current = view(reading.device, reading.blocks, self.hotplug)
        plan = plan_device(
            reading.device, reading.blocks, self.hotplug, policy.match(reading.device)
        )
        if not_done:
            plan = replace(plan, notes=(*plan.notes, not_done))
        drifted = tracked.known is not None and tracked.known != current and not requested
        if drifted and current != tracked.drift_seen:
            log.warning(
                "%s: changed outside daxd: %s", name, describe_change(tracked.known, current)
            )
        tracked.drift_seen = current if drifted else None
        decision = decide(
            DriftFacts(
                changes=plan.verdict is Verdict.CHANGE,
                takes_memory_away=takes_memory_away(plan),
                requested=requested,
                drifted=drifted,
                holding=tracked.holding,
                quiet_for=self.quiet_for(name),
                grace=self.config.drift_grace,
                someone_offlining=any(b.state == BlockState.GOING_OFFLINE for b in reading.blocks),
            )
        )
        tracked.holding = decision.holding
        if decision.action is DriftAction.HOLD:
            message = (
                "changed outside daxd; restoring the policy would take memory offline, "
                "which daxd does only on request (Reconcile, `daxd apply`, reload)"
            )
            if drifted:
                log.warning("%s: %s", name, message)
            tracked.known = current
            self._publish(name, current, plan, DeviceState.DRIFTED, message)
            plans[name] = plan_entry(reading.device, reading.blocks, plan, self.hotplug)
            log.info("%s", outcome_line(name, plan, f"drifted: {message}"))
            return True
        if decision.action is DriftAction.WAIT:
            self.sink.look_again(name, decision.retry_in)
            message = (
                "changed outside daxd; restoring the policy once nothing has changed it for "
                f"{self.config.drift_grace:g} s"
            )
            self._publish(name, current, plan, DeviceState.DRIFTED, message)
            plans[name] = plan_entry(reading.device, reading.blocks, plan, self.hotplug)
            log.info("%s", outcome_line(name, plan, f"drifted: {message}"))
            return True
        if decision.action is DriftAction.REPORT and not requested:
            tracked.known = current
            state, error = plan_state(plan)
            before = tracked.status
            if state is DeviceState.REFUSED and (
                before is None or (before.state, before.last_error) != (state, error)
            ):
                # Say it once in the journal too, not only on D-Bus (e.g. pmem without consent).
                log.warning("%s: rule %r not applied: %s", name, plan.rule, error)
            self._publish(name, current, plan, state, error)
            plans[name] = plan_entry(reading.device, reading.blocks, plan, self.hotplug)
            log.info("%s", outcome_line(name, plan, plan_words(plan)))
            return True
        # APPLY, or a request (whose answer is an apply result even when nothing is to do).
        tracked.drift_seen = None
        if plan.verdict is Verdict.CHANGE:
            self._publish(name, current, plan, DeviceState.PENDING, "")
        began = time.monotonic()
        result = self._apply(batch, name, reading, plan)
        log.info("%s", outcome_line(name, result.plan or plan, result_words(result, began, plan)))
        final = result.final or current
        tracked.known = final
        state, error = result_state(result)
        if state is DeviceState.REFUSED and (
            tracked.status is None
            or (tracked.status.state, tracked.status.last_error) != (state, error)
        ):
            log.warning("%s: rule %r not applied: %s", name, plan.rule, error)
        if drifted and state is DeviceState.APPLIED and result.results:
            log.info("%s: restored to rule %r", name, result.plan.rule if result.plan else "")
        self._publish(name, final, result.plan or plan, state, error)
        for b in result.final_blocks:  # the executor's last read of the device
            self.block_owner[b.index] = name
        if requested:
            results[name] = result_entry(reading.device, reading.blocks, result, self.hotplug)
        after = self._plan_after(policy, result, plan)
        if result.final_device is not None:
            plans[name] = plan_entry(result.final_device, result.final_blocks, after, self.hotplug)
        return result.outcome is not Outcome.GONE

    def _settle(self, name: str, reading: DeviceReading) -> tuple[DeviceReading, str | None]:
        """The device once the kernel is done adding its memory (daxd/apply/settle.py), and,
        when daxd gave up waiting, the note the plan gets."""
        assert self.hotplug is not None
        settled = wait_settled(
            self.config.sysfs,
            name,
            self.hotplug,
            reading,
            bind_pending=lambda: self.news.awaiting_bind(name),
            stop=self.stop,
            skip=lambda seen: self.given_up.get(name) == seen,
            limit=self.config.settle_limit,
            quiet=self.config.settle_quiet,
        )
        if settled.left is None:
            self.given_up.pop(name, None)
            return settled.reading, None
        self.given_up[name] = progress(settled.reading)
        return settled.reading, f"planned before the kernel was done adding memory: {settled.left}"

    def _apply(
        self, batch: Batch, name: str, reading: DeviceReading, plan: DevicePlan
    ) -> DeviceResult:
        assert self.hotplug is not None
        progress = _Progress(self, name, plan, reading)
        return apply_device(
            self.config.sysfs,
            batch.policy,
            name,
            self.hotplug,
            ApplyOptions(
                proc_root=self.config.roots.proc,
                offline_timeout=batch.offline_timeout or self.config.offline_timeout,
                runtime_dir=self.config.roots.runtime,
                should_stop=self.stop.is_set,
                on_step=progress.step,
            ),
            reading=reading,  # just read: the apply plans from what the checks above saw
        )

    def _plan_after(self, policy: Policy, result: DeviceResult, before: DevicePlan) -> DevicePlan:
        """What a plan says now, from the executor's last read (no new sysfs read)."""
        if result.final_device is None or self.hotplug is None:
            return before
        device = result.final_device
        return plan_device(device, result.final_blocks, self.hotplug, policy.match(device))

    def _forget(self, name: str) -> None:
        if self.tracked.pop(name, None) is not None:
            log.info("%s: removed", name)
            self.sink.removed(name)
        self.block_owner = {i: n for i, n in self.block_owner.items() if n != name}
        self.last_event.pop(name, None)
        self.given_up.pop(name, None)

    def _publish(
        self, name: str, current: DeviceView, plan: DevicePlan, state: DeviceState, error: str
    ) -> None:
        tracked = self.tracked.setdefault(name, Tracked())
        status = make_status(current, plan, state, error, tracked.changed_at)
        previous = tracked.status
        if previous is not None and status == previous:
            return
        if previous is None or previous.state != state or previous.last_error != error:
            tracked.changed_at = now_usec()
            status = make_status(current, plan, state, error, tracked.changed_at)
        tracked.status = status
        self.sink.device(status)


# A device's state is published at most this often while its blocks are being moved (a 32 GiB
# device takes 256 block writes): monitors see the conversion advance, the bus is not flooded.
PROGRESS_INTERVAL = 0.5


class _Progress:
    """Passes every step on, and now and then what the device looks like half-way."""

    def __init__(
        self, reconciler: Reconciler, name: str, plan: DevicePlan, reading: DeviceReading
    ) -> None:
        self._r = reconciler
        self._name = name
        self._plan = plan
        self._known = {b.index: b for b in reading.blocks}
        self._last = time.monotonic()

    def step(self, device: str, result: StepResult) -> None:
        self._r.sink.step(device, result)
        now = time.monotonic()
        if result.step.block is None or now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        hotplug = self._r.hotplug
        assert hotplug is not None
        reading = read_device(self._r.config.sysfs, self._name, hotplug, self._known)
        if reading.device is None:
            return
        self._known = {b.index: b for b in reading.blocks}
        current = view(reading.device, reading.blocks, hotplug)
        self._r._publish(self._name, current, self._plan, DeviceState.PENDING, "")


def _region_of(name: str) -> int:
    """R of daxR.N (-1 for a name that is not a dax device's)."""
    try:
        return int(name[3:].split(".", 1)[0])
    except ValueError:
        return -1


def describe_change(before: DeviceView | None, after: DeviceView) -> str:
    if before is None:
        return "first seen"
    parts = []
    for attr in ("mode", "zone", "memmap_on_memory", "blocks_online", "blocks_total"):
        a, b = getattr(before, attr), getattr(after, attr)
        if a != b:
            parts.append(f"{attr} {a!r} -> {b!r}")
    return ", ".join(parts) or "no visible change"


def outcome_line(name: str, plan: DevicePlan | None, what: str) -> str:
    """The journal's line for a device at the end of a pass (docs/cli.md "The journal"):

        dax0.0: rule "cxl-movable" (/etc/daxd/policy.yaml:3): applied (4 steps, 1.2 s)

    One line whatever the texts hold; the rule part only when a rule matches."""
    head = f"{name}: "
    if plan is not None and plan.rule:
        rule = json.dumps(plan.rule, ensure_ascii=False)
        head += f"rule {rule} ({plan.rule_location}): "
    return " ".join((head + what).splitlines())


def plan_words(plan: DevicePlan) -> str:
    """What a plan with nothing to do says of the device: in sync, refused, left alone."""
    if plan.verdict is Verdict.REFUSED:
        return f"refused: {plan.reason}"
    if plan.verdict is Verdict.IGNORED:
        return "the rule says ignore, left alone"
    if plan.verdict is Verdict.UNMANAGED:
        return "no rule matches, left alone" if plan.rule is None else f"left alone: {plan.reason}"
    if plan.verdict is Verdict.CHANGE:
        return "not applied yet"
    return "in sync"


def result_words(result: DeviceResult, began: float, plan: DevicePlan) -> str:
    """What an apply did: applied (N steps, T s), in sync, refused, failed, stopped, gone."""
    n = len(result.results)
    took = f"({n} step{'' if n == 1 else 's'}, {time.monotonic() - began:.1f} s)"
    if result.outcome is Outcome.APPLIED:
        return f"applied {took}"
    if result.outcome is Outcome.GONE:
        return "gone"
    if result.outcome in (Outcome.FAILED, Outcome.STOPPED, Outcome.REFUSED):
        done = f" {took}" if n else ""
        return f"{result.outcome}{done}: {result.error or result.outcome}"
    return plan_words(result.plan or plan)


def plan_state(plan: DevicePlan) -> tuple[DeviceState, str]:
    if plan.verdict in (Verdict.UNMANAGED, Verdict.IGNORED):
        return DeviceState.UNMANAGED, ""
    if plan.verdict is Verdict.REFUSED:
        return DeviceState.REFUSED, plan.reason
    return DeviceState.APPLIED, ""


def result_state(result: DeviceResult) -> tuple[DeviceState, str]:
    if result.outcome in (Outcome.APPLIED, Outcome.IN_SYNC):
        return DeviceState.APPLIED, ""
    if result.outcome is Outcome.REFUSED:
        return DeviceState.REFUSED, result.error
    if result.outcome in (Outcome.UNMANAGED, Outcome.IGNORED):
        return DeviceState.UNMANAGED, ""
    return DeviceState.FAILED, result.error or str(result.outcome)


def make_status(
    v: DeviceView,
    plan: DevicePlan,
    state: DeviceState,
    error: str,
    changed_at: int,
) -> DeviceStatus:
    """What is published of a device. memmap_on_memory is the view's, what is in effect
    (kernel.model.memmap_in_effect): a CXL device's attribute reads 1 even while the global
    parameter is off, and then the memmap is not placed on the device."""
    return DeviceStatus(
        name=v.name,
        provider=v.provider,
        size=v.size,
        numa_node=-1 if v.numa_node is None else v.numa_node,
        target_node=-1 if v.target_node is None else v.target_node,
        driver=v.driver,
        mode="other" if v.mode.startswith("other:") else v.mode,
        zone=published_zone(v),
        memmap_on_memory=bool(v.memmap_on_memory),
        blocks_online=v.blocks_online,
        blocks_total=v.blocks_total,
        rule=plan.rule or "",
        desired_mode=plan.desired.mode if plan.desired else ("ignore" if plan.rule else ""),
        state=state,
        last_error=error,
        last_change=changed_at,
        blocks_movable=v.blocks_movable,
        blocks_normal=v.blocks_normal,
        cxl=v.cxl,
    )


def published_zone(v: DeviceView) -> str:
    """movable / normal (every online block in that kind of zone), none (no block online), or
    mixed (some in each, or in a zone the kernel does not name clearly)."""
    if v.blocks_online == 0:
        return "none"
    if v.blocks_movable == v.blocks_online:
        return "movable"
    if v.blocks_normal == v.blocks_online:
        return "normal"
    return "mixed"

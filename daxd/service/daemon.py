"""`daxd run`: keep every DAX device matching the policy, follow udev, report what was done.

One asyncio loop, no polling: it sleeps until udev, a signal, a D-Bus call or the watchdog
timer wakes it.  Sysfs work runs in one worker thread, one device at a time, so the loop keeps
answering D-Bus and pinging the watchdog while a block is being offlined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from daxd import __version__
from daxd.apply import autoonline
from daxd.apply.executor import ApplyOptions, DeviceResult, Outcome, StepResult, apply_device
from daxd.kernel.model import HotplugSettings
from daxd.kernel.scan import read_device, read_state
from daxd.kernel.sysfs import Sysfs, SysfsError, install_interrupt_handler
from daxd.kernel.view import DeviceView, view
from daxd.plan.planner import device_sort_key, plan_all, plan_device
from daxd.plan.steps import Action, DevicePlan, Verdict
from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy
from daxd.policy.model import Policy
from daxd.service.conflicts import find_conflicts
from daxd.service.events import Event, EventSource, Overflow
from daxd.service.notify import Notifier, watchdog_interval
from daxd.service.status import DeviceState, DeviceStatus, ManagerStatus

log = logging.getLogger("daxd")


class PolicyRejected(Exception):
    """A reload found the new policy invalid; str() is the located errors."""


class Publisher(Protocol):
    """Where the daemon's state goes (the D-Bus API, or nothing)."""

    def set_manager(self, status: ManagerStatus) -> None: ...

    def set_device(self, status: DeviceStatus) -> None: ...

    def remove_device(self, name: str) -> None: ...

    def action_completed(self, device: str, action: str, result: str, message: str) -> None: ...


class NullPublisher:
    def set_manager(self, status: ManagerStatus) -> None:
        pass

    def set_device(self, status: DeviceStatus) -> None:
        pass

    def remove_device(self, name: str) -> None:
        pass

    def action_completed(self, device: str, action: str, result: str, message: str) -> None:
        pass


@dataclass
class DaemonConfig:
    sysfs: Sysfs
    policy_path: Path
    policy_dir: Path | None = None
    strict_policy: bool = True  # refuse policy files others could have written
    proc_root: Path = Path("/proc")
    root: Path = Path("/")  # where udev rules and daxctl config are looked for
    offline_timeout: float = 30.0
    settle: float = 0.05  # quiet time that ends an event burst
    max_settle: float = 1.0  # an endless burst still gets handled this often
    # A change made outside daxd is undone only once nothing has touched the device for this
    # long: `daxctl reconfigure-device` offlines every block, then unbinds kmem; onlining a block
    # in between makes that unbind leak the range until reboot.
    drift_grace: float = 5.0
    # Where a switched auto_online_blocks is recorded (daxd/apply/autoonline.py); None: nowhere.
    runtime_dir: Path | None = None


@dataclass
class Tracked:
    """What daxd knows of one device between reconciles."""

    known: DeviceView | None = None  # as daxd last saw or left it
    status: DeviceStatus | None = None
    changed_at: int = 0
    # Drift whose undoing takes memory away is left alone until asked; later events too.
    holding: bool = False
    drift_seen: DeviceView | None = None  # the drift last logged (logged once)


def now_usec() -> int:
    return time.time_ns() // 1000


def takes_memory_away(plan: DevicePlan) -> bool:
    """Whether the plan ends with less memory online or kmem gone (not a mere zone move)."""
    onlined = {s.block for s in plan.steps if s.action is Action.ONLINE_BLOCK}
    return any(
        (s.action is Action.OFFLINE_BLOCK and s.block not in onlined)
        or (s.action is Action.UNBIND and "/kmem/" in s.path)
        for s in plan.steps
    )


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        events: EventSource | None = None,
        notifier: Notifier | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.config = config
        self.events = events
        self.notifier = notifier or Notifier()
        self.publisher: Publisher = publisher or NullPublisher()
        self.policy = Policy(rules=())
        self.policy_error = ""
        self.policy_loaded_at = 0
        self.conflicts: tuple[str, ...] = ()
        self.hotplug: HotplugSettings | None = None
        self.tracked: dict[str, Tracked] = {}
        self.block_owner: dict[int, str] = {}  # memoryN -> device, to route memory events
        self._pending: set[str] = set()
        self._pending_all = False
        self._force: set[str] = set()  # apply fully, even what drift alone would not restore
        self._force_all = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stop = threading.Event()
        self._stopped = asyncio.Event()
        self._lock = asyncio.Lock()  # one sysfs pass at a time
        self._loop: asyncio.AbstractEventLoop | None = None  # set when the worker starts
        self._last_event: dict[str | None, float] = {}  # device (None: unknown) -> monotonic
        self._later: dict[str, asyncio.TimerHandle] = {}  # drift waiting for quiet, by device
        self.reconciles = 0  # passes run (benchmarks and tests read it)
        self.ready = False
        self.exit_code = 0  # 1 after fail(): systemd (Restart=on-failure) starts daxd again

    # ---- policy -------------------------------------------------------------------------------

    def load_policy(self) -> bool:
        """Load the policy; on error keep the one in force and say why. True when loaded."""
        try:
            policy = load_policy(
                self.config.policy_path, self.config.policy_dir, strict=self.config.strict_policy
            )
        except PolicyError as e:
            self.policy_error = str(e)
            log.error("policy rejected, keeping the previous one:\n%s", e)
            return False
        self.policy = policy
        self.policy_error = ""
        self.policy_loaded_at = now_usec()
        log.info(
            "policy loaded from %s: %d rule(s)", ", ".join(policy.sources) or "-", len(policy.rules)
        )
        return True

    async def reload(self, *, notify_reloading: bool = True) -> None:
        """SIGHUP / D-Bus Reload: new policy or a PolicyError; then re-apply everything.

        ``notify_reloading=False`` for the D-Bus call that ExecReload= makes: systemd is in its
        reload state already, and a RELOADING=1 would make it wait for a READY=1 after the
        ExecReload= command ends; were daxd to die in the middle, systemd would wait for that
        READY=1 until the watchdog or the reload timeout instead of restarting daxd at once.
        """
        if notify_reloading:
            self.notifier.reloading()
        ok = self.load_policy()
        self.refresh_conflicts()
        if ok:
            await self.reconcile(force=True)
        self.publish_manager()
        self.notifier.ready(self.summary())
        if not ok:
            raise PolicyRejected(self.policy_error)

    async def reconcile(self, force: bool = True) -> None:
        """Re-read and apply every device now (D-Bus Reconcile, after reload)."""
        self.request(None, force=force)
        await self.wait_idle()

    # ---- scheduling ---------------------------------------------------------------------------

    def request(self, name: str | None, force: bool = False) -> None:
        """Ask for a device (None: all) to be re-read and reconciled soon."""
        if name is None:
            self._pending_all = True
            self._force_all |= force
        else:
            self._pending.add(name)
            if force:
                self._force.add(name)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def on_event(self, event: Event) -> None:
        device = event.device
        if device is not None:
            self._last_event[device] = time.monotonic()
            self.request(device)
        elif event.block is not None:
            owner = self.block_owner.get(event.block)
            self._last_event[owner] = time.monotonic()
            # A block no known device owns: a device we have not read yet; read everything.
            self.request(owner)
        # Other subsystems cannot reach here: the sources filter on dax and memory.

    def on_readable(self) -> None:
        assert self.events is not None
        try:
            batch = self.events.drain()
        except Overflow as e:
            log.warning("udev events were lost (%s); re-reading every device", e)
            self.request(None)
            return
        for ev in batch:
            self.on_event(ev)

    async def worker(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            if not (self._pending or self._pending_all):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.settle()
            if self._stop.is_set():
                break
            names = None if self._pending_all else set(self._pending)
            force = set(self._force) if not self._force_all else None
            force_all = self._force_all
            self._pending.clear()
            self._pending_all = False
            self._force.clear()
            self._force_all = False
            async with self._lock:
                try:
                    await loop.run_in_executor(None, self.reconcile_sync, names, force, force_all)
                except Exception:
                    log.exception("reconcile failed unexpectedly; will retry on the next event")
            self.publish_manager()
            self.notifier.status(self.summary())
        self._idle.set()

    async def settle(self) -> None:
        """Let a burst of events finish (a CXL device brings hundreds) before reading sysfs."""
        start = time.monotonic()
        while time.monotonic() - start < self.config.max_settle:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.settle)
            except TimeoutError:
                return

    # ---- the sysfs pass (worker thread) ------------------------------------------------------

    def reconcile_sync(
        self,
        names: set[str] | None,
        force: set[str] | None,
        force_all: bool,
    ) -> None:
        self.reconciles += 1
        sysfs = self.config.sysfs
        if names is None or self.hotplug is None:
            state = read_state(sysfs)
            self.hotplug = state.hotplug
            for d in state.diagnostics:
                log.warning("sysfs: %s", d)
            gone = set(self.tracked) - set(state.devices)
            names = set(state.devices)
            self.block_owner = {b.index: n for n, blocks in state.blocks.items() for b in blocks}
        else:
            gone = set()
        for name in sorted(names, key=device_sort_key):
            if self._stop.is_set():
                return
            forced = force_all or (force is not None and name in force)
            self.reconcile_device(name, forced)
        for name in gone:
            self.forget(name)

    def reconcile_device(self, name: str, forced: bool) -> None:
        assert self.hotplug is not None
        reading = read_device(self.config.sysfs, name, self.hotplug)
        if reading.device is None:
            self.forget(name)
            return
        for b in reading.blocks:
            self.block_owner[b.index] = name
        tracked = self.tracked.setdefault(name, Tracked())
        current = view(reading.device, reading.blocks)
        rule = self.policy.match(reading.device)
        plan = plan_device(reading.device, reading.blocks, self.hotplug, rule)
        drifted = tracked.known is not None and tracked.known != current and not forced
        if drifted and current != tracked.drift_seen:
            log.warning(
                "%s: changed outside daxd: %s", name, describe_change(tracked.known, current)
            )
        tracked.drift_seen = current if drifted else None
        if forced or plan.verdict is not Verdict.CHANGE:
            tracked.holding = False
        if plan.verdict is Verdict.CHANGE and takes_memory_away(plan):
            tracked.holding |= drifted
        if tracked.holding:
            message = (
                "changed outside daxd; restoring the policy would take memory offline, "
                "which daxd does only on request (Reconcile, `daxd apply`, reload)"
            )
            if drifted:
                log.warning("%s: %s", name, message)
            tracked.known = current
            self.publish_device(name, current, plan, DeviceState.DRIFTED, message)
            return
        if plan.verdict is not Verdict.CHANGE:
            tracked.known = current
            state, error = plan_state(plan)
            before = tracked.status
            if state is DeviceState.REFUSED and (
                before is None or (before.state, before.last_error) != (state, error)
            ):
                # Say it once in the journal too, not only on D-Bus (e.g. pmem without consent).
                log.warning("%s: rule %r not applied: %s", name, plan.rule, error)
            self.publish_device(name, current, plan, state, error)
            return
        quiet_for = self.config.drift_grace - self.since_last_event(name)
        offlining = any(b.state == "going-offline" for b in reading.blocks)  # someone is at it
        if drifted and (quiet_for > 0 or offlining):
            # Maybe someone is still at it: wait until the device is left alone, and look again.
            self.post(self._request_later, name, quiet_for if quiet_for > 0 else 1.0)
            message = (
                "changed outside daxd; restoring the policy once nothing has changed it for "
                f"{self.config.drift_grace:g} s"
            )
            self.publish_device(name, current, plan, DeviceState.DRIFTED, message)
            return
        tracked.drift_seen = None
        self.publish_device(name, current, plan, DeviceState.PENDING, "")
        result = apply_device(
            self.config.sysfs,
            self.policy,
            name,
            self.hotplug,
            ApplyOptions(
                proc_root=self.config.proc_root,
                offline_timeout=self.config.offline_timeout,
                runtime_dir=self.config.runtime_dir,
                should_stop=self._stop.is_set,
                on_step=lambda dev, r: self.post(self.step_done, dev, r),
            ),
            reading=reading,  # just read: the apply plans from what the checks above saw
        )
        final = result.final or current
        tracked.known = final
        state, error = result_state(result)
        if drifted and state is DeviceState.APPLIED:
            log.info("%s: restored to rule %r", name, result.plan.rule if result.plan else "")
        self.publish_device(name, final, result.plan or plan, state, error)
        for b in result.final_blocks:  # the executor's last read of the device
            self.block_owner[b.index] = name

    def since_last_event(self, name: str) -> float:
        """Seconds since udev last said something about the device (or an unknown block)."""
        last = max(self._last_event.get(name, 0.0), self._last_event.get(None, 0.0))
        return time.monotonic() - last

    def _request_later(self, name: str, delay: float) -> None:
        if self._loop is not None:
            previous = self._later.pop(name, None)
            if previous is not None:
                previous.cancel()
            self._later[name] = self._loop.call_later(delay, self.request, name)

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the loop thread: the publisher is not thread-safe."""
        if self._loop is None:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def step_done(self, device: str, r: StepResult) -> None:
        result = "ok" if r.ok else ("rolled-back" if r.rollback else "failed")
        message = r.error or r.step.reason
        self.publisher.action_completed(
            device, f"{r.step.action} {r.step.value} > {r.step.path}", result, message
        )

    def forget(self, name: str) -> None:
        if self.tracked.pop(name, None) is not None:
            log.info("%s: removed", name)
            self.post(self.publisher.remove_device, name)
        self.block_owner = {i: n for i, n in self.block_owner.items() if n != name}

    def publish_device(
        self,
        name: str,
        current: DeviceView,
        plan: DevicePlan,
        state: DeviceState,
        error: str,
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
        self.post(self.publisher.set_device, status)

    # ---- reporting ----------------------------------------------------------------------------

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.tracked.values():
            if t.status is not None:
                counts[t.status.state] = counts.get(t.status.state, 0) + 1
        parts = [f"{n} {s}" for s, n in sorted(counts.items())]
        text = f"{len(self.tracked)} device(s)" + (": " + ", ".join(parts) if parts else "")
        if self.policy_error:
            text += "; policy rejected (previous one in force)"
        return text

    def manager_status(self) -> ManagerStatus:
        return ManagerStatus(
            version=__version__,
            policy_path=str(self.config.policy_path),
            policy_error=self.policy_error,
            policy_loaded_at=self.policy_loaded_at,
            summary=self.summary(),
            conflicts=self.conflicts,
        )

    def publish_manager(self) -> None:
        self.publisher.set_manager(self.manager_status())

    def refresh_conflicts(self) -> None:
        if self.hotplug is None:
            return
        found = tuple(find_conflicts(self.config.root, self.hotplug))
        for c in found:
            if c not in self.conflicts:
                log.warning("conflict: %s", c)
        self.conflicts = found

    def plan_json(self) -> str:
        """The plan for every device as JSON; reads sysfs, changes nothing."""
        from daxd.apply.report import document, plan_entry

        state = read_state(self.config.sysfs)
        plans = plan_all(state, self.policy)
        entries = [plan_entry(state.devices[p.device], state.blocks_of(p.device), p) for p in plans]
        return document("plan", state.hotplug, entries, diagnostics=state.diagnostics)

    # ---- life cycle ---------------------------------------------------------------------------

    async def run(self, bus_setup: Callable[[Daemon], object] | None = None) -> int:
        loop = asyncio.get_running_loop()
        install_interrupt_handler()
        self.load_policy()
        if self.policy_error:
            log.error("starting with no rules in force: the policy is invalid")
        if self.config.runtime_dir is not None:
            done = autoonline.recover(self.config.sysfs, self.config.runtime_dir)
            if done:
                log.warning("%s", done)
        try:
            self.hotplug = read_state(self.config.sysfs).hotplug
        except SysfsError as e:
            log.error("cannot read sysfs: %s", e)
            return 1
        self.refresh_conflicts()
        if bus_setup is not None:
            maybe = bus_setup(self)
            if asyncio.iscoroutine(maybe):
                await maybe
        self.publish_manager()
        if self.events is not None:
            loop.add_reader(self.events.fileno(), self.on_readable)
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        for sig in stop_signals:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload_quietly()))
        worker = loop.create_task(self.worker())
        watchdog = loop.create_task(self.watchdog())
        # Coldplug: READY only once the devices present now match the policy.
        self.request(None, force=True)
        await self.wait_idle()
        self.ready = True
        self.notifier.ready(self.summary())
        log.info("ready: %s", self.summary())
        await self._stopped.wait()
        self.notifier.stopping()
        log.info("stopping")
        self._wake.set()
        await worker
        watchdog.cancel()
        if self.events is not None:
            loop.remove_reader(self.events.fileno())
            self.events.close()
        for sig in (*stop_signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        return self.exit_code

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(PolicyRejected):  # logged and published by reload()
            await self.reload()

    def stop(self) -> None:
        """SIGTERM: finish the write in flight, roll back a half-done conversion, then exit."""
        self._stop.set()
        self._stopped.set()

    def fail(self, reason: str) -> None:
        """Something daxd cannot work without is gone (the system bus): stop as on SIGTERM,
        then exit non-zero so that systemd (Restart=on-failure) starts daxd again."""
        if self._stop.is_set():
            return
        log.error("%s; exiting so that systemd starts daxd again", reason)
        self.exit_code = 1
        self.stop()

    async def watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def describe_change(before: DeviceView | None, after: DeviceView) -> str:
    if before is None:
        return "first seen"
    parts = []
    for attr in ("mode", "zone", "memmap_on_memory", "blocks_online", "blocks_total"):
        a, b = getattr(before, attr), getattr(after, attr)
        if a != b:
            parts.append(f"{attr} {a!r} -> {b!r}")
    return ", ".join(parts) or "no visible change"


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
    v: DeviceView, plan: DevicePlan, state: DeviceState, error: str, changed_at: int
) -> DeviceStatus:
    return DeviceStatus(
        name=v.name,
        provider=v.provider,
        size=v.size,
        numa_node=-1 if v.numa_node is None else v.numa_node,
        target_node=-1 if v.target_node is None else v.target_node,
        driver=v.driver,
        mode=v.mode,
        zone=v.zone,
        memmap_on_memory="" if v.memmap_on_memory is None else str(v.memmap_on_memory).lower(),
        blocks_online=v.blocks_online,
        blocks_total=v.blocks_total,
        rule=plan.rule or "",
        desired_mode=plan.desired.mode if plan.desired else ("ignore" if plan.rule else ""),
        state=state,
        last_error=error,
        last_change=changed_at,
    )

"""`daxd run`: keep every DAX device matching the policy, follow udev, report what was done.

One asyncio loop, no polling: it sleeps until udev, a signal, a D-Bus call or the watchdog
timer wakes it. The loop thread owns the policy, the requests and everything published; sysfs
passes run in one worker thread (daxd/service/reconciler.py), one at a time, which owns what
daxd knows of the devices. A pass gets an immutable :class:`Batch` and returns a
:class:`PassReport`; what it produces meanwhile reaches the loop through ``call_soon_threadsafe``.
Calls open to every user (Plan, properties) are answered from what the last pass computed.

The daemon is the only writer: it holds the writer lock (daxd/apply/writer_lock.py) for as long
as it runs, and `daxd apply` asks it (:meth:`Daemon.apply`) instead of writing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from daxd import __version__
from daxd.apply import autoonline
from daxd.apply.executor import StepResult
from daxd.apply.writer_lock import LockUnavailable, WriterLock
from daxd.kernel.layout import device_dir
from daxd.kernel.model import HotplugSettings
from daxd.kernel.roots import DEFAULT_OFFLINE_TIMEOUT, Roots
from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import SAFE_COMPONENT, Sysfs, SysfsError, install_interrupt_handler
from daxd.plan.planner import device_sort_key
from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy
from daxd.policy.model import Policy
from daxd.service.conflicts import find_conflicts
from daxd.service.events import Event, EventSource, Overflow
from daxd.service.notify import Notifier, watchdog_interval
from daxd.service.reconciler import Batch, PassReport, Reconciler, ReconcilerConfig, now_usec
from daxd.service.regions import RegionStatus
from daxd.service.status import DeviceStatus, ManagerStatus

log = logging.getLogger("daxd")

_LOCK_POLL = 0.1  # seconds between looks at a writer lock held by a `daxd apply` at start


class PolicyRejected(Exception):
    """A reload found the new policy invalid; str() is the located errors."""


class NoSuchDevice(Exception):
    """Apply named a device the dax bus does not have; str() names it."""


class Publisher(Protocol):
    """Where the daemon's state goes (the D-Bus API, or nothing). Loop thread only."""

    def set_manager(self, status: ManagerStatus) -> None: ...

    def set_device(self, status: DeviceStatus) -> None: ...

    def remove_device(self, name: str) -> None: ...

    def set_region(self, status: RegionStatus) -> None: ...

    def remove_region(self, name: str) -> None: ...

    def action_completed(self, device: str, action: str, result: str, message: str) -> None: ...


class NullPublisher:
    def set_manager(self, status: ManagerStatus) -> None:
        pass

    def set_device(self, status: DeviceStatus) -> None:
        pass

    def remove_device(self, name: str) -> None:
        pass

    def set_region(self, status: RegionStatus) -> None:
        pass

    def remove_region(self, name: str) -> None:
        pass

    def action_completed(self, device: str, action: str, result: str, message: str) -> None:
        pass


@dataclass
class DaemonConfig:
    policy_path: Path
    roots: Roots = field(default_factory=Roots)
    sysfs: Sysfs | None = None  # None: Sysfs(roots.sys); tests pass a fake kernel's
    policy_dir: Path | None = None
    strict_policy: bool = True  # refuse policy files others could have written
    offline_timeout: float = DEFAULT_OFFLINE_TIMEOUT
    settle: float = 0.05  # quiet time that ends an event burst
    max_settle: float = 1.0  # an endless burst still gets handled this often
    # A change made outside daxd is undone only once nothing has touched the device for this
    # long (daxd/service/drift.py says why).
    drift_grace: float = 5.0
    # At start, how long the memdevs of the policy's regions are waited for before READY
    # (cxl_pci probes them as udev loads it; one that never comes is reported).
    region_wait: float = 30.0

    def the_sysfs(self) -> Sysfs:
        if self.sysfs is None:
            self.sysfs = Sysfs(self.roots.sys)
        return self.sysfs


@dataclass
class _Requests:
    """What the loop collected for the next pass (loop thread only)."""

    names: set[str] = field(default_factory=set)
    blocks: set[int] = field(default_factory=set)
    everything: bool = False
    requested: set[str] = field(default_factory=set)
    request_all: bool = False
    seen: dict[str | int | None, float] = field(default_factory=dict)
    waiters: list[asyncio.Future[PassReport]] = field(default_factory=list)
    offline_timeout: float | None = None  # the longest a request asked for
    regions: bool = False  # news from the cxl bus

    @property
    def empty(self) -> bool:
        return not (self.names or self.blocks or self.everything or self.regions)


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        events: EventSource | None = None,
        notifier: Notifier | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.config = config
        self.sysfs = config.the_sysfs()
        self.events = events
        self.notifier = notifier or Notifier()
        self.publisher: Publisher = publisher or NullPublisher()
        # Loop thread: the policy, the requests, what is published.
        self.policy = Policy(rules=())
        self.policy_error = ""
        self.policy_loaded_at = 0
        self.conflicts: tuple[str, ...] = ()
        self.hotplug: HotplugSettings | None = None  # as the last pass read it
        self.diagnostics: tuple[str, ...] = ()  # what the last full read of sysfs found odd
        self.published: dict[str, DeviceStatus] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._plan_records: tuple[dict[str, Any], ...] = ()
        self._requests = _Requests()
        self._later: dict[str, asyncio.TimerHandle] = {}  # drift waiting for quiet, by device
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._cxl_news = asyncio.Event()  # a memdev or region came or went
        self.region_status: tuple[RegionStatus, ...] = ()  # the policy's, as last looked at
        self.published_regions: dict[str, RegionStatus] = {}  # what the publisher was given
        self._stop = threading.Event()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lock = WriterLock(config.roots.runtime, "daxd run") if config.roots.runtime else None
        # Worker thread: one, so that passes never overlap; it owns the reconciler's state.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daxd-pass")
        self.reconciler = Reconciler(
            ReconcilerConfig(
                sysfs=self.sysfs,
                roots=config.roots,
                offline_timeout=config.offline_timeout,
                drift_grace=config.drift_grace,
            ),
            sink=_LoopSink(self),
            stop=self._stop,
        )
        self.ready = False
        self.exit_code = 0  # 1 after fail(): systemd (Restart=on-failure) starts daxd again

    @property
    def regions(self) -> tuple[dict[str, Any], ...]:
        """The policy's regions as last looked at, as `daxd list` shows them."""
        return tuple(s.json() for s in self.region_status)

    @property
    def reconciles(self) -> int:
        """Passes run (benchmarks and tests read it)."""
        return self.reconciler.passes

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
        regions = f", {len(policy.regions)} region(s)" if policy.regions else ""
        log.info(
            "policy loaded from %s: %d rule(s)%s",
            ", ".join(policy.sources) or "-",
            len(policy.rules),
            regions,
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
            await self.run_pass(None)
        self.publish_manager()
        self.notifier.ready(self.summary())
        if not ok:
            raise PolicyRejected(self.policy_error)

    async def reconcile(self) -> None:
        """Re-read and apply every device now (D-Bus Reconcile)."""
        await self.run_pass(None)

    async def apply(
        self, names: Sequence[str], offline_timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """`daxd apply`: the policy as it is on disk, then the named devices (or all) now.

        A policy that does not load raises PolicyRejected and keeps the one in force; a name the
        dax bus does not have raises NoSuchDevice before anything is done. Returns the entries
        of the document `daxd apply --json` prints (daxd/apply/report.py result_entry), one per
        device.
        """
        chosen = list(dict.fromkeys(names))
        missing = [n for n in chosen if not self._device_exists(n)]
        if missing:
            raise NoSuchDevice(f"no such DAX device: {', '.join(missing)}")
        if not self.load_policy():
            self.publish_manager()
            raise PolicyRejected(self.policy_error)
        self.refresh_conflicts()
        self.publish_manager()
        report = await self.run_pass(chosen or None, offline_timeout)
        wanted = chosen or sorted(report.results, key=device_sort_key)
        entries = [report.results[n] for n in wanted if n in report.results]
        for n in wanted:
            if n not in report.results:  # gone during the pass
                entries.append(_gone(n))
        return entries

    async def reconcile_device(
        self, name: str, offline_timeout: float | None = None
    ) -> dict[str, Any]:
        """Device.Reconcile: this device now, with the policy in force, as asked for (never
        drift); its apply entry. NoSuchDevice when the dax bus does not have it."""
        if not self._device_exists(name):
            raise NoSuchDevice(f"no such DAX device: {name}")
        report = await self.run_pass([name], offline_timeout)
        return report.results.get(name) or _gone(name)

    def _device_exists(self, name: str) -> bool:
        if not SAFE_COMPONENT.match(name) or name in (".", ".."):
            return False
        return self.sysfs.exists(device_dir(name))

    # ---- scheduling (loop thread) -------------------------------------------------------------

    def request(self, name: str | None, force: bool = False) -> None:
        """Ask for a device (None: all) to be re-read and reconciled soon; ``force``: asked for
        through daxd, so never taken for drift."""
        r = self._requests
        if name is None:
            r.everything = True
            r.request_all |= force
        else:
            r.names.add(name)
            if force:
                r.requested.add(name)
        self._idle.clear()
        self._wake.set()

    async def run_pass(
        self, names: Sequence[str] | None, offline_timeout: float | None = None
    ) -> PassReport:
        """Reconcile these devices (None: all) as asked for, and wait for that pass's report."""
        assert self._loop is not None, "the worker is not running"
        future: asyncio.Future[PassReport] = self._loop.create_future()
        if offline_timeout is not None:
            r = self._requests
            r.offline_timeout = max(r.offline_timeout or 0.0, offline_timeout)
        if names is None:
            self.request(None, force=True)
        for n in names or ():
            self.request(n, force=True)
        self._requests.waiters.append(future)
        return await future

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def on_event(self, event: Event) -> None:
        now = time.monotonic()
        r = self._requests
        if event.device is not None:
            r.seen[event.device] = now
            # at once, not with the next batch: a pass waiting for the device to settle asks
            self.reconciler.news.note(event.action, event.device)
            self.request(event.device)
        elif event.block is not None:
            r.seen[event.block] = now
            r.blocks.add(event.block)
            self._idle.clear()
            self._wake.set()
        elif event.cxl:
            r.regions = True
            self._cxl_news.set()
            self._idle.clear()
            self._wake.set()
        # Other subsystems cannot reach here: the sources filter on dax, memory and cxl.

    def on_readable(self) -> None:
        assert self.events is not None
        try:
            batch = self.events.drain()
        except Overflow as e:
            log.warning("udev events were lost (%s); re-reading every device", e)
            self._requests.seen[None] = time.monotonic()
            self.request(None)
            return
        for ev in batch:
            self.on_event(ev)

    def _take_batch(self) -> tuple[Batch, list[asyncio.Future[PassReport]]]:
        r, self._requests = self._requests, _Requests()
        batch = Batch(
            policy=self.policy,
            names=None if r.everything else frozenset(r.names),
            blocks=frozenset(r.blocks),
            requested=frozenset(r.requested),
            request_all=r.request_all,
            seen=tuple(r.seen.items()),
            offline_timeout=r.offline_timeout,
            regions=r.regions,
        )
        return batch, r.waiters

    async def worker(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            if self._requests.empty:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.settle()
            if self._stop.is_set():
                break
            batch, waiters = self._take_batch()
            try:
                report = await loop.run_in_executor(self._executor, self.reconciler.run_pass, batch)
            except Exception as e:
                log.exception("reconcile failed unexpectedly; will retry on the next event")
                for w in waiters:
                    if not w.done():
                        w.set_exception(RuntimeError(f"the pass failed: {e}"))
                continue
            self._absorb(report)
            for w in waiters:
                if not w.done():
                    w.set_result(report)
            self.publish_manager()
            self.notifier.status(self.summary())
        for w in self._requests.waiters:
            if not w.done():
                w.set_exception(RuntimeError("daxd is stopping"))
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

    def _absorb(self, report: PassReport) -> None:
        """A pass ended: keep what it computed for the calls answered without a pass."""
        if report.hotplug is not None:
            self.hotplug = report.hotplug
        if report.diagnostics is not None:
            self.diagnostics = report.diagnostics
        if report.regions is not None:
            self.region_status = report.regions
            self._publish_regions()
        self._plans.update(report.plans)
        for name in report.gone:
            self._plans.pop(name, None)
        names = sorted(self._plans, key=device_sort_key)
        self._plan_records = tuple(r for n in names for r in plan_step_records(self._plans[n]))

    def _publish_regions(self) -> None:
        """Hand the publisher the regions that changed since the last pass, and drop those the
        policy no longer has."""
        now = {s.name: s for s in self.region_status}
        for name in [n for n in self.published_regions if n not in now]:
            del self.published_regions[name]
            self.publisher.remove_region(name)
        for name, status in now.items():
            if self.published_regions.get(name) == status:
                continue
            try:
                self.publisher.set_region(status)
            except ValueError as e:  # not published: tried again after the next pass
                log.error("%s", e)
                continue
            self.published_regions[name] = status

    # ---- what the worker hands over (loop thread) -------------------------------------------

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the loop thread: only the loop thread publishes."""
        if self._loop is None or self._loop_thread_is_current():
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _loop_thread_is_current(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _set_device(self, status: DeviceStatus) -> None:
        self.published[status.name] = status
        self.publisher.set_device(status)

    def _remove_device(self, name: str) -> None:
        self.published.pop(name, None)
        if self._plans.pop(name, None) is not None:
            self._plan_records = tuple(r for r in self._plan_records if r["device"] != name)
        self.publisher.remove_device(name)

    def _step_done(self, device: str, r: StepResult) -> None:
        result = "ok" if r.ok else ("rolled-back" if r.rollback else "failed")
        message = r.error or r.step.reason
        self.publisher.action_completed(
            device, f"{r.step.action} {r.step.value} > {r.step.path}", result, message
        )

    def _look_again(self, name: str, delay: float) -> None:
        if self._loop is None:
            return
        previous = self._later.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._later[name] = self._loop.call_later(delay, self.request, name)

    # ---- reporting (loop thread) ----------------------------------------------------------------

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.published.values():
            counts[s.state] = counts.get(s.state, 0) + 1
        parts = [f"{n} {s}" for s, n in sorted(counts.items())]
        text = f"{len(self.published)} device(s)" + (": " + ", ".join(parts) if parts else "")
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
            hotplug=self.hotplug,
            diagnostics=self.diagnostics,
        )

    def publish_manager(self) -> None:
        self.publisher.set_manager(self.manager_status())

    def refresh_conflicts(self) -> None:
        if self.hotplug is None:
            return
        found = tuple(find_conflicts(self.config.roots.base, self.hotplug))
        for c in found:
            if c not in self.conflicts:
                log.warning("conflict: %s", c)
        self.conflicts = found

    def plan_records(self) -> tuple[dict[str, Any], ...]:
        """Manager.Plan: every planned step as of the last pass (plan_step_records), made once
        per pass: no sysfs read, O(1). The same tuple until a pass or a removal changes it."""
        return self._plan_records

    # ---- life cycle ---------------------------------------------------------------------------

    async def take_lock(self) -> bool:
        """Become the one writer; waits for a `daxd apply` that holds the lock. False: cannot."""
        if self.lock is None:
            return True
        said = False
        while not self._stop.is_set():
            try:
                if self.lock.try_acquire():
                    return True
            except LockUnavailable as e:
                log.error("%s", e)
                return False
            if not said:
                log.warning(
                    "waiting for %s, which holds %s, to finish", self.lock.holder(), self.lock.path
                )
                said = True
            await asyncio.sleep(_LOCK_POLL)
        return False

    async def run(self, bus_setup: Callable[[Daemon], object] | None = None) -> int:
        loop = self._loop = asyncio.get_running_loop()
        install_interrupt_handler()
        watchdog = loop.create_task(self.watchdog())
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        for sig in stop_signals:
            loop.add_signal_handler(sig, self.stop)
        try:
            if not await self.take_lock():
                return self.exit_code if self._stop.is_set() else 1
            return await self._serve(loop, bus_setup)
        finally:
            watchdog.cancel()
            for sig in stop_signals:
                loop.remove_signal_handler(sig)
            if self.lock is not None:
                self.lock.release()
            self._executor.shutdown(wait=True)

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, bus_setup: Callable[[Daemon], object] | None
    ) -> int:
        # Settings may have been changed since __init__ (tests do); the worker is not running yet.
        self.reconciler.config.drift_grace = self.config.drift_grace
        self.reconciler.config.offline_timeout = self.config.offline_timeout
        self.load_policy()
        if self.policy_error:
            log.error("starting with no rules in force: the policy is invalid")
        if self.config.roots.runtime is not None:
            done = autoonline.recover(self.sysfs, self.config.roots.runtime)
            if done:
                log.warning("%s", done)
        try:
            self.hotplug = read_state(self.sysfs).hotplug
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
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload_quietly()))
        worker = loop.create_task(self.worker())
        # Coldplug: READY only once the devices present now match the policy.
        with contextlib.suppress(RuntimeError):  # stopped before the first pass ended
            report = await self.run_pass(None)
            await self._wait_for_memdevs(report)
        if not self._stop.is_set():
            self.ready = True
            self.notifier.ready(self.summary())
            log.info("ready: %s", self.summary())
        await self._stopped.wait()
        self.notifier.stopping()
        log.info("stopping")
        self._wake.set()
        await worker
        for handle in self._later.values():
            handle.cancel()
        if self.events is not None:
            loop.remove_reader(self.events.fileno())
            self.events.close()
        loop.remove_signal_handler(signal.SIGHUP)
        return self.exit_code

    async def _wait_for_memdevs(self, report: PassReport) -> None:
        """Coldplug of the policy's regions: while memdevs they name are missing, wait for news
        from the cxl bus (bounded by region_wait) and build what can be built."""
        deadline = time.monotonic() + self.config.region_wait
        while report.waiting and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                for status in self.regions:
                    if status["name"] in report.waiting:
                        log.warning(
                            "region %s (%s): %s after %g s; READY without it",
                            status["name"],
                            status["location"],
                            status["reason"],
                            self.config.region_wait,
                        )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cxl_news.wait(), left)
            self._cxl_news.clear()  # before the pass: news during it makes another
            report = await self.run_pass(None)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(PolicyRejected, RuntimeError):  # logged and published
            await self.reload()

    def stop(self) -> None:
        """SIGTERM: finish the write in flight, roll back a half-done conversion, then exit."""
        self._stop.set()
        self._stopped.set()
        self._wake.set()

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


def _gone(name: str) -> dict[str, Any]:
    """The apply entry of a device that disappeared during the pass."""
    return {"name": name, "outcome": "gone", "error": None, "steps": []}


def plan_step_records(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Manager.Plan's records of one device's plan entry (report.plan_entry): one per step, in
    order; None where there is no rule, block or driver (left out on the wire)."""
    return [
        {
            "device": entry["name"],
            "verdict": entry["verdict"],
            "rule": entry.get("rule"),
            "action": step["action"],
            "path": step["path"],
            "value": step["value"],
            "reason": step["reason"],
            "block": step.get("block"),
            "driver": step.get("driver"),
        }
        for step in entry.get("steps") or ()
    ]


class _LoopSink:
    """The reconciler's way to the loop thread."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    def device(self, status: DeviceStatus) -> None:
        self._d.post(self._d._set_device, status)

    def removed(self, name: str) -> None:
        self._d.post(self._d._remove_device, name)

    def step(self, device: str, result: StepResult) -> None:
        self._d.post(self._d._step_done, device, result)

    def look_again(self, name: str, delay: float) -> None:
        self._d.post(self._d._look_again, name, delay)

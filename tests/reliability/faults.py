"""Fault injection on the fake kernel: every write of an apply, failed every way the kernel can.

A *scenario* is a fake-kernel set-up and a policy.  A fault-free apply on a fresh kernel gives the
sequence of sysfs writes the scenario makes (its *baseline*).  Then, for every write index i and
every fault, a fresh kernel runs the same apply with the fault injected at write i; the invariants
below are checked, the fault is taken away and a second apply (a retry, as the daemon's next pass
or the operator's next ``daxd apply`` makes) must converge.

Faults at write i (one per run):

- an errno (EBUSY, EINVAL, ENXIO, ENODEV, EIO, EPERM, EOPNOTSUPP, ENOMEM): write(2) fails with it
  and changes nothing (``FakeKernel.fail`` armed for exactly that write);
- ``hang``: an offline write loops in the kernel until it is interrupted
  (``FakeKernel.block_offline_hangs``; the executor's timeout interrupts it).  Writes that cannot
  loop (driver files, ``memmap_on_memory``, onlining) are interrupted instead: they fail with
  ETIMEDOUT, which is how ``Sysfs`` reports an interrupted write;
- ``vanish``: the device goes away (namespace disabled, CXL region destroyed) just before write
  i (``FakeKernel.remove_device``); the kernel then answers write i as it would;
- ``ignored``: the kernel accepts write i and does nothing (what read-back is for);
- ``probe-<errno>`` (only at ``new_id``/``bind`` writes): the write succeeds but the driver's probe
  fails with the errno -- ``new_id`` ignores probe errors, as drivers/dax/bus.c does, so the
  device stays unbound and only the read-back notices.

Each fault is *transient* (only write i is hit) or, with a ``*`` suffix, *persistent*: every
later write to the same path (for ``probe-``: every probe of that driver) fails the same way, the
retry too, until the fault is healed; then a third apply must converge.

*Kill* runs stop the apply right after write i by raising :class:`Killed` (a BaseException the
executor does not catch) from the kernel's write path: no rollback, as when the process dies of
SIGKILL.  ``EBUSY+kill`` injects EBUSY at write i and kills the process right after the next
write that succeeds (the first rollback write, or the next block of a zone fix).  A fresh
apply (a restarted daxd) must then converge.

Invariants (every run): no exception escapes ``apply_device``; nothing leaked, no SIGBUS, no
offline write without a timeout; ``DeviceResult.final`` equals a fresh read of sysfs and that read
equals the fake kernel's own state; the outcome is honest (applied/in-sync only when a fresh plan
is in sync, an error text when it failed, the errno the kernel gave in a failed step); after a
failed apply no block that was online is offline unless the policy wants the memory offline or
gone (a failed conversion back to devdax leaves every block online in kmem), and no device that
had a driver is left unbound.  A persistent fault may only cost what it blocks: the one block whose
``state`` keeps failing, or the device's driver when the driver it came from is the one that keeps
failing.  After the retry (a healed fault): applied/in-sync and a fresh plan in sync (a vanished
device: gone).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from daxd.apply import autoonline
from daxd.apply.executor import ApplyOptions, DeviceResult, Outcome, apply_device
from daxd.kernel.layout import AUTO_ONLINE_PATH
from daxd.kernel.scan import read_device, read_hotplug_settings, read_state
from daxd.kernel.view import DeviceView, view
from daxd.plan.planner import plan_device
from daxd.plan.steps import Verdict
from daxd.policy.load import load_policy
from daxd.policy.model import Policy
from tests.fakekernel import FakeKernel, GiB, MiB
from tests.fakekernel.memory import oserror

ERRNOS: dict[str, int] = {
    "EBUSY": errno.EBUSY,
    "EINVAL": errno.EINVAL,
    "ENXIO": errno.ENXIO,
    "ENODEV": errno.ENODEV,
    "EIO": errno.EIO,
    "EPERM": errno.EPERM,
    "EOPNOTSUPP": errno.EOPNOTSUPP,
    "ENOMEM": errno.ENOMEM,
}
# What dev_dax_probe() and dev_dax_kmem_probe() return when they fail.
PROBE_ERRNOS = ("EBUSY", "ENOMEM", "EINVAL", "ENXIO")
HANG = "hang"
VANISH = "vanish"
IGNORED = "ignored"
KILL = "kill"
FAULT_THEN_KILL = "EBUSY+kill"
PERSISTENT = "*"
TRANSIENT_FAULTS: tuple[str, ...] = (*ERRNOS, HANG, VANISH, IGNORED)
PROBE_FAULTS: tuple[str, ...] = tuple(f"probe-{e}" for e in PROBE_ERRNOS)

FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_BLOCK_WRITE = re.compile(r"^devices/system/memory/memory([0-9]+)/(state|online)$")
_BIND_WRITE = re.compile(r"^bus/dax/drivers/(device_dax|kmem)/(new_id|bind)$")
_REMOVE_ID = re.compile(r"^bus/dax/drivers/(device_dax|kmem)/remove_id$")


class Killed(BaseException):
    """The process died here (SIGKILL): nothing after this point runs, nothing is rolled back."""


@dataclass
class Effect:
    """What a ``before`` hook does to the write it sees."""

    undo: Callable[[], None] | None = None  # called once the write returned or failed
    ignore: bool = False  # accept the write and do nothing


Before = Callable[[int, str, str], Effect | None]
After = Callable[[int, str, str], None]


class SweepKernel(FakeKernel):
    """A FakeKernel whose write path calls hooks with the index of the write being made.

    Indices count from :meth:`start_recording` (the scenario's set-up writes are not counted).
    ``before`` runs before the kernel handles the write; ``after`` after a write that succeeded.
    """

    def __init__(self, base: Path, **knobs: Any) -> None:
        super().__init__(base, **knobs)
        self.mark = 0
        self.before: Before | None = None
        self.after: After | None = None

    def start_recording(self) -> None:
        self.mark = len(self.writes)

    @property
    def recorded(self) -> list[tuple[str, str]]:
        return self.writes[self.mark :]

    def handle_write(self, rel: str, value: str, timeout: float | None) -> None:
        index = len(self.writes) - self.mark
        effect = self.before(index, rel, value) if self.before is not None else None
        if effect is not None and effect.ignore:
            self.writes.append((rel, value))
            return
        try:
            super().handle_write(rel, value, timeout)
        finally:
            if effect is not None and effect.undo is not None:
                effect.undo()
        if self.after is not None:
            self.after(index, rel, value)


# --- scenarios -----------------------------------------------------------------------------------

PMEM_RAM = """\
rules:
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""
PMEM_RAM_MEMMAP = PMEM_RAM + "    memmap_on_memory: true\n"
DEVDAX = "rules:\n  - name: devdax\n    mode: devdax\n"
RAM_MOVABLE = "rules:\n  - name: ram\n    mode: system-ram\n    zone: movable\n"
RAM_NO_MEMMAP = RAM_MOVABLE + "    memmap_on_memory: false\n"
RAM_OFFLINE = "rules:\n  - name: ram-offline\n    mode: system-ram\n    online: false\n"

Setup = Callable[[Path], "SweepKernel"]


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    policy: str
    setup: Setup
    device: str = "dax0.0"
    to_devdax: bool = False  # the policy takes kmem's memory away (devdax)
    to_offline: bool = False  # the policy wants the memory offline (online: false)


def _kernel(base: Path, **knobs: Any) -> SweepKernel:
    """512 MiB of boot memory (memory0..memory3): small, so that runs are quick."""
    return SweepKernel(base, boot_memory=512 * MiB, **knobs)


def move_block(kernel: FakeKernel, index: int, online_type: str) -> None:
    kernel.sysfs.write(f"devices/system/memory/memory{index}/state", "offline", timeout=5)
    kernel.sysfs.write(f"devices/system/memory/memory{index}/state", online_type)


def _pmem(base: Path) -> SweepKernel:
    kernel = _kernel(base)
    kernel.add_pmem_device()
    return kernel


def _pmem_memmap_y(base: Path) -> SweepKernel:
    kernel = _kernel(base, memmap_on_memory="Y")  # booted with memory_hotplug.memmap_on_memory=1
    kernel.add_pmem_device()
    return kernel


def _pmem_auto_offline(base: Path) -> SweepKernel:
    kernel = _kernel(base, auto_online_blocks="offline")
    kernel.add_pmem_device()
    return kernel


def _pmem_converted(base: Path) -> SweepKernel:
    """pmem that an earlier apply (with consent) made movable system RAM."""
    kernel = _pmem(base)
    result = apply(kernel, policy_of(PMEM_RAM))
    assert result.outcome is Outcome.APPLIED, result.error
    return kernel


def _hmem(base: Path) -> SweepKernel:
    """1 GiB of soft-reserved memory kmem took at boot: 8 blocks online in Normal."""
    kernel = _kernel(base)
    kernel.add_hmem_device(size=GiB)
    return kernel


def _hmem_mixed(base: Path) -> SweepKernel:
    """As _hmem, with the first three blocks moved to Movable by hand: zones must come back."""
    kernel = _hmem(base)
    for b in kernel.blocks_of("dax0.0")[:3]:
        move_block(kernel, b.index, "online_movable")
    return kernel


def _cxl_memmap(base: Path) -> SweepKernel:
    """1 GiB CXL device held by kmem with memmap_on_memory=1, blocks online in Movable."""
    kernel = _kernel(base, memmap_on_memory="Y")
    kernel.add_cxl_device(size=GiB)
    for b in kernel.blocks_of("dax0.0"):
        move_block(kernel, b.index, "online_movable")
    return kernel


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("pmem-to-ram", "pmem devdax -> movable RAM, with consent", PMEM_RAM, _pmem),
    Scenario(
        "pmem-to-ram-memmap",
        "pmem -> RAM, memmap_on_memory 0 -> 1 (booted with memory_hotplug.memmap_on_memory=1)",
        PMEM_RAM_MEMMAP,
        _pmem_memmap_y,
    ),
    Scenario(
        "pmem-to-ram-auto-offline",
        "pmem -> RAM where hot-added blocks stay offline (auto_online_blocks=offline)",
        PMEM_RAM,
        _pmem_auto_offline,
    ),
    Scenario(
        "hmem-to-devdax",
        "hmem kmem-bound at boot (3 blocks Movable, 5 Normal) -> devdax",
        DEVDAX,
        _hmem_mixed,
        to_devdax=True,
    ),
    Scenario(
        "pmem-ram-to-devdax",
        "pmem converted to movable RAM earlier -> back to devdax",
        DEVDAX,
        _pmem_converted,
        to_devdax=True,
    ),
    Scenario("zone-fix", "hmem auto-onlined in Normal -> moved to Movable", RAM_MOVABLE, _hmem),
    Scenario(
        "memmap-change-kmem",
        "CXL memory held by kmem, memmap_on_memory 1 -> 0 (offline, unbind, set, rebind, move)",
        RAM_NO_MEMMAP,
        _cxl_memmap,
    ),
    Scenario(
        "online-false",
        "hmem online in Normal -> system-ram with online: false",
        RAM_OFFLINE,
        _hmem,
        to_offline=True,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


def scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


# --- running ------------------------------------------------------------------------------------


@functools.cache
def policy_of(text: str) -> Policy:
    """``text`` loaded as daxd loads a policy file (the file is not needed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="daxd-sweep-policy-") as d:
        path = Path(d) / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return load_policy(path, Path(d) / "no-policy.d")


@contextmanager
def fresh_kernel(setup: Setup) -> Iterator[SweepKernel]:
    with tempfile.TemporaryDirectory(prefix="daxd-sweep-", dir=FAST_TMP) as d:
        kernel = setup(Path(d))
        kernel.start_recording()
        yield kernel


def apply(kernel: FakeKernel, policy: Policy, name: str = "dax0.0") -> DeviceResult:
    opts = ApplyOptions(
        proc_root=kernel.proc_root,
        offline_timeout=5.0,
        runtime_dir=runtime_dir(kernel),
    )
    return apply_device(kernel.sysfs, policy, name, read_hotplug_settings(kernel.sysfs), opts)


@dataclass(frozen=True)
class Truth:
    """The device as the fake kernel holds it (not as daxd reads it)."""

    mode: str
    driver: str
    online: int
    total: int
    zone: str
    memmap_on_memory: bool | None


_MODE = {"kmem": "system-ram", "device_dax": "devdax", None: "unbound"}
_ZONE = {"Movable": "movable", "Normal": "normal", None: "none"}


def truth(kernel: FakeKernel, name: str) -> Truth | None:
    device = kernel.devices.get(name)
    if device is None:
        return None
    blocks = kernel.blocks_of(name)
    zones = {_ZONE[b.zone] for b in blocks if b.online}
    zone = "" if not zones else zones.pop() if len(zones) == 1 else "mixed"
    return Truth(
        mode=_MODE.get(device.driver, f"other:{device.driver}"),
        driver=device.driver or "",
        online=sum(1 for b in blocks if b.online),
        total=len(blocks),
        zone=zone,
        memmap_on_memory=device.memmap_on_memory,
    )


def online_blocks(kernel: FakeKernel, name: str) -> set[int]:
    if name not in kernel.devices:
        return set()
    return {b.index for b in kernel.blocks_of(name) if b.online}


def as_truth(v: DeviceView) -> Truth:
    return Truth(
        v.mode, v.driver, v.blocks_online, v.blocks_total, v.zone, v.memmap_on_memory_attribute
    )


def fresh_view(kernel: FakeKernel, name: str) -> DeviceView | None:
    """What a fresh read of sysfs shows of the device."""
    hotplug = read_hotplug_settings(kernel.sysfs)
    reading = read_device(kernel.sysfs, name, hotplug)
    return None if reading.device is None else view(reading.device, reading.blocks, hotplug)


def fresh_plan(kernel: FakeKernel, policy: Policy, name: str) -> Verdict | None:
    state = read_state(kernel.sysfs)
    device = state.devices.get(name)
    if device is None:
        return None
    return plan_device(device, state.blocks_of(name), state.hotplug, policy.match(device)).verdict


def auto_online(kernel: FakeKernel) -> str | None:
    return kernel.sysfs.read(AUTO_ONLINE_PATH)


def check_setting(
    kernel: FakeKernel, original: str | None, result: DeviceResult | None
) -> list[str]:
    """auto_online_blocks is as it was, unless the apply failed saying it is left switched, or
    (a fault on that file that persists) the record to put it back is kept."""
    now = auto_online(kernel)
    if now == original:
        return []
    if result is not None and "auto_online_blocks is left switched" in result.error:
        return []
    if result is not None and (runtime_dir(kernel) / autoonline.RECORD_NAME).exists():
        return []  # still failing: put back once the fault heals
    return [f"auto_online_blocks is {now}, was {original}"]


def runtime_dir(kernel: FakeKernel) -> Path:
    return kernel.proc_root.parent / "run"


def check_clean(kernel: FakeKernel, allowed_leaks: int = 0) -> list[str]:
    problems = []
    if kernel.leaks[allowed_leaks:]:
        problems.append(f"leaked memory: {kernel.leaks[allowed_leaks:]}")
    if kernel.sigbus:
        problems.append(f"SIGBUS: {kernel.sigbus}")
    if kernel.untimed_blocking_writes:
        problems.append(f"untimed blocking writes: {kernel.untimed_blocking_writes}")
    if kernel.risky_reads:
        problems.append(f"valid_zones read of blocks not online: {kernel.risky_reads[:3]}")
    return problems


def check_honest(kernel: FakeKernel, policy: Policy, name: str, result: DeviceResult) -> list[str]:
    """The result says what sysfs shows, sysfs shows what the kernel holds, the outcome fits."""
    problems = []
    seen = fresh_view(kernel, name)
    if result.final != seen:
        problems.append(f"final {result.final} but a fresh read shows {seen}")
    held = truth(kernel, name)
    if (None if seen is None else as_truth(seen)) != held:
        problems.append(f"daxd reads {seen} but the kernel holds {held}")
    verdict = fresh_plan(kernel, policy, name)
    if result.outcome in (Outcome.APPLIED, Outcome.IN_SYNC) and verdict is not Verdict.IN_SYNC:
        problems.append(f"outcome {result.outcome} but a fresh plan is {verdict}")
    if result.outcome is Outcome.FAILED and not result.error:
        problems.append("failed without an error text")
    return problems


@dataclass
class Record:
    """One injected fault (or kill) and what went wrong, if anything."""

    scenario: str
    fault: str  # an errno name, hang, vanish, ignored, probe-E, each maybe with "*"; kill...
    index: int
    write: tuple[str, str]
    outcome: str = ""
    retry: str = ""
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        path, value = self.write
        head = f"{self.scenario} {self.fault}@{self.index} ({value!r} > {path})"
        return f"{head}: {self.outcome} / retry {self.retry}: " + "; ".join(self.problems)


@functools.cache
def baseline(name: str) -> tuple[tuple[str, str], ...]:
    """The writes a fault-free apply of the scenario makes, in order."""
    s = scenario(name)
    with fresh_kernel(s.setup) as kernel:
        result = apply(kernel, policy_of(s.policy), s.device)
        assert result.outcome is Outcome.APPLIED, f"{name}: {result.outcome} {result.error}"
        assert all(r.ok for r in result.results), name
        assert check_clean(kernel) == [], name
        return tuple(kernel.recorded)


@dataclass
class _Armed:
    """A fault waiting at write ``index``; once hit, ``path`` is where it struck."""

    kind: str
    persistent: bool
    index: int
    path: str | None = None
    healed: bool = False
    heals: list[Callable[[], None]] = field(default_factory=list)
    leaks_at_removal: int = 0

    def heal(self) -> None:
        self.healed = True
        for fn in self.heals:
            fn()


def _probe_fault(kernel: SweepKernel, armed: _Armed, driver: str) -> Effect:
    """The driver's probe fails (once, or until healed); new_id still succeeds."""
    attr = "_kmem_probe" if driver == "kmem" else "_devdax_probe"
    err = ERRNOS[armed.kind.removeprefix("probe-")]

    def failing(device: object) -> None:
        if not armed.persistent:
            restore()
        raise oserror(err)

    def restore() -> None:
        kernel.bus.__dict__.pop(attr, None)

    setattr(kernel.bus, attr, failing)
    armed.heals.append(restore)
    return Effect()


def _injector(kernel: SweepKernel, s: Scenario, armed: _Armed) -> Before:
    def before(i: int, rel: str, value: str) -> Effect | None:
        if armed.healed:
            return None
        first = i == armed.index
        again = armed.persistent and armed.path is not None and rel == armed.path
        if not (first or again):
            return None
        armed.path = rel
        if armed.kind == VANISH:
            kernel.remove_device(s.device)
            # What the removal itself leaked (kmem held online memory) is not daxd's doing.
            armed.leaks_at_removal = len(kernel.leaks)
            return None
        if armed.kind == IGNORED:
            return Effect(ignore=True)
        if armed.kind.startswith("probe-"):
            m = _BIND_WRITE.match(rel)
            assert m is not None, f"probe faults only go to new_id/bind writes, not {rel}"
            return _probe_fault(kernel, armed, m.group(1)) if first else None
        m = _BLOCK_WRITE.match(rel)
        if armed.kind == HANG and m is not None and value.strip() in ("offline", "0"):
            if not first:
                return None  # still hanging: the fault stays on the block until healed
            block = kernel.blocks[int(m.group(1))]
            previous = block.offline_fault
            kernel.block_offline_hangs(block.index)

            def undo() -> None:
                block.offline_fault = previous

            if armed.persistent:
                armed.heals.append(undo)
                return None
            return Effect(undo=undo)
        if armed.kind == HANG and m is not None and armed.persistent and not first:
            return None  # a block whose offline hangs still onlines
        kernel.fail(rel, errno.ETIMEDOUT if armed.kind == HANG else ERRNOS[armed.kind])
        return None

    return before


def forgets_id(name: str, armed: _Armed) -> bool:
    """Whether the fault struck the remove_id that follows a new_id of the same driver (the
    id taken out again once the device is bound)."""
    m = _REMOVE_ID.match(armed.path or "")
    if m is None:
        return False
    earlier = baseline(name)[: armed.index]
    return any(p == f"bus/dax/drivers/{m.group(1)}/new_id" for p, _ in earlier)


def check_ids(kernel: FakeKernel, name: str, armed: _Armed | None) -> list[str]:
    """No id written to a driver's new_id outlives an apply (unless the kernel refused the very
    remove_id that takes it out: then it is reported, see forgets_id)."""
    if armed is not None and _REMOVE_ID.match(armed.path or ""):
        return []
    left = {drv: ids for drv, ids in kernel.dynamic_ids().items() if name in ids}
    return [f"ids left in the drivers: {left}"] if left else []


def _expected_errno(kind: str) -> str | None:
    if kind == HANG:
        return "ETIMEDOUT"
    if kind.startswith("probe-"):
        return kind.removeprefix("probe-")
    return kind if kind in ERRNOS else None


def inject(name: str, index: int, fault: str) -> Record:
    """Apply the scenario with ``fault`` at write ``index``; check; retry (heal first); check."""
    s = scenario(name)
    policy = policy_of(s.policy)
    record = Record(name, fault, index, baseline(name)[index])
    problems = record.problems
    kind = fault.removesuffix(PERSISTENT)
    armed = _Armed(kind, fault.endswith(PERSISTENT), index)
    with fresh_kernel(s.setup) as kernel:
        before_online = online_blocks(kernel, s.device)
        before = truth(kernel, s.device)
        assert before is not None
        setting = auto_online(kernel)
        kernel.before = _injector(kernel, s, armed)
        try:
            result = apply(kernel, policy, s.device)
        except Exception as e:
            problems.append(f"exception escaped apply_device: {type(e).__name__}: {e}")
            return record
        record.outcome = str(result.outcome)
        if kernel.recorded[: index + 1] != list(baseline(name)[: index + 1]):
            problems.append("the run diverged from the baseline before the fault")
        allowed = armed.leaks_at_removal
        problems += check_clean(kernel, allowed)
        problems += check_ids(kernel, s.device, armed)
        problems += check_honest(kernel, policy, s.device, result)
        problems += check_setting(kernel, setting, result)
        problems += _check_after_fault(
            kernel, s, armed, result, before=before, before_online=before_online
        )
        rounds = (
            [("retry", False)] if not armed.persistent else [("retry", True), ("healed", False)]
        )
        for label, still_faulty in rounds:
            if not still_faulty:
                armed.heal()
            try:
                again = apply(kernel, policy, s.device)
            except Exception as e:
                problems.append(f"exception escaped the {label}: {type(e).__name__}: {e}")
                return record
            record.retry = str(again.outcome)
            problems += [f"{label}: {p}" for p in check_clean(kernel, allowed)]
            problems += [f"{label}: {p}" for p in check_ids(kernel, s.device, armed)]
            problems += [f"{label}: {p}" for p in check_honest(kernel, policy, s.device, again)]
            problems += [
                f"{label}: {p}"
                for p in check_setting(kernel, setting, again if still_faulty else None)
            ]
            if still_faulty:
                problems += [
                    f"{label}: {p}"
                    for p in _check_after_fault(
                        kernel, s, armed, again, before=before, before_online=before_online
                    )
                    if "unnoticed" not in p and "carries" not in p  # may have nothing to do
                ]
            elif kind == VANISH:
                if again.outcome is not Outcome.GONE:
                    problems.append(f"{label} of a vanished device: {again.outcome}")
            elif again.outcome not in (Outcome.APPLIED, Outcome.IN_SYNC):
                problems.append(f"{label} did not converge: {again.outcome}: {again.error}")
            elif fresh_plan(kernel, policy, s.device) is not Verdict.IN_SYNC:
                problems.append(f"{label}: the plan is not in sync")
    return record


def _check_after_fault(
    kernel: FakeKernel,
    s: Scenario,
    armed: _Armed,
    result: DeviceResult,
    *,
    before: Truth,
    before_online: set[int],
) -> list[str]:
    problems = []
    now = truth(kernel, s.device)
    if armed.kind == VANISH:
        if now is not None:
            problems.append("the device was removed but still exists")
        if result.outcome not in (Outcome.FAILED, Outcome.GONE):
            problems.append(f"a vanished device reported as {result.outcome}")
        return problems
    assert now is not None
    if armed.path is None:
        problems.append("the fault was never injected")
        return problems
    # new_id whose probe failed once is followed by bind, which then works; a write the kernel
    # ignored is caught by read-back, or needs no undo (remove_id), or bind makes up for it.
    recovered = (armed.kind.startswith("probe-") and not armed.persistent) or armed.kind == IGNORED
    wanted = _expected_errno(armed.kind)
    if forgets_id(s.name, armed):
        # The remove_id after the bind: reported (a failed step), the conversion stays.
        if result.outcome is Outcome.FAILED:
            problems.append(f"a refused remove_id after the bind failed the apply: {result.error}")
        recovered = True
        if wanted and not any(not r.ok and r.errno == wanted for r in result.results):
            problems.append(f"the refused remove_id is not reported: no step carries {wanted}")
    if result.outcome is not Outcome.FAILED and not recovered:
        problems.append(f"the fault went unnoticed: {result.outcome}")
    if wanted and not recovered and not any(not r.ok and r.errno == wanted for r in result.results):
        problems.append(f"no failed step carries {wanted}")
    # What a persistent fault may cost: the block whose state write keeps failing, or the driver
    # the device came from when that is the driver that keeps failing.
    blocked_block: int | None = None
    blocked_driver: str | None = None
    if armed.persistent:
        if (m := _BLOCK_WRITE.match(armed.path)) and armed.kind != HANG:
            blocked_block = int(m.group(1))  # (a block whose offline hangs still onlines)
        elif m := _BIND_WRITE.match(armed.path):
            blocked_driver = m.group(1)
    # kmem cannot take the memory back: then none of it can be online.
    kmem_blocked = blocked_driver == "kmem" and now.mode == "unbound"
    keeps_memory = (
        not s.to_offline and (not s.to_devdax or now.mode == "system-ram") and not kmem_blocked
    )
    lost = before_online - online_blocks(kernel, s.device) - {blocked_block}
    if keeps_memory and lost:
        problems.append(f"memory left offline: memory{sorted(lost)} were online before")
    if now.mode == "unbound" and before.mode != "unbound" and blocked_driver != before.driver:
        problems.append(f"left unbound half-way (was {before.mode})")
    return problems


def kill(name: str, index: int, fault: str = KILL) -> Record:
    """Apply the scenario and die right after write ``index`` (``EBUSY+kill``: EBUSY at write
    ``index``, death right after the next write that succeeds); then a restarted apply."""
    s = scenario(name)
    policy = policy_of(s.policy)
    record = Record(name, fault, index, baseline(name)[index])
    problems = record.problems
    armed = _Armed("EBUSY", False, index)
    with fresh_kernel(s.setup) as kernel:
        setting = auto_online(kernel)
        death = index if fault == KILL else index + 1

        def after(i: int, rel: str, value: str) -> None:
            if i >= death:
                raise Killed

        if fault == FAULT_THEN_KILL:
            kernel.before = _injector(kernel, s, armed)
        kernel.after = after
        try:
            result = apply(kernel, policy, s.device)
            record.outcome = f"{result.outcome} (no write after the fault)"
            if fault == KILL:
                problems.append(f"the process was never killed: {result.outcome}")
        except Killed:
            record.outcome = "killed"
        except Exception as e:
            problems.append(f"exception escaped apply_device: {type(e).__name__}: {e}")
        finally:
            kernel.before = None
            kernel.after = None
        problems += check_clean(kernel)
        # What a restarted daxd (or `daxd list` / `daxd plan`) reports before it acts.
        state = read_state(kernel.sysfs)
        device = state.devices.get(s.device)
        held = truth(kernel, s.device)
        seen = (
            None
            if device is None
            else as_truth(view(device, state.blocks_of(s.device), state.hotplug))
        )
        if seen != held:
            problems.append(f"after the kill daxd reads {seen} but the kernel holds {held}")
        if device is not None:
            plan = plan_device(
                device, state.blocks_of(s.device), state.hotplug, policy.match(device)
            )
            if plan.verdict not in (Verdict.CHANGE, Verdict.IN_SYNC):
                problems.append(f"after the kill the plan is {plan.verdict}: {plan.reason}")
        try:
            again = apply(kernel, policy, s.device)
        except Exception as e:
            problems.append(f"exception escaped the restart: {type(e).__name__}: {e}")
            return record
        record.retry = str(again.outcome)
        problems += [f"restart: {p}" for p in check_clean(kernel)]
        problems += [f"restart: {p}" for p in check_setting(kernel, setting, None)]
        problems += [f"restart: {p}" for p in check_honest(kernel, policy, s.device, again)]
        if again.outcome not in (Outcome.APPLIED, Outcome.IN_SYNC):
            problems.append(f"restart did not converge: {again.outcome}: {again.error}")
    return record


# --- the sweep ----------------------------------------------------------------------------------

Job = tuple[str, str, int]  # (scenario, fault, write index)


def profile() -> str:
    """``DAXD_FAULTS``: ``default`` (unset), ``full`` or ``quick``."""
    value = os.environ.get("DAXD_FAULTS", "default")
    if value not in ("default", "full", "quick"):
        raise ValueError(f"DAXD_FAULTS must be default, full or quick, not {value!r}")
    return value


def faults_of(prof: str) -> tuple[str, ...]:
    """The faults of a profile.

    default and quick: every errno, hang and vanish (transient), probe failures (transient and
    persistent) and kills; full adds writes the kernel ignores, every fault made persistent, and
    a kill right after a failed write.  quick only goes to every third write index.
    """
    required = (*ERRNOS, HANG, VANISH)
    probes = (*PROBE_FAULTS, *(p + PERSISTENT for p in PROBE_FAULTS))
    if prof != "full":
        return (*required, *probes, KILL)
    persistent = (*ERRNOS, HANG, IGNORED)
    return (
        *required,
        IGNORED,
        *probes,
        *(f + PERSISTENT for f in persistent),
        KILL,
        FAULT_THEN_KILL,
    )


def indices(name: str, fault: str, prof: str) -> list[int]:
    """The write indices a fault goes to: every one (quick: the first, the last, every third);
    probe faults only go where a driver probes (new_id and bind writes)."""
    writes = baseline(name)
    if fault.startswith("probe-"):
        return [i for i, (path, _) in enumerate(writes) if _BIND_WRITE.match(path)]
    if prof == "quick":
        return sorted({0, len(writes) - 1, *range(0, len(writes), 3)})
    return list(range(len(writes)))


def jobs(prof: str, names: Sequence[str] = SCENARIO_NAMES) -> list[Job]:
    return [(n, f, i) for n in names for f in faults_of(prof) for i in indices(n, f, prof)]


def run_job(job: Job) -> Record:
    name, fault, index = job
    if fault in (KILL, FAULT_THEN_KILL):
        return kill(name, index, fault)
    return inject(name, index, fault)


def _quiet_worker() -> None:
    logging.disable(logging.CRITICAL)  # every failed write logs a warning: thousands of lines


def run_jobs(todo: Sequence[Job], workers: int | None = None) -> list[Record]:
    """Every job, over ``workers`` processes (default: the CPUs), in the order given."""
    for name in {j[0] for j in todo}:
        baseline(name)  # computed once, before the workers fork
    count = workers or min(4, os.cpu_count() or 1)
    if count <= 1:
        _quiet_worker()
        try:
            return [run_job(j) for j in todo]
        finally:
            logging.disable(logging.NOTSET)
    # fork is the quickest (the baselines come along), but not safe with other threads about.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    with ProcessPoolExecutor(count, get_context(method), initializer=_quiet_worker) as pool:
        return list(pool.map(run_job, todo, chunksize=8))


def counts(records: Sequence[Record]) -> dict[str, Counter[str]]:
    """Figures for docs/reliability.md: faults by scenario, by kind, by errno; violations."""
    out: dict[str, Counter[str]] = {
        "scenario": Counter(),
        "fault": Counter(),
        "errno": Counter(),
        "outcome": Counter(),
        "violations": Counter(),
    }
    for r in records:
        out["scenario"][r.scenario] += 1
        kind = r.fault.removesuffix(PERSISTENT)
        if kind in (KILL, FAULT_THEN_KILL):
            out["fault"][kind] += 1
        else:
            family = "probe" if kind.startswith("probe-") else kind
            persistence = "persistent" if r.fault.endswith(PERSISTENT) else "transient"
            out["fault"][f"{family} ({persistence})"] += 1
        code = _expected_errno(kind)
        if code:
            out["errno"][code] += 1
        out["outcome"][f"{r.outcome} -> {r.retry}"] += 1
        if r.problems:
            out["violations"][f"{r.scenario} {r.fault}"] += 1
    return out

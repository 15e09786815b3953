"""The policy's CXL regions kept as described, pass after pass: built when missing, left alone
when there, torn down when the policy says ``state: absent``; what each is (and why not) kept
for D-Bus, ``daxd list`` and the journal."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daxd.apply.cxl_regions import RegionResult, apply_regions
from daxd.kernel.model import KernelState
from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import Sysfs
from daxd.plan.cxl_regions import RegionPlan, RegionVerdict
from daxd.policy.model import Policy

log = logging.getLogger("daxd")


@dataclass(frozen=True)
class RegionStatus:
    """One region of the policy as daxd last found or left it."""

    name: str
    location: str
    state: str  # present / absent / waiting / refused / failed / releasing
    reason: str
    region: str | None  # regionR now
    window: str | None
    memdevs: tuple[str, ...]
    size: int | None
    devices: tuple[str, ...]
    last_error: str = ""
    last_change: int = 0  # µs since the epoch

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "location": self.location,
            "state": self.state,
            "reason": self.reason,
            "region": self.region,
            "window": self.window,
            "memdevs": list(self.memdevs),
            "size": self.size,
            "devices": list(self.devices),
            "last_error": self.last_error or None,
        }


_STATES = {
    RegionVerdict.IN_SYNC: "present",
    RegionVerdict.CREATE: "present",
    RegionVerdict.DESTROY: "absent",
    RegionVerdict.RELEASE: "releasing",
    RegionVerdict.WAITING: "waiting",
    RegionVerdict.REFUSED: "refused",
}


@dataclass
class RegionPass:
    built: tuple[str, ...] = ()  # kernel regions made (or torn down) in this pass
    waiting: tuple[str, ...] = ()  # policy regions whose memdevs are not all there
    releasing: bool = False  # some region waits for its memory to go offline
    plans: dict[str, RegionPlan] = field(default_factory=dict)
    results: dict[str, RegionResult] = field(default_factory=dict)


@dataclass
class RegionKeeper:
    sysfs: Sysfs
    proc: Path = Path("/proc")
    runtime: Path | None = None  # records of builds in progress (daxd.apply.cxl_regions)
    bound: Callable[[str], bool] | None = None  # udev reported the dax device's bind
    status: dict[str, RegionStatus] = field(default_factory=dict)
    clock: Callable[[], int] = lambda: time.time_ns() // 1000

    def run(self, policy: Policy, state: KernelState | None = None) -> RegionPass:
        """Plan every region of the policy and carry out what it takes."""
        out = RegionPass()
        if not policy.regions:
            self.status.clear()
            return out
        if state is None:
            state = read_state(self.sysfs)
        built: list[str] = []
        done = apply_regions(
            self.sysfs, policy, state, proc=self.proc, runtime=self.runtime, bound=self.bound
        )
        absent = {s.name for s in policy.regions if s.state == "absent"}
        for plan, result in done:
            out.plans[plan.name] = plan
            if result is not None:
                out.results[plan.name] = result
                if plan.region is not None:
                    built.append(plan.region)
            self._record(plan, result, absent=plan.name in absent)
        for name in set(self.status) - {s.name for s in policy.regions}:
            del self.status[name]
        out.built = tuple(built)
        out.waiting = tuple(n for n, p in out.plans.items() if p.verdict is RegionVerdict.WAITING)
        out.releasing = any(p.verdict is RegionVerdict.RELEASE for p in out.plans.values())
        return out

    def _record(self, plan: RegionPlan, result: RegionResult | None, *, absent: bool) -> None:
        before = self.status.get(plan.name)
        state = _STATES[plan.verdict]
        if absent and plan.verdict is RegionVerdict.IN_SYNC:
            state = "absent"  # as the policy asks
        error = ""
        devices = plan.devices
        if result is not None:
            devices = result.devices
            if not result.ok:
                state, error = "failed", result.error
        now = RegionStatus(
            plan.name,
            plan.location,
            state,
            plan.reason,
            plan.region,
            plan.window,
            plan.memdevs,
            plan.size,
            devices,
            last_error=error,
        )
        changed = before is None or (before.state, before.reason, before.last_error) != (
            now.state,
            now.reason,
            now.last_error,
        )
        if before is None or changed or result is not None:
            self.status[plan.name] = replace(now, last_change=self.clock())
        else:
            self.status[plan.name] = replace(now, last_change=before.last_change)
            return  # said already
        line = outcome_line(plan, result)
        if state in ("failed", "refused"):
            log.warning("%s", line)
        else:
            log.info("%s", line)


def outcome_line(plan: RegionPlan, result: RegionResult | None) -> str:
    """The journal's line for a region: what it is, or what daxd did and how it went."""
    head = f"region {plan.name} ({plan.location})"
    if result is None:
        return f"{head}: {plan.verdict}: {plan.reason}"
    writes = len(result.results)
    took = f"{writes} write{'s' if writes != 1 else ''}, {result.seconds:.2f} s"
    if result.ok:
        made = f": {', '.join(result.devices)}" if plan.verdict is RegionVerdict.CREATE else ""
        return f"{head}: {plan.reason}: done ({took}){made}"
    undone = ""
    if result.undone:
        bad = [r for r in result.undone if not r.ok]
        undone = (
            f"; undone ({len(result.undone)} writes)"
            if not bad
            else f"; undoing it failed too: {bad[0].error}"
        )
    return f"{head}: FAILED: {result.error}{undone}"

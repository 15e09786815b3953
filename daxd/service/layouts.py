"""The policy's layouts kept, pass after pass: each dynamic dax region a layout matches is carved
into its devices when it is not, and each of its devices bound by its entry; what every dax
region is (and why a layout is not in place) kept for D-Bus, ``daxd status`` and the journal.

A region once laid out that changes outside daxd (a device destroyed or resized by hand) is laid
out again only when that takes no memory away, or on request (Reconcile, ``daxd apply``, a
reload that changes its layout): the same rule as a device's drift (daxd.service.drift).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from daxd.apply.carving import LayoutOutcome, apply_layouts, layout_rules
from daxd.apply.executor import ApplyOptions, Outcome
from daxd.kernel.model import DRIVER_DEVDAX, DRIVER_KMEM, DaxRegion, KernelState
from daxd.kernel.sysfs import Sysfs
from daxd.plan.carving import CarveAction, CarveVerdict, RegionLayout
from daxd.policy.layouts import Layout
from daxd.policy.model import Policy, Rule

log = logging.getLogger("daxd")


@dataclass(frozen=True)
class DaxRegionStatus:
    """One dax region as daxd last found or left it."""

    id: int
    provider: str
    size: int
    available_size: int  # 0 for a static region
    align: int
    dynamic: bool
    devices: tuple[str, ...]
    layout: str = ""  # the layout that matches it, "" when none does
    layout_location: str = ""
    # none (no layout) / laid-out / refused / failed / held
    layout_state: str = "none"
    reason: str = ""
    last_error: str = ""
    # device -> 1-based number of its entry in the layout
    entries: tuple[tuple[str, int], ...] = ()
    last_change: int = 0  # µs since the epoch

    def json(self) -> dict[str, Any]:
        return {
            "region": self.id,
            "provider": self.provider,
            "size": self.size,
            "available_size": self.available_size,
            "align": self.align,
            "dynamic": self.dynamic,
            "devices": list(self.devices),
            "layout": self.layout or None,
            "layout_location": self.layout_location or None,
            "layout_state": self.layout_state,
            "reason": self.reason or None,
            "last_error": self.last_error or None,
            "entries": dict(self.entries),
        }


@dataclass
class LayoutPass:
    changed: tuple[int, ...] = ()  # regions carved in this pass: their devices are new
    rules: dict[str, Rule] = field(default_factory=dict)
    outcomes: list[LayoutOutcome] = field(default_factory=list)


def _takes_memory_away(planned: RegionLayout) -> bool:
    for step in planned.plan.steps:
        if step.action is CarveAction.RELEASE:
            d = planned.devices.get(step.device)
            if d is not None and d.driver in (DRIVER_KMEM, DRIVER_DEVDAX):
                return True
    return False


@dataclass
class LayoutKeeper:
    sysfs: Sysfs
    status: dict[int, DaxRegionStatus] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)  # the last pass's, for device passes
    laid_out: dict[int, Layout] = field(default_factory=dict)  # regions daxd saw as laid out
    clock: Callable[[], int] = lambda: time.time_ns() // 1000

    def concerns(self, region_id: int) -> bool:
        """Whether a device of this region needs the layouts looked at first: a region with a
        layout, or one not seen yet."""
        known = self.status.get(region_id)
        return known is None or bool(known.layout)

    def run(
        self, policy: Policy, state: KernelState, opts: ApplyOptions, *, requested: bool
    ) -> LayoutPass:
        def may_change(planned: RegionLayout) -> str | None:
            before = self.laid_out.get(planned.region.id)
            if requested or before is None or before != planned.layout:
                return None
            if not _takes_memory_away(planned):
                return None
            return (
                "changed outside daxd; laying it out again would take memory away, which daxd "
                "does only on request (Reconcile, `daxd apply`, reload)"
            )

        outcomes = apply_layouts(self.sysfs, policy, state, opts, may_change=may_change)
        out = LayoutPass(outcomes=outcomes, rules=layout_rules(outcomes))
        by_region = {o.planned.region.id: o for o in outcomes}
        changed = []
        for region in state.regions.values():
            o = by_region.get(region.id)
            if o is not None and o.result is not None and o.result.results:
                changed.append(region.id)
            self._record(region, o)
        for rid in set(self.status) - set(state.regions):
            del self.status[rid]
            self.laid_out.pop(rid, None)
        out.changed = tuple(sorted(changed))
        self.rules = out.rules
        return out

    def refresh(self, state: KernelState) -> None:
        """The regions' sizes and devices as read after a carve (their layout state stays)."""
        for region in state.regions.values():
            before = self.status.get(region.id)
            now = _base(region)
            if before is not None:
                now = replace(
                    now,
                    **{
                        k: getattr(before, k)
                        for k in (
                            "layout",
                            "layout_location",
                            "layout_state",
                            "reason",
                            "last_error",
                            "entries",
                            "last_change",
                        )
                    },
                )
            self.status[region.id] = now

    def _record(self, region: DaxRegion, o: LayoutOutcome | None) -> None:
        now = _base(region)
        if o is not None:
            now = replace(now, **_layout_fields(o))
            plan = o.planned.plan
            if now.layout_state == "laid-out":
                self.laid_out[region.id] = o.planned.layout
            elif plan.verdict is not CarveVerdict.IN_SYNC and o.held:
                pass  # still the layout daxd laid out: a change outside daxd
        else:
            self.laid_out.pop(region.id, None)
        before = self.status.get(region.id)
        key = ("layout_state", "reason", "last_error", "layout")
        changed = before is None or any(getattr(before, k) != getattr(now, k) for k in key)
        if before is None or changed or (o is not None and o.result is not None):
            self.status[region.id] = replace(now, last_change=self.clock())
            if o is not None:
                _log(region, o, now)
        else:
            self.status[region.id] = replace(now, last_change=before.last_change)


def _base(region: DaxRegion) -> DaxRegionStatus:
    return DaxRegionStatus(
        id=region.id,
        provider=str(region.provider),
        size=region.size,
        available_size=region.available_size or 0,
        align=region.align or 0,
        dynamic=region.dynamic,
        devices=region.devices,
    )


def _layout_fields(o: LayoutOutcome) -> dict[str, Any]:
    plan = o.planned.plan
    layout = o.planned.layout
    fields: dict[str, Any] = {"layout": layout.name, "layout_location": layout.location}
    if o.held:
        return {**fields, "layout_state": "held", "reason": o.held}
    if plan.verdict is CarveVerdict.REFUSED:
        return {**fields, "layout_state": "refused", "reason": plan.reason}
    if plan.verdict is CarveVerdict.IN_SYNC:
        assigned = plan.assignments
    elif o.result is not None and o.result.outcome is Outcome.APPLIED:
        assigned = tuple(sorted(o.result.assignments.items()))
    else:
        error = o.result.error if o.result is not None else ""
        return {**fields, "layout_state": "failed", "last_error": error}
    entries = tuple((name, i + 1) for name, i in assigned)
    error = o.result.error if o.result is not None else ""  # e.g. an empty device not deleted
    return {**fields, "layout_state": "laid-out", "entries": entries, "last_error": error}


def _log(region: DaxRegion, o: LayoutOutcome, status: DaxRegionStatus) -> None:
    head = f"dax region {region.id}: layout {o.planned.layout.name!r} ({o.planned.layout.location})"
    result = o.result
    if status.layout_state == "laid-out":
        if result is None or not result.results:
            log.info("%s: laid out", head)
        else:
            devices = ", ".join(f"{n} (device {i})" for n, i in status.entries)
            log.info("%s: laid out (%d writes): %s", head, len(result.results), devices)
    elif status.layout_state == "failed":
        undone = sum(1 for r in result.results if r.rollback) if result is not None else 0
        log.warning(
            "%s: FAILED: %s; put back as it was (%d writes)", head, status.last_error, undone
        )
    else:
        log.warning("%s: %s: %s", head, status.layout_state, status.reason)

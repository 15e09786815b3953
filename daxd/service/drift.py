"""What to do with a device whose state is not what its rule wants: a pure decision.

A device changed by someone other than daxd ("drift") is restored only where restoring adds
(binding, onlining, moving a block to its zone) and only once nobody has touched it for a grace
period: `daxctl reconfigure-device` offlines every block, then unbinds kmem, and onlining a block
in between would make that unbind leak the range until reboot. Restoring what takes memory away
(offlining, unbinding kmem) is held until asked for. A request (Apply, Reconcile, a reload, the
start) is never drift: it is the operator speaking through daxd.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from daxd.kernel.model import DRIVER_KMEM
from daxd.plan.steps import Action, DevicePlan, Verdict


class DriftAction(StrEnum):
    REPORT = "report"  # nothing to change: publish what the plan says (applied, refused, ...)
    APPLY = "apply"  # run the plan now
    WAIT = "wait"  # changed by someone who may still be at it: look again later
    HOLD = "hold"  # restoring would take memory away: only when asked


@dataclass(frozen=True)
class DriftFacts:
    changes: bool  # the plan has steps to run
    takes_memory_away: bool  # ...and they end with less memory online, or kmem gone
    requested: bool  # someone asked through daxd (Apply, Reconcile, reload, start)
    drifted: bool  # the device differs from what daxd last saw or left it as
    holding: bool  # a restore was held before and not asked for since
    quiet_for: float  # seconds since udev last spoke of the device
    grace: float  # how long it must be left alone before daxd restores it
    someone_offlining: bool  # a block reads going-offline: a writer is in the middle of it


@dataclass(frozen=True)
class DriftDecision:
    action: DriftAction
    holding: bool  # carried to the next decision for this device
    retry_in: float = 0.0  # for WAIT: seconds until the device is looked at again


def decide(f: DriftFacts) -> DriftDecision:
    drifted = f.drifted and not f.requested
    holding = f.holding and f.changes and not f.requested
    if f.changes and f.takes_memory_away and drifted:
        holding = True
    if holding:
        return DriftDecision(DriftAction.HOLD, holding=True)
    if not f.changes:
        return DriftDecision(DriftAction.REPORT, holding=False)
    if drifted and (f.quiet_for < f.grace or f.someone_offlining):
        left = f.grace - f.quiet_for
        return DriftDecision(DriftAction.WAIT, holding=False, retry_in=left if left > 0 else 1.0)
    return DriftDecision(DriftAction.APPLY, holding=False)


def takes_memory_away(plan: DevicePlan) -> bool:
    """Whether the plan ends with less memory online or kmem gone (not a mere zone move)."""
    if plan.verdict is not Verdict.CHANGE:
        return False
    onlined = {s.block for s in plan.steps if s.action is Action.ONLINE_BLOCK}
    return any(
        (s.action is Action.OFFLINE_BLOCK and s.block not in onlined)
        or (s.action is Action.UNBIND and s.driver == DRIVER_KMEM)
        for s in plan.steps
    )

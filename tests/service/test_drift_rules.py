"""The drift rules as a pure function: no threads, no fake kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daxd.kernel.layout import block_path, driver_path
from daxd.kernel.model import DRIVER_DEVDAX, DRIVER_KMEM
from daxd.plan.steps import Action, DevicePlan, Step, Verdict
from daxd.service.drift import DriftAction, DriftFacts, decide, takes_memory_away

QUIET = DriftFacts(
    changes=True,
    takes_memory_away=False,
    requested=False,
    drifted=True,
    holding=False,
    quiet_for=60.0,
    grace=5.0,
    someone_offlining=False,
)


def test_nothing_to_change_is_reported_and_releases_a_hold() -> None:
    d = decide(replace(QUIET, changes=False, holding=True))
    assert (d.action, d.holding) == (DriftAction.REPORT, False)


def test_additive_drift_left_alone_long_enough_is_restored() -> None:
    assert decide(QUIET).action is DriftAction.APPLY


def test_additive_drift_still_being_made_waits_for_the_rest_of_the_grace() -> None:
    d = decide(replace(QUIET, quiet_for=1.5))
    assert d.action is DriftAction.WAIT
    assert d.retry_in == pytest.approx(3.5)


def test_a_block_going_offline_means_someone_is_at_it() -> None:
    d = decide(replace(QUIET, someone_offlining=True))
    assert d.action is DriftAction.WAIT
    assert d.retry_in == 1.0  # the grace is over: look again soon


def test_drift_that_restoring_would_take_memory_from_is_held() -> None:
    d = decide(replace(QUIET, takes_memory_away=True))
    assert (d.action, d.holding) == (DriftAction.HOLD, True)


def test_a_hold_outlasts_later_events_until_asked() -> None:
    later = replace(QUIET, drifted=False, holding=True)  # seen again, no new change
    assert decide(later).action is DriftAction.HOLD
    asked = replace(later, requested=True)
    assert (decide(asked).action, decide(asked).holding) == (DriftAction.APPLY, False)


@pytest.mark.parametrize("quiet_for", [0.0, 60.0])
@pytest.mark.parametrize("away", [False, True])
def test_what_was_asked_through_daxd_is_never_drift(quiet_for: float, away: bool) -> None:
    """`daxd apply` / Reconcile / reload: applied at once, whatever the device went through."""
    facts = replace(
        QUIET, requested=True, quiet_for=quiet_for, takes_memory_away=away, holding=True
    )
    assert decide(facts).action is DriftAction.APPLY


def test_a_first_look_is_applied_at_once() -> None:
    assert decide(replace(QUIET, drifted=False, quiet_for=0.0)).action is DriftAction.APPLY


def _plan(*steps: Step) -> DevicePlan:
    return DevicePlan("dax0.0", Verdict.CHANGE, rule="r", steps=steps)


def _offline(n: int) -> Step:
    return Step(Action.OFFLINE_BLOCK, block_path(n), "offline", "why", block=n)


def _online(n: int) -> Step:
    return Step(Action.ONLINE_BLOCK, block_path(n), "online_movable", "why", block=n)


def _unbind(driver: str) -> Step:
    path = driver_path(driver, "unbind")
    return Step(Action.UNBIND, path, "dax0.0", "why", driver=driver, device="dax0.0")


def test_a_zone_move_takes_no_memory_away() -> None:
    assert not takes_memory_away(_plan(_offline(40), _online(40)))


def test_offlining_for_good_takes_memory_away() -> None:
    assert takes_memory_away(_plan(_offline(40), _online(40), _offline(41)))


def test_unbinding_kmem_takes_memory_away_but_device_dax_does_not() -> None:
    assert takes_memory_away(_plan(_unbind(DRIVER_KMEM)))
    assert not takes_memory_away(_plan(_unbind(DRIVER_DEVDAX)))


def test_the_driver_is_read_from_the_step_not_its_path() -> None:
    misleading = replace(_unbind(DRIVER_KMEM), path=driver_path(DRIVER_DEVDAX, "unbind"))
    assert takes_memory_away(_plan(misleading))


def test_a_plan_without_changes_takes_nothing_away() -> None:
    plan = replace(_plan(_offline(40)), verdict=Verdict.IN_SYNC)
    assert not takes_memory_away(plan)

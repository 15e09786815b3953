"""Fault injection at every write of every kind of plan (see tests/reliability/faults.py).

The sweep runs once per module, over the CPUs; each (scenario, fault) pair is a test of its own
that fails with the runs that broke an invariant.  ``DAXD_FAULTS=full`` adds persistent faults,
ignored writes and a kill right after a failed write; ``DAXD_FAULTS=quick`` only hits every third
write.  ``python -m tests.reliability.report`` prints the figures.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator

import pytest

from daxd.apply import executor
from daxd.apply.executor import Outcome
from daxd.kernel.scan import DeviceReading
from daxd.kernel.view import view
from daxd.plan import planner
from tests.fakekernel.memory import oserror
from tests.reliability.faults import (
    ERRNOS,
    HANG,
    KILL,
    RAM_NO_MEMMAP,
    SCENARIO_NAMES,
    VANISH,
    Record,
    apply,
    baseline,
    check_clean,
    counts,
    faults_of,
    fresh_kernel,
    inject,
    jobs,
    kill,
    policy_of,
    profile,
    run_jobs,
    scenario,
    truth,
)

PROFILE = profile()


@pytest.fixture(scope="module")
def records() -> dict[tuple[str, str], list[Record]]:
    grouped: dict[tuple[str, str], list[Record]] = {}
    for r in run_jobs(jobs(PROFILE)):
        grouped.setdefault((r.scenario, r.fault), []).append(r)
    return grouped


@pytest.fixture
def quiet() -> Iterator[None]:
    """Injected faults log a warning each; the in-process runs below need none of them."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("fault", faults_of(PROFILE))
@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_write_survives_the_fault(
    records: dict[tuple[str, str], list[Record]], name: str, fault: str
) -> None:
    ran = records.get((name, fault), [])
    if fault.startswith("probe-") and not any("/new_id" in p for p, _ in baseline(name)):
        assert ran == []  # nothing probes a driver in this scenario
        return
    assert ran, "no fault was injected"
    broken = [str(r) for r in ran if r.problems]
    assert broken == [], "\n".join(broken)


def test_the_sweep_is_as_large_as_documented(
    records: dict[tuple[str, str], list[Record]], capsys: pytest.CaptureFixture[str]
) -> None:
    flat = [r for rs in records.values() for r in rs]
    figures = counts(flat)
    with capsys.disabled():
        print(f"\nfault sweep ({PROFILE}): {len(flat)} runs", dict(figures["fault"]))
    writes = sum(len(baseline(n)) for n in SCENARIO_NAMES)
    assert writes == 107  # docs/reliability.md lists the scenarios and their writes
    required = (len(ERRNOS) + 2) * writes  # every errno, hang and vanish at every write
    if PROFILE != "quick":
        assert sum(1 for r in flat if r.fault in (*ERRNOS, HANG, VANISH)) == required
        assert figures["fault"][KILL] == writes
    assert len(flat) >= 500 or PROFILE == "quick"
    assert sum(figures["violations"].values()) == 0


# --- the invariants have teeth: a broken executor is caught ----------------------------------


def test_a_missing_rollback_is_caught(monkeypatch: pytest.MonkeyPatch, quiet: None) -> None:
    monkeypatch.setattr(executor._Run, "restore_online", lambda *_: None)
    record = inject("hmem-to-devdax", 4, "EBUSY")
    assert any("memory left offline" in p for p in record.problems), record


def test_a_device_left_between_drivers_is_caught(
    monkeypatch: pytest.MonkeyPatch, quiet: None
) -> None:
    monkeypatch.setattr(executor._Run, "rebind", lambda *_: None)
    record = inject("pmem-to-ram", 2, "ENOMEM")  # kmem/new_id
    assert any("left unbound half-way" in p for p in record.problems), record


def test_a_failure_reported_as_success_is_caught(
    monkeypatch: pytest.MonkeyPatch, quiet: None
) -> None:
    finish = executor._Run.finish

    def lying(self: executor._Run, outcome: Outcome, *rest: object) -> executor.DeviceResult:
        result = finish(self, outcome, *rest)  # type: ignore[arg-type]
        result.outcome = Outcome.APPLIED
        return result

    monkeypatch.setattr(executor._Run, "finish", lying)
    record = inject("zone-fix", 5, "EIO")
    assert any("but a fresh plan is change" in p for p in record.problems), record


def test_a_stale_final_view_is_caught(monkeypatch: pytest.MonkeyPatch, quiet: None) -> None:
    monkeypatch.setattr(executor._Run, "finish", _finish_with_first_view)
    record = inject("zone-fix", 0, "EBUSY")
    assert any("but a fresh read shows" in p for p in record.problems), record


def _finish_with_first_view(
    self: executor._Run, outcome: Outcome, error: str, reading: DeviceReading
) -> executor.DeviceResult:
    self.result.outcome, self.result.error = outcome, error
    if self.result.final is None and reading.device is not None:
        self.result.final = view(reading.device, (), self.hotplug)
    return self.result


def test_a_leak_is_caught(monkeypatch: pytest.MonkeyPatch, quiet: None) -> None:
    monkeypatch.setattr(executor._Run, "check_preconditions", lambda *_: None)
    monkeypatch.setattr(planner, "_offline_steps", lambda *_: [])
    with fresh_kernel(scenario("hmem-to-devdax").setup) as kernel:
        apply(kernel, policy_of("rules:\n  - mode: devdax\n"))
        assert any("leaked memory" in p for p in check_clean(kernel))


def test_a_rollback_after_death_is_not_assumed(quiet: None) -> None:
    """A kill leaves the half-way state; only the restart repairs it."""
    record = kill("hmem-to-devdax", 3)
    assert record.outcome == "killed"
    assert record.problems == []
    assert record.retry == str(Outcome.APPLIED)


# --- faults the sweep cannot express -----------------------------------------------------------


def test_memmap_change_that_kmem_cannot_take_is_undone(quiet: None) -> None:
    """kmem cannot hot-add the memory with memmap_on_memory=0 (no room for the memmap in RAM).

    The rollback must put memmap_on_memory back before it gives the device back to kmem:
    re-binding with the new value fails the same way and leaves the memory unbound.
    """
    s = scenario("memmap-change-kmem")
    with fresh_kernel(s.setup) as kernel:
        probe = kernel.bus._kmem_probe

        def no_memmap_in_ram(device: object) -> None:
            if getattr(device, "memmap_on_memory", None) is False:
                raise oserror(errno.ENOMEM)
            probe(device)  # type: ignore[arg-type]

        setattr(kernel.bus, "_kmem_probe", no_memmap_in_ram)  # noqa: B010
        before = truth(kernel, s.device)
        assert before is not None
        result = apply(kernel, policy_of(RAM_NO_MEMMAP), s.device)
        assert result.outcome is Outcome.FAILED
        assert "ENOMEM" in result.error
        now = truth(kernel, s.device)
        assert now is not None
        assert (now.mode, now.memmap_on_memory, now.online) == ("system-ram", True, before.online)
        assert check_clean(kernel) == []


def test_memmap_is_put_back_when_pmem_goes_back_to_device_dax(quiet: None) -> None:
    s = scenario("pmem-to-ram-memmap")
    with fresh_kernel(s.setup) as kernel:
        kernel.fail("bus/dax/drivers/kmem/new_id", errno.ENOMEM)
        result = apply(kernel, policy_of(s.policy), s.device)
        assert result.outcome is Outcome.FAILED
        now = truth(kernel, s.device)
        assert now is not None
        assert (now.mode, now.memmap_on_memory) == ("devdax", False)  # exactly as it was


def test_vanish_is_injected_where_it_hurts_most(quiet: None) -> None:
    """The device goes away after kmem let go of it, before device_dax takes it."""
    name = "hmem-to-devdax"
    index = [p for p, _ in baseline(name)].index("bus/dax/drivers/device_dax/new_id")
    record = inject(name, index, VANISH)
    assert record.problems == []
    assert record.outcome in (str(Outcome.FAILED), str(Outcome.GONE))


def test_sweep_kernels_are_removed() -> None:
    """The sweep builds thousands of kernels under /dev/shm (or /tmp): none may stay."""
    with fresh_kernel(scenario("zone-fix").setup) as kernel:
        root = kernel.sysfs_root
        assert root.exists()
    assert not root.exists()

"""`daxd apply` while the daemon runs: the daemon is the one writer and the file is what counts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from daxd.apply.writer_lock import WriterLock
from daxd.service.daemon import NoSuchDevice, PolicyRejected
from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import Harness, harness, start, stop

RAM = """\
rules:
  - name: first-ram
    match: {provider: hmem}
    mode: system-ram
    zone: movable
"""
DEVDAX = """\
rules:
  - name: first-devdax
    match: {provider: hmem}
    mode: devdax
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def driver(kernel: FakeKernel, name: str) -> str | None:
    return kernel.sysfs.link_name(f"bus/dax/devices/{name}/driver")


def quick_drift(h: Harness) -> None:
    """Drift is restored 0.2 s after the last event instead of 5 s: the test waits past it."""
    h.daemon.config.drift_grace = 0.2


def test_apply_takes_the_file_as_it_is_and_the_daemon_keeps_it(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    """The operator sequence: edit the policy, `daxd apply`, no reload; nothing turns it back."""
    with harness(hmem_kernel, tmp_path, RAM) as h:
        quick_drift(h)

        async def scenario() -> dict[str, Any]:
            task = await start(h)
            assert driver(hmem_kernel, "dax0.0") == "kmem"
            h.policy.write_text(DEVDAX)
            doc = {"devices": await h.daemon.apply([])}
            writes = len(hmem_kernel.writes)
            await asyncio.sleep(1.0)  # the conversion's own events, then well past the grace
            await h.settled()
            assert driver(hmem_kernel, "dax0.0") == "device_dax"
            assert len(hmem_kernel.writes) == writes  # nothing undone, nothing redone
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            assert h.publisher.devices["dax0.0"].rule == "first-devdax"
            assert h.daemon.policy.rules[0].name == "first-devdax"
            assert await stop(h, task) == 0
            return doc

        doc = run(scenario())
    (entry,) = doc["devices"]
    assert (entry["name"], entry["outcome"]) == ("dax0.0", "applied")
    assert entry["final"]["mode"] == "devdax"
    assert entry["steps"]
    assert all(s["ok"] for s in entry["steps"])


def test_apply_of_a_device_in_sync_answers_in_sync_without_writing(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, RAM) as h:

        async def scenario() -> dict[str, Any]:
            task = await start(h)
            writes = len(hmem_kernel.writes)
            doc = {"devices": await h.daemon.apply(["dax0.0"])}
            assert len(hmem_kernel.writes) == writes
            assert await stop(h, task) == 0
            return doc

        doc = run(scenario())
    assert [(d["name"], d["outcome"]) for d in doc["devices"]] == [("dax0.0", "in-sync")]


def test_a_broken_file_fails_the_apply_and_keeps_the_policy_in_force(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, RAM) as h:

        async def scenario() -> None:
            task = await start(h)
            writes = len(hmem_kernel.writes)
            h.policy.write_text("rules:\n  - name: x\n    mode: sideways\n")
            with pytest.raises(PolicyRejected, match=r"policy.yaml:3:11"):
                await h.daemon.apply([])
            assert len(hmem_kernel.writes) == writes
            assert h.daemon.policy.rules[0].name == "first-ram"
            assert "policy.yaml:3" in h.publisher.managers[-1].policy_error
            assert await stop(h, task) == 0

        run(scenario())


def test_an_unknown_device_is_refused_before_anything_is_done(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, RAM) as h:

        async def scenario() -> None:
            task = await start(h)
            h.policy.write_text(DEVDAX)
            writes = len(hmem_kernel.writes)
            for bad in ("dax9.9", "../../etc", "dax0.0/../x"):
                with pytest.raises(NoSuchDevice, match="no such DAX device"):
                    await h.daemon.apply(["dax0.0", bad])
            assert len(hmem_kernel.writes) == writes
            assert h.daemon.policy.rules[0].name == "first-ram"  # not even the policy changed
            assert await stop(h, task) == 0

        run(scenario())


def test_concurrent_applies_both_end_well_one_after_the_other(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    hmem_kernel.add_hmem_device()
    with harness(hmem_kernel, tmp_path, RAM) as h:

        async def scenario() -> list[dict[str, Any]]:
            task = await start(h)
            h.policy.write_text(DEVDAX)
            docs = await asyncio.gather(h.daemon.apply(["dax0.0"]), h.daemon.apply([]))
            assert {driver(hmem_kernel, n) for n in ("dax0.0", "dax1.0")} == {"device_dax"}
            assert await stop(h, task) == 0
            return [{"devices": d} for d in docs]

        first, both = run(scenario())
    assert [d["outcome"] for d in first["devices"]] == ["applied"]
    assert [d["name"] for d in both["devices"]] == ["dax0.0", "dax1.0"]
    assert all(d["outcome"] in ("applied", "in-sync") for d in both["devices"])


def test_plan_is_answered_from_the_last_pass_without_reading_sysfs(
    hmem_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with harness(hmem_kernel, tmp_path, DEVDAX) as h:

        async def scenario() -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
            task = await start(h)
            converted = h.daemon.plan_records()
            h.policy.write_text(RAM)
            h.daemon.load_policy()  # in force, not applied: the next pass plans the way back
            await h.daemon.run_pass(None)  # as asked for: it is applied, and planned after
            hmem_kernel.sysfs.write("devices/system/memory/auto_online_blocks", "offline")

            def no_reads(*_: object) -> None:
                raise AssertionError("Plan() read sysfs")

            with monkeypatch.context() as m:
                for name in ("read", "listdir", "exists", "link_name", "realpath"):
                    m.setattr(h.daemon.sysfs, name, no_reads)
                records = [h.daemon.plan_records() for _ in range(100)]
            assert all(r is records[0] for r in records)  # made once per pass
            assert await stop(h, task) == 0
            return converted, records[0]

        converted, after = run(scenario())
    # as of the pass that converted it: in sync, so no steps (not the ones it took to get there)
    assert converted == ()
    assert after == ()


def test_plan_records_are_the_steps_of_the_plan(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    """A block offlined by hand waits out the drift grace: Plan shows the step that restores it."""
    with harness(hmem_kernel, tmp_path, RAM) as h:
        h.daemon.config.drift_grace = 3600.0

        async def scenario() -> tuple[dict[str, Any], ...]:
            task = await start(h)
            block = next(b.index for b in hmem_kernel.blocks_of("dax0.0"))
            hmem_kernel.sysfs.write(f"devices/system/memory/memory{block}/state", "offline")
            await h.settled()
            records = h.daemon.plan_records()
            assert h.publisher.devices["dax0.0"].state is DeviceState.DRIFTED
            assert await stop(h, task) == 0
            return records

        records = run(scenario())
    (record,) = records
    assert record == {
        "device": "dax0.0",
        "verdict": "change",
        "rule": "first-ram",
        "action": "online-block",
        "path": f"devices/system/memory/memory{record['block']}/state",
        "value": "online_movable",
        "reason": record["reason"],
        "block": record["block"],
        "driver": None,
    }


def test_reconcile_device_answers_its_entry(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    """Device.Reconcile: the policy in force (not the file), as asked for (no drift wait)."""
    with harness(hmem_kernel, tmp_path, RAM) as h:

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            task = await start(h)
            h.policy.write_text(DEVDAX)  # on disk only: Reconcile does not read it
            kept = await h.daemon.reconcile_device("dax0.0")
            assert driver(hmem_kernel, "dax0.0") == "kmem"
            h.daemon.load_policy()
            converted = await h.daemon.reconcile_device("dax0.0", 5.0)
            assert driver(hmem_kernel, "dax0.0") == "device_dax"
            with pytest.raises(NoSuchDevice, match=r"no such DAX device: dax9\.9"):
                await h.daemon.reconcile_device("dax9.9")
            assert await stop(h, task) == 0
            return kept, converted

        kept, converted = run(scenario())
    assert (kept["name"], kept["outcome"], kept["steps"]) == ("dax0.0", "in-sync", [])
    assert (converted["outcome"], converted["final"]["mode"]) == ("applied", "devdax")
    assert all(s["ok"] for s in converted["steps"])


def test_the_daemon_waits_for_a_writer_that_holds_the_lock(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, DEVDAX) as h:
        runtime = h.daemon.config.roots.runtime
        assert runtime is not None
        other = WriterLock(runtime, "daxd apply")
        assert other.try_acquire()

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(h.daemon.run())
            await asyncio.sleep(0.5)
            assert not h.daemon.ready
            assert driver(hmem_kernel, "dax0.0") == "kmem"  # not a write while it waits
            other.release()
            await h.until(lambda: h.daemon.ready)
            assert driver(hmem_kernel, "dax0.0") == "device_dax"
            assert not WriterLock(runtime, "x").try_acquire()  # the daemon holds it now
            assert await stop(h, task) == 0
            assert WriterLock(runtime, "x").try_acquire()  # and gave it back

        run(scenario())

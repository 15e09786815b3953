"""The daemon killed (SIGKILL) in the middle of an apply, then started again on the same kernel.

The kill is simulated in-process: a write hook raises :class:`Killed`, a BaseException the daemon
does not catch, in the worker thread right after write k; the dead daemon's tasks are cancelled
and nothing of it runs again (no rollback, no STOPPING).  A new Daemon on the same fake kernel
must reach READY with every device as the policy wants it, publish what sysfs shows, and leak
nothing.  Every write index of a coldplug and of a reload is a kill point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from daxd.plan.planner import plan_all
from daxd.plan.steps import Verdict
from daxd.policy.load import load_policy
from daxd.service.status import DeviceState
from tests.reliability.faults import (
    FAST_TMP,
    Killed,
    SweepKernel,
    auto_online,
    check_clean,
    truth,
)
from tests.service.daemon_harness import Harness, harness, start, stop

MOVABLE = """\
rules:
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""
DEVDAX = "rules:\n  - name: all-devdax\n    mode: devdax\n"
DEVICES = ("dax0.0", "dax1.0")


def machine(base: Path) -> SweepKernel:
    """hmem dax0.0 (kmem, 8 blocks online in Normal) and pmem dax1.0 (device_dax)."""
    kernel = SweepKernel(base, boot_memory=512 << 20)
    kernel.add_hmem_device(size=1 << 30)
    kernel.add_pmem_device()
    kernel.start_recording()
    return kernel


@contextlib.contextmanager
def kernel_base() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="daxd-kill-", dir=FAST_TMP) as d:
        yield Path(d)


@dataclass
class Phase:
    name: str
    first_policy: str  # what the killed daemon starts with
    then: str | None  # reloaded once it is READY (the kill comes during that reload)


COLDPLUG = Phase("coldplug", MOVABLE, None)
RELOAD = Phase("reload", MOVABLE, DEVDAX)


def final_policy(phase: Phase) -> str:
    return phase.then or phase.first_policy


async def _bury(task: asyncio.Task[int]) -> None:
    """Cancel what is left of a dead daemon: its run() and the tasks it started."""
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task():
            t.cancel()
    for t in [*asyncio.all_tasks() - {asyncio.current_task()}, task]:
        with contextlib.suppress(asyncio.CancelledError, Killed):
            await t


def writes_of(phase: Phase) -> int:
    """How many writes the killed phase makes when nothing kills it."""
    with kernel_base() as base, tempfile.TemporaryDirectory() as folder:
        kernel = machine(base)
        with harness(kernel, Path(folder), phase.first_policy) as h:

            async def scenario() -> int:
                task = await start(h)
                count = len(kernel.recorded)
                if phase.then is not None:
                    h.policy.write_text(phase.then)
                    await h.daemon.reload()
                    count = len(kernel.recorded) - count
                await stop(h, task)
                return count

            return asyncio.run(scenario())


async def killed_daemon(h: Harness, kernel: SweepKernel, phase: Phase, k: int) -> None:
    dead = asyncio.Event()
    loop = asyncio.get_running_loop()
    offset = 0

    def after(i: int, rel: str, value: str) -> None:
        if i - offset == k:
            kernel.after = None
            loop.call_soon_threadsafe(dead.set)
            raise Killed

    if phase.then is None:
        kernel.after = after
    task = loop.create_task(h.daemon.run())
    if phase.then is not None:
        await h.until(lambda: h.daemon.ready)
        offset = len(kernel.recorded)
        kernel.after = after
        h.policy.write_text(phase.then)
        reload = loop.create_task(h.daemon.reload())
        await asyncio.wait_for(dead.wait(), 10)
        reload.cancel()
    else:
        await asyncio.wait_for(dead.wait(), 10)
    await _bury(task)
    loop.remove_reader(h.udev.fileno())
    h.udev.close()


def check_converged(h: Harness, kernel: SweepKernel, policy_text: str, folder: Path) -> list[str]:
    problems = check_clean(kernel)
    if (setting := auto_online(kernel)) != "online":  # switched for a bind the kill cut short
        problems.append(f"auto_online_blocks left at {setting}")
    policy_file = folder / "check.yaml"
    policy_file.write_text(policy_text)
    policy = load_policy(policy_file, folder / "none.d")
    state = read_state(kernel.sysfs)
    for plan in plan_all(state, policy):
        if plan.verdict is not Verdict.IN_SYNC:
            problems.append(f"{plan.device}: {plan.verdict} {[s.describe() for s in plan.steps]}")
    for name in DEVICES:
        status = h.publisher.devices.get(name)
        held = truth(kernel, name)
        if status is None or held is None:
            problems.append(f"{name}: published {status}, held {held}")
            continue
        if status.state is not DeviceState.APPLIED:
            problems.append(f"{name}: {status.state} {status.last_error}")
        shown = (status.mode, status.blocks_online, status.blocks_total, status.zone)
        if shown != (held.mode, held.online, held.total, held.zone or "none"):
            problems.append(f"{name}: publishes {shown}, the kernel holds {held}")
    return problems


def kill_and_restart(phase: Phase, k: int) -> list[str]:
    with (
        kernel_base() as base,
        tempfile.TemporaryDirectory() as first,
        tempfile.TemporaryDirectory() as second,
    ):
        kernel = machine(base)
        with harness(kernel, Path(first), phase.first_policy) as h1:
            asyncio.run(killed_daemon(h1, kernel, phase, k))
        problems = [f"after the kill: {p}" for p in check_clean(kernel)]
        with harness(kernel, Path(second), final_policy(phase)) as h2:

            async def restart() -> list[str]:
                task = await start(h2)
                found = check_converged(h2, kernel, final_policy(phase), Path(second))
                assert await stop(h2, task) == 0
                return found

            problems += asyncio.run(restart())
        return problems


@pytest.fixture(scope="module")
def kill_points() -> dict[str, int]:
    return {p.name: writes_of(p) for p in (COLDPLUG, RELOAD)}


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)  # every dead daemon's unfinished task would be logged
    yield
    logging.disable(logging.NOTSET)


def test_the_phases_write_what_is_expected(kill_points: dict[str, int]) -> None:
    # coldplug: 8 zone moves (16) + pmem to RAM (3, auto_online_blocks off and back around the
    # bind, kmem's id out again, 7 blocks onlined); reload: both back to devdax (each with
    # device_dax's id out again).
    assert kill_points == {"coldplug": 29, "reload": 23}


@pytest.mark.parametrize("phase", [COLDPLUG, RELOAD], ids=lambda p: p.name)
def test_killed_at_every_write_the_next_daemon_converges(
    kill_points: dict[str, int], phase: Phase
) -> None:
    broken = {}
    for k in range(kill_points[phase.name]):
        problems = kill_and_restart(phase, k)
        if problems:
            broken[k] = problems
    assert broken == {}

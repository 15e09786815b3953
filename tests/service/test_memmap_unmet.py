"""A rule with memmap_on_memory: true on a kernel booted without memory_hotplug.memmap_on_memory=1.

The kernel cannot do that part (writing 1 is EOPNOTSUPP, and a CXL device's attribute reading 1
is not in effect): daxd refuses the memmap part and applies the rest, and says so in the same
words whatever the device's history — a fresh CXL device kmem took with the attribute at 1, one
kmem holds with it at 0, one bound to device_dax, one unbound — in the plan, the apply result
and the device's D-Bus status.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daxd.apply.executor import Outcome
from daxd.plan.steps import Action, Verdict
from daxd.service.status import DeviceState
from tests.fakekernel import KMEM, FakeKernel, GiB
from tests.plan.helpers import apply, driver, load, plan_of
from tests.service.daemon_harness import harness, start, stop

POLICY = """\
rules:
  - name: cxl-movable
    match: {provider: cxl}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
"""
REASON = (
    "memmap_on_memory: true cannot be met: the kernel was booted without "
    "memory_hotplug.memmap_on_memory=1; the rest of the rule is applied without it (the memmap "
    "stays in RAM)"
)
HISTORIES = ["kmem-reads-1", "kmem-reads-0", "device_dax", "unbound"]


def cxl_kernel(base: Path, history: str) -> FakeKernel:
    kernel = FakeKernel(base)  # memory_hotplug.memmap_on_memory reads N
    if history == "kmem-reads-1":  # as the kernel makes it: cxl.c sets the attribute
        kernel.add_cxl_device(size=GiB)
    elif history == "kmem-reads-0":
        kernel.add_cxl_device(size=GiB, memmap_on_memory=False)
    elif history == "device_dax":
        kernel.add_cxl_device(size=GiB, bound="device_dax")
    else:
        kernel.add_cxl_device(size=GiB, bound=None)
    return kernel


def assert_rest_applied(kernel: FakeKernel) -> None:
    assert driver(kernel) == KMEM
    zones = {b.zone for b in kernel.blocks_of("dax0.0")}
    assert zones == {"Movable"}
    assert all(b.online for b in kernel.blocks_of("dax0.0"))


@pytest.mark.parametrize("history", HISTORIES)
def test_the_plan_refuses_only_the_memmap_part(
    fake_kernel_base: Path, tmp_path: Path, history: str
) -> None:
    kernel = cxl_kernel(fake_kernel_base, history)
    plan = plan_of(kernel, load(tmp_path, POLICY))
    # The rest of the rule is to be done: kmem (and its blocks in Movable).
    assert (plan.verdict, plan.reason) == (Verdict.CHANGE, REASON)
    assert Action.SET_MEMMAP not in [s.action for s in plan.steps]  # 1 would be EOPNOTSUPP
    assert plan.desired is not None
    assert plan.desired.memmap_on_memory is True


@pytest.mark.parametrize("history", HISTORIES)
def test_the_apply_does_the_rest_and_is_refused_with_the_reason(
    fake_kernel_base: Path, tmp_path: Path, history: str
) -> None:
    kernel = cxl_kernel(fake_kernel_base, history)
    policy = load(tmp_path, POLICY)
    result = apply(kernel, policy)
    assert (result.outcome, result.error) == (Outcome.REFUSED, REASON)
    assert all(r.ok for r in result.results)
    assert_rest_applied(kernel)
    assert result.final is not None
    assert result.final.memmap_on_memory is False  # not in effect, whatever the attribute reads
    # Planned again: nothing left to do but what the kernel cannot do.
    again = plan_of(kernel, policy)
    assert (again.verdict, again.reason, again.steps) == (Verdict.REFUSED, REASON, ())
    assert apply(kernel, policy).outcome is Outcome.REFUSED


@pytest.mark.parametrize("history", HISTORIES)
def test_the_daemon_publishes_refused_with_the_reason(
    fake_kernel_base: Path, tmp_path: Path, history: str
) -> None:
    kernel = cxl_kernel(fake_kernel_base, history)
    with harness(kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)  # coldplug applies the rest
            status = h.publisher.devices["dax0.0"]
            assert (status.state, status.last_error) == (DeviceState.REFUSED, REASON)
            assert status.memmap_on_memory is False
            assert (status.mode, status.zone) == ("system-ram", "movable")
            (entry,) = await h.daemon.apply(["dax0.0"])  # `daxd apply`
            assert (entry["outcome"], entry["error"]) == ("refused", REASON)
            assert (entry["plan"]["verdict"], entry["plan"]["reason"]) == ("refused", REASON)
            assert entry["memmap_on_memory"] is False
            assert h.daemon.plan_records() == ()  # nothing planned
            await stop(h, task)

        asyncio.run(scenario())
    assert_rest_applied(kernel)

"""A block write the kernel refuses with EINVAL because the block already is as wanted.

Linux answers the current state again with EINVAL ([facts]: ``offline`` to an offline block,
``online_movable`` to an online one). When the kernel itself (still onlining what kmem added) or
someone else got there between daxd's read and its write, that is no failure: daxd reads the
block again and counts the step as done, or plans again when the block changed otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from daxd.apply.executor import ApplyOptions, DeviceResult, Outcome, StepResult, apply_device
from daxd.kernel.scan import read_hotplug_settings
from daxd.plan.steps import Action
from tests.fakekernel import FakeKernel, GiB
from tests.plan.helpers import DEVDAX, RAM_MOVABLE, blocks, driver, load, walk_order

MEMORY = "devices/system/memory"


def apply_meanwhile(
    kernel: FakeKernel, policy_text: str, tmp_path: Path, meanwhile: Callable[[StepResult], None]
) -> DeviceResult:
    """apply_device() with ``meanwhile`` run after each of daxd's writes (what the kernel or
    another writer does in between)."""
    opts = ApplyOptions(
        proc_root=kernel.proc_root, offline_timeout=5.0, on_step=lambda _, r: meanwhile(r)
    )
    hotplug = read_hotplug_settings(kernel.sysfs)
    return apply_device(kernel.sysfs, load(tmp_path, policy_text), "dax0.0", hotplug, opts)


def state(kernel: FakeKernel, index: int) -> str | None:
    return kernel.sysfs.read(f"{MEMORY}/memory{index}/state")


def offline_hmem(base: Path) -> tuple[FakeKernel, list[int]]:
    """hmem kmem-bound with its blocks offline (auto_online_blocks=offline at the bind)."""
    kernel = FakeKernel(base, auto_online_blocks="offline")
    kernel.add_hmem_device(size=GiB)
    return kernel, walk_order([b.index for b in kernel.blocks_of("dax0.0")])


def test_a_block_the_kernel_onlined_first_in_the_wanted_zone_is_done(
    fake_kernel_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "daxd")
    kernel, order = offline_hmem(fake_kernel_base)
    raced: list[int] = []

    def meanwhile(r: StepResult) -> None:
        # after each of daxd's onlines, the next block comes online Movable by another hand
        nxt = order.index(r.step.block) + 1 if r.step.block in order else len(order)
        if r.ok and nxt < len(order) and state(kernel, order[nxt]) == "offline":
            kernel.sysfs.write(f"{MEMORY}/memory{order[nxt]}/state", "online_movable")
            raced.append(order[nxt])

    result = apply_meanwhile(kernel, RAM_MOVABLE, tmp_path, meanwhile)
    assert result.outcome is Outcome.APPLIED, result.error
    assert raced  # daxd's write for each of these was answered EINVAL
    assert all(r.ok for r in result.results)
    assert {b.zones for b in blocks(kernel)} == {"Movable"}
    assert "FAILED" not in caplog.text
    assert "online_movable already (EINVAL): done" in caplog.text


def test_a_block_onlined_meanwhile_in_another_zone_is_planned_again(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel, order = offline_hmem(fake_kernel_base)
    victim = order[3]

    def meanwhile(r: StepResult) -> None:
        if r.step.block == order[2] and state(kernel, victim) == "offline":
            kernel.sysfs.write(f"{MEMORY}/memory{victim}/state", "online_kernel")  # Normal

    result = apply_meanwhile(kernel, RAM_MOVABLE, tmp_path, meanwhile)
    assert result.outcome is Outcome.APPLIED, result.error
    assert all(r.ok for r in result.results)
    # the next round moved it: offline, then online_movable
    moves = [(r.step.action, r.step.value) for r in result.results if r.step.block == victim]
    assert moves == [(Action.OFFLINE_BLOCK, "offline"), (Action.ONLINE_BLOCK, "online_movable")]
    assert {b.zones for b in blocks(kernel)} == {"Movable"}


def test_a_block_someone_offlined_first_is_done(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    order = walk_order([b.index for b in hmem_kernel.blocks_of("dax0.0")])
    first: list[int] = []

    def meanwhile(r: StepResult) -> None:
        if r.step.block == order[0] and not first:
            hmem_kernel.sysfs.write(f"{MEMORY}/memory{order[1]}/state", "offline", timeout=5)
            first.append(order[1])

    result = apply_meanwhile(hmem_kernel, DEVDAX, tmp_path, meanwhile)
    assert result.outcome is Outcome.APPLIED, result.error
    assert first == [order[1]]
    assert all(r.ok for r in result.results)
    assert driver(hmem_kernel) == "device_dax"


def test_einval_on_a_block_that_did_not_change_is_a_failure(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel, order = offline_hmem(fake_kernel_base)
    kernel.fail(f"{MEMORY}/memory{order[0]}/state", 22)  # EINVAL, and the block stays offline
    result = apply_meanwhile(kernel, RAM_MOVABLE, tmp_path, lambda r: None)
    assert result.outcome is Outcome.FAILED
    failed = [r for r in result.results if not r.ok]
    assert [(r.step.block, r.errno) for r in failed] == [(order[0], "EINVAL")]

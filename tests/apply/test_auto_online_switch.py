"""auto_online_blocks switched off for the length of a kmem bind (planner._kmem_bind_steps).

The kernel onlines hot-added memory inside the bind; with Debian's ``online`` that is ZONE_NORMAL,
where a movable rule would have to offline every block again, and in address order, which Linux
6.12 makes quadratic. daxd binds with ``offline`` and onlines the blocks itself, and puts the
setting back: after the bind, after a failed bind, and (from the record in its runtime folder)
after a crash in between.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daxd.apply import autoonline
from daxd.apply.executor import ApplyOptions, Outcome, StepResult, apply_device
from daxd.kernel.layout import AUTO_ONLINE_PATH as AUTO
from daxd.kernel.scan import read_hotplug_settings
from daxd.plan.steps import Action
from tests.fakekernel import FakeKernel
from tests.plan.helpers import apply, auto_online, blocks, driver, load

PMEM_MOVABLE = "rules:\n  - mode: system-ram\n    zone: movable\n    allow_pmem_data_loss: true\n"
PMEM_OFFLINE = "rules:\n  - mode: system-ram\n    online: false\n    allow_pmem_data_loss: true\n"


def test_blocks_come_online_movable_without_a_detour(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    seen_during_bind: list[tuple[str | None, bool]] = []

    def on_step(_name: str, r: StepResult) -> None:
        if r.step.action is Action.NEW_ID:
            seen_during_bind.append(
                (auto_online(pmem_kernel), (run / autoonline.RECORD_NAME).exists())
            )

    opts = ApplyOptions(proc_root=pmem_kernel.proc_root, runtime_dir=run, on_step=on_step)
    policy = load(tmp_path, PMEM_MOVABLE)
    result = apply_device(
        pmem_kernel.sysfs, policy, "dax0.0", read_hotplug_settings(pmem_kernel.sysfs), opts
    )
    assert result.outcome is Outcome.APPLIED, result.error
    # The bind ran with auto-onlining off, with the record in place; then daxd onlined each
    # block once, straight into Movable (nothing was offlined).
    assert seen_during_bind == [("offline", True)]
    block_steps = [(r.step.action, r.step.value) for r in result.results if r.step.block]
    assert block_steps == [(Action.ONLINE_BLOCK, "online_movable")] * 7
    assert {(b.state, b.zones) for b in blocks(pmem_kernel)} == {("online", "Movable")}
    assert len(blocks(pmem_kernel)) == 7
    # Put back, record gone.
    assert auto_online(pmem_kernel) == "online"
    assert not (run / autoonline.RECORD_NAME).exists()
    restore = [r for r in result.results if r.step.action is Action.RESTORE_AUTO_ONLINE]
    assert [(r.step.value, r.ok) for r in restore] == [("online", True)]


def test_online_false_binds_with_the_blocks_offline(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    result = apply(pmem_kernel, load(tmp_path, PMEM_OFFLINE))
    assert result.outcome is Outcome.APPLIED, result.error
    assert {b.state for b in blocks(pmem_kernel)} == {"offline"}
    assert [r for r in result.results if r.step.action is Action.OFFLINE_BLOCK] == []
    assert auto_online(pmem_kernel) == "online"


def test_a_failed_switch_fails_the_apply_and_changes_nothing(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    pmem_kernel.fail(AUTO, errno.EIO)
    result = apply(pmem_kernel, load(tmp_path, PMEM_MOVABLE), runtime_dir=tmp_path / "run")
    assert result.outcome is Outcome.FAILED
    assert "auto_online_blocks" in result.error
    assert driver(pmem_kernel) == "device_dax"  # given back
    assert auto_online(pmem_kernel) == "online"
    assert not (tmp_path / "run" / autoonline.RECORD_NAME).exists()
    assert apply(pmem_kernel, load(tmp_path, PMEM_MOVABLE)).outcome is Outcome.APPLIED


def test_a_failed_bind_puts_the_setting_back(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    pmem_kernel.fail("bus/dax/drivers/kmem/new_id", errno.ENOMEM)
    result = apply(pmem_kernel, load(tmp_path, PMEM_MOVABLE), runtime_dir=tmp_path / "run")
    assert result.outcome is Outcome.FAILED
    assert auto_online(pmem_kernel) == "online"
    assert not (tmp_path / "run" / autoonline.RECORD_NAME).exists()


def test_a_failed_restore_fails_the_apply_and_the_next_apply_repairs_it(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    policy = load(tmp_path, PMEM_MOVABLE)

    def on_step(_name: str, r: StepResult) -> None:
        if r.step.action is Action.NEW_ID and r.ok:
            pmem_kernel.fail(AUTO, errno.EIO)  # the restore, right after the bind

    opts = ApplyOptions(proc_root=pmem_kernel.proc_root, runtime_dir=run, on_step=on_step)
    result = apply_device(
        pmem_kernel.sysfs, policy, "dax0.0", read_hotplug_settings(pmem_kernel.sysfs), opts
    )
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("auto_online_blocks is left switched: writing 'online'")
    assert auto_online(pmem_kernel) == "offline"
    assert (run / autoonline.RECORD_NAME).exists()  # for the next apply or daxd start
    # The bind itself went through: the blocks are there, still offline.
    assert driver(pmem_kernel) == "kmem"
    assert {b.state for b in blocks(pmem_kernel)} == {"offline"}
    again = apply(pmem_kernel, policy, runtime_dir=run)
    assert again.outcome is Outcome.APPLIED
    assert {(b.state, b.zones) for b in blocks(pmem_kernel)} == {("online", "Movable")}
    assert auto_online(pmem_kernel) == "online"
    assert not (run / autoonline.RECORD_NAME).exists()


# --- the record and recover() ------------------------------------------------------------------


def _record(run: Path, text: str | bytes) -> None:
    run.mkdir(exist_ok=True)
    record = run / autoonline.RECORD_NAME
    if isinstance(text, bytes):
        record.write_bytes(text)  # not even UTF-8
    else:
        record.write_text(text)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_recover_puts_back_what_a_dead_daxd_left(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    fake_kernel.sysfs.write(AUTO, "online_movable")
    _record(tmp_path, f"online online_movable {_dead_pid()}\n")
    done = autoonline.recover(fake_kernel.sysfs, tmp_path)
    assert done is not None
    assert done.startswith("put auto_online_blocks back to online")
    assert auto_online(fake_kernel) == "online"
    assert not (tmp_path / autoonline.RECORD_NAME).exists()
    assert autoonline.recover(fake_kernel.sysfs, tmp_path) is None  # nothing left to do


def test_recover_leaves_a_setting_someone_changed_since(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    fake_kernel.sysfs.write(AUTO, "offline")  # the operator's choice after the crash
    _record(tmp_path, f"online online_movable {_dead_pid()}\n")
    done = autoonline.recover(fake_kernel.sysfs, tmp_path)
    assert done is not None
    assert "left as it is" in done
    assert auto_online(fake_kernel) == "offline"
    assert not (tmp_path / autoonline.RECORD_NAME).exists()


def test_recover_does_not_race_a_daxd_still_binding(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    fake_kernel.sysfs.write(AUTO, "online_movable")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            _record(tmp_path, f"online online_movable {other.pid}\n")
            assert autoonline.recover(fake_kernel.sysfs, tmp_path) is None
            assert auto_online(fake_kernel) == "online_movable"
            assert (tmp_path / autoonline.RECORD_NAME).exists()
        finally:
            other.kill()


@pytest.mark.parametrize(
    "text",
    ["", "online\n", "online bogus 1\n", "online online_movable x\n", "\x00\xff", b"\xff\xfe"],
)
def test_a_damaged_record_is_named_and_dropped(
    fake_kernel: FakeKernel, tmp_path: Path, text: str | bytes
) -> None:
    fake_kernel.sysfs.write(AUTO, "online_movable")
    _record(tmp_path, text)
    done = autoonline.recover(fake_kernel.sysfs, tmp_path)
    assert done is not None
    assert str(tmp_path / autoonline.RECORD_NAME) in done
    assert auto_online(fake_kernel) == "online_movable"  # not guessed at
    assert not (tmp_path / autoonline.RECORD_NAME).exists()


def test_own_pid_counts_as_a_leftover(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    """A restore that failed earlier in this same process is retried by its next apply."""
    fake_kernel.sysfs.write(AUTO, "online_kernel")
    _record(tmp_path, f"online_movable online_kernel {os.getpid()}\n")
    assert autoonline.recover(fake_kernel.sysfs, tmp_path) is not None
    assert auto_online(fake_kernel) == "online_movable"


def test_recover_keeps_the_record_when_the_write_does_not_take(
    fake_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kernel.sysfs.write(AUTO, "offline")
    _record(tmp_path, f"online offline {_dead_pid()}\n")
    monkeypatch.setattr(fake_kernel.sysfs, "write", lambda *_a, **_k: None)  # accepted, no effect
    done = autoonline.recover(fake_kernel.sysfs, tmp_path)
    assert done == "cannot put auto_online_blocks back to online: it reads offline after the write"
    assert (tmp_path / autoonline.RECORD_NAME).exists()  # tried again next time

"""The one-writer lock: held across processes, named when busy, dropped when the holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daxd.apply.writer_lock import LockBusy, LockUnavailable, WriterLock

HOLD = """
import sys, time
from pathlib import Path
from daxd.apply.writer_lock import WriterLock
lock = WriterLock(Path(sys.argv[1]), "daxd run")
assert lock.try_acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(runtime: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(runtime), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_waits_a_bounded_time_and_names_the_holder(tmp_path: Path) -> None:
    holder = hold(tmp_path / "run", 30)
    try:
        start = time.monotonic()
        with pytest.raises(LockBusy) as e:
            WriterLock(tmp_path / "run", "daxd apply").acquire(timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 5
        assert f"pid {holder.pid} (daxd run)" in str(e.value)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_free_once_its_holder_dies(tmp_path: Path) -> None:
    holder = hold(tmp_path / "run", 30)
    holder.kill()
    holder.wait()
    lock = WriterLock(tmp_path / "run", "daxd apply")
    lock.acquire(timeout=2)
    assert lock.held
    assert lock.holder() == f"pid {os.getpid()} (daxd apply)"
    lock.release()


def test_one_process_two_locks_exclude_each_other(tmp_path: Path) -> None:
    with WriterLock(tmp_path, "daxd run") as first:
        assert first.try_acquire()
        second = WriterLock(tmp_path, "daxd apply")
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
        second.release()


def test_a_lock_file_replaced_while_waiting_is_locked_anew(tmp_path: Path) -> None:
    """The runtime folder made again (RuntimeDirectory=): the old file's lock counts no more."""
    holder = hold(tmp_path / "run", 30)
    try:
        (tmp_path / "run" / "lock").unlink()
        lock = WriterLock(tmp_path / "run", "daxd apply")
        assert lock.try_acquire()
        assert WriterLock(tmp_path / "run", "x").try_acquire() is False
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LockUnavailable, match="cannot open"):
        WriterLock(blocker / "run", "daxd apply").try_acquire()

"""Real writes with a timeout (Sysfs.write, _write_interruptible) on FIFOs that block them.

The fake kernel answers writes in Python; these tests exercise the signal that interrupts a write
stuck in the kernel, with a full FIFO standing in for an offline that does not finish.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from daxd.kernel import sysfs as sysfs_module
from daxd.kernel.sysfs import _INTERRUPT_SIGNAL, Sysfs, SysfsError, WriteTimeout


@pytest.fixture
def signals() -> Iterator[list[int]]:
    """The handler install_interrupt_handler() sets, counting what reaches the process."""
    received: list[int] = []

    def handler(sig: int, _frame: FrameType | None) -> None:
        received.append(sig)

    old = signal.signal(_INTERRUPT_SIGNAL, handler)
    signal.siginterrupt(_INTERRUPT_SIGNAL, True)
    yield received
    signal.signal(_INTERRUPT_SIGNAL, old)


@pytest.fixture
def full_fifos(tmp_path: Path) -> Iterator[Sysfs]:
    """A Sysfs whose attributes fifo0 and fifo1 are FIFOs with a reader and a full buffer."""
    fds = []
    for name in ("fifo0", "fifo1"):
        os.mkfifo(tmp_path / name)
        fds.append(os.open(tmp_path / name, os.O_RDONLY | os.O_NONBLOCK))  # open(O_WRONLY) waits
        w = os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK)
        fds.append(w)
        for chunk in (b"x" * 65536, b"x"):  # then bytewise: not a byte of room left
            try:
                while True:
                    os.write(w, chunk)
            except BlockingIOError:
                pass
    yield Sysfs(tmp_path)
    for fd in fds:
        os.close(fd)


def _timed_write(sysfs: Sysfs, rel: str, timeout: float) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        sysfs.write(rel, "offline", timeout=timeout)
    except SysfsError as e:
        return time.monotonic() - start, e
    return time.monotonic() - start, None


@pytest.mark.parametrize(("main_timeout", "worker_timeout"), [(1.0, 0.1), (0.1, 1.0)])
def test_concurrent_writers_are_interrupted_each_at_its_own_deadline(
    signals: list[int], full_fifos: Sysfs, main_timeout: float, worker_timeout: float
) -> None:
    worker_result: list[tuple[float, BaseException | None]] = []
    worker = threading.Thread(
        target=lambda: worker_result.append(_timed_write(full_fifos, "fifo1", worker_timeout))
    )
    worker.start()
    main_result = _timed_write(full_fifos, "fifo0", main_timeout)
    worker.join(10)
    assert not worker.is_alive()
    results = ((main_result, main_timeout), (worker_result[0], worker_timeout))
    for (elapsed, error), timeout in results:
        assert isinstance(error, WriteTimeout), error
        assert f"within {timeout:g} s" in str(error)
        assert elapsed >= timeout  # the other writer's interrupt did not end this write
        if timeout < 1.0:
            assert elapsed < 0.9  # nor did this one wait for the other writer's deadline
    assert signals  # the interrupts went through the installed handler, not SIG_DFL


def test_a_write_that_ignores_the_signal_is_signalled_until_it_returns(
    signals: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may retry after a signal; the interrupts repeat every 0.05 s meanwhile."""
    libc = sysfs_module._libc
    r, w = os.pipe()
    interrupted: list[int] = []

    class StubbornLibc:
        def write(self, _fd: int, _buf: Any, _n: int) -> int:
            scratch = ctypes.create_string_buffer(1)
            while len(interrupted) < 3:  # a read of an empty pipe: only a signal ends it
                assert libc.read(r, scratch, 1) == -1
                interrupted.append(ctypes.get_errno())
            return -1  # errno is the last read's EINTR

    monkeypatch.setattr(sysfs_module, "_libc", StubbornLibc())
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as caught:
            sysfs_module._write_interruptible(w, b"offline", 0.2)
    finally:
        os.close(r)
        os.close(w)
    assert caught.value.errno == errno.ETIMEDOUT
    assert interrupted == [errno.EINTR] * 3
    assert time.monotonic() - start >= 0.2 + 2 * 0.05


def test_quick_writes_share_one_thread_and_are_never_signalled(
    signals: list[int], tmp_path: Path
) -> None:
    (tmp_path / "attr").write_text("")
    sysfs = Sysfs(tmp_path)
    sysfs.write("attr", "1", timeout=0.3)
    threads = threading.active_count()
    for _ in range(50):
        sysfs.write("attr", "1", timeout=0.3)
    assert threading.active_count() == threads
    time.sleep(0.5)  # past every deadline: a disarmed write must not be signalled
    assert signals == []


def test_other_errors_are_not_timeouts(signals: list[int]) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as caught:
            sysfs_module._write_interruptible(r, b"1", 5.0)  # the read end
    finally:
        os.close(r)
        os.close(w)
    assert type(caught.value) is OSError
    assert caught.value.errno == errno.EBADF


def test_root_resolved_once_it_exists(tmp_path: Path) -> None:
    """A Sysfs may be made before its tree: a root that is missing at first is not cached."""
    sysfs = Sysfs(tmp_path / "sys")
    with pytest.raises(SysfsError):
        sysfs.write("attr", "1")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "attr").write_text("")
    (tmp_path / "sys").symlink_to(tmp_path / "real")
    sysfs.write("attr", "1")
    assert sysfs.realpath("attr") == "attr"
    assert (tmp_path / "real" / "attr").read_text() == "1"

"""Access to a sysfs tree below an injectable root (``/sys`` by default).

Every read and write of daxd goes through :class:`Sysfs`, so tests can point it at a tree in a
temporary folder and a fake kernel can answer writes the way the real one does (see
``tests/fakekernel``).  Writes that can block in the kernel (offlining a memory block loops until
the pages migrate or a signal arrives) take a timeout that interrupts the system call.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

from daxd.kernel.errors import errno_name, explain_write_error

# Names daxd ever builds a path from; anything else read from sysfs is never used in a path.
SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.:+-]+\Z")

# The signal that interrupts a write past its timeout; installed by install_interrupt_handler().
_INTERRUPT_SIGNAL = signal.SIGUSR2
_libc = ctypes.CDLL(None, use_errno=True)


class SysfsError(Exception):
    """A sysfs operation failed; ``str()`` is a complete, human sentence."""

    def __init__(self, path: str, err: int, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.errno = err
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)


class WriteTimeout(SysfsError):
    """The kernel did not answer a write in time; the write was interrupted (EINTR)."""


def install_interrupt_handler() -> None:
    """Make the timeout signal interrupt system calls instead of killing the process.

    Must be called from the main thread before a write with a timeout is made.
    """
    signal.signal(_INTERRUPT_SIGNAL, lambda _sig, _frame: None)
    signal.siginterrupt(_INTERRUPT_SIGNAL, True)


# A write the kernel does not let go of on the first signal is signalled again at this interval.
_RESEND_INTERVAL = 0.05


class _Alarm:
    __slots__ = ("deadline", "sent", "tid")

    def __init__(self, tid: int, deadline: float) -> None:
        self.tid = tid
        self.deadline = deadline  # time.monotonic() of the next signal
        self.sent = False


class _Interrupter:
    """Signals threads whose write is past its deadline, from one long-lived daemon thread.

    Starting a thread per write cost ~20 ms in an emulated guest, and every offline of a memory
    block is such a write.  Any number of threads may be armed at once.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also after fork(): the child has neither the signalling thread nor the armed writers.
        self._cond = threading.Condition()
        self._alarms: set[_Alarm] = set()
        self._wake = math.inf  # when the waiting thread next looks at the alarms
        self._thread: threading.Thread | None = None

    def arm(self, timeout: float) -> _Alarm:
        """Signal the calling thread once ``timeout`` seconds have passed, until disarmed."""
        alarm = _Alarm(threading.get_ident(), time.monotonic() + timeout)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="daxd-write-timeout", daemon=True
                )
                self._thread.start()
            self._alarms.add(alarm)
            if alarm.deadline < self._wake:  # else it wakes up in time anyway: spare a switch
                self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> bool:
        """Stop signalling; whether any signal was sent.  No signal is sent once this returns."""
        with self._cond:
            self._alarms.discard(alarm)
            return alarm.sent

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for alarm in self._alarms:
                    if alarm.deadline <= now:
                        # Under the lock: the thread is still in its write, so still alive.
                        signal.pthread_kill(alarm.tid, _INTERRUPT_SIGNAL)
                        alarm.sent = True
                        alarm.deadline = now + _RESEND_INTERVAL
                self._wake = min((a.deadline for a in self._alarms), default=math.inf)
                self._cond.wait(None if self._wake == math.inf else self._wake - now)


_interrupter = _Interrupter()
os.register_at_fork(after_in_child=_interrupter._reset)


def _write_interruptible(fd: int, data: bytes, timeout: float) -> None:
    """write(2) that gives up after ``timeout`` seconds by signalling the writing thread.

    Python's os.write retries on EINTR (PEP 475), so libc's write is called directly.
    """
    buf = ctypes.create_string_buffer(data, len(data))
    alarm = _interrupter.arm(timeout)
    try:
        n = _libc.write(fd, buf, len(data))
        err = ctypes.get_errno()
    finally:
        interrupted = _interrupter.disarm(alarm)
    if n < 0:
        if err == errno.EINTR and interrupted:
            raise TimeoutError(errno.ETIMEDOUT, "timed out")
        raise OSError(err, os.strerror(err))


class Sysfs:
    """A sysfs tree; paths are given relative to the root, e.g. ``"bus/dax/devices"``."""

    def __init__(self, root: Path | str = "/sys") -> None:
        self.root = Path(root)
        self._real_root: str | None = None

    def path(self, rel: str) -> Path:
        return self.root / rel

    def _at(self, rel: str) -> str:
        """``path(rel)`` as a string: what the hot reads use (a Path costs ~10 µs to build)."""
        return os.path.join(self.root, rel)

    def _resolved_root(self) -> str:
        """``os.path.realpath(root)``, resolved once the root exists (it never changes then)."""
        if self._real_root is None:
            real = os.path.realpath(self.root)
            if not os.path.isdir(real):
                return real  # not built yet (tests make the tree later): resolve again next time
            self._real_root = real
        return self._real_root

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self._at(rel))

    def read(self, rel: str) -> str | None:
        """The stripped contents, or None when the attribute does not exist."""
        try:
            with open(self._at(rel), "rb") as f:
                data = f.read(65536)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as e:
            raise SysfsError(rel, e.errno or 0, f"{rel}: cannot read: {e.strerror}") from None
        return data.decode("utf-8", errors="replace").strip()

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self._at(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise SysfsError(rel, e.errno or 0, f"{rel}: cannot list: {e.strerror}") from None

    def link_name(self, rel: str) -> str | None:
        """The last component of a symlink's target (e.g. a device's ``driver``), or None."""
        try:
            return os.path.basename(os.readlink(self._at(rel)))
        except OSError:
            return None

    def realpath(self, rel: str) -> str:
        """The resolved path below the root, without the root (``devices/...``)."""
        return os.path.relpath(os.path.realpath(self._at(rel)), self._resolved_root())

    def write(self, rel: str, value: str, timeout: float | None = None) -> None:
        """Write ``value`` to an attribute; failures raise SysfsError with the kernel's meaning."""
        for part in rel.split("/"):
            if not SAFE_COMPONENT.match(part) or part in (".", ".."):
                raise SysfsError(rel, errno.EINVAL, f"refusing to write to unsafe path {rel!r}")
        # A tree given with --sysfs (a dump) may hold symlinks to anywhere; never follow one out.
        root = self._resolved_root()
        if os.path.commonpath([root, os.path.realpath(self._at(rel))]) != root:
            raise SysfsError(
                rel, errno.EINVAL, f"refusing to write to {rel}: it leads out of {self.root}"
            )
        try:
            self._raw_write(rel, value, timeout)
        except TimeoutError:
            within = f"within {timeout:g} s" if timeout is not None else "in time"
            raise WriteTimeout(
                rel,
                errno.ETIMEDOUT,
                f"writing {value!r} to {rel} did not finish {within}; interrupted",
            ) from None
        except OSError as e:
            err = e.errno or 0
            raise SysfsError(rel, err, explain_write_error(rel, value, err)) from None

    def _raw_write(self, rel: str, value: str, timeout: float | None) -> None:
        fd = os.open(self._at(rel), os.O_WRONLY | os.O_CLOEXEC)
        try:
            data = value.encode()
            if timeout is None:
                os.write(fd, data)
            else:
                _write_interruptible(fd, data, timeout)
        finally:
            os.close(fd)

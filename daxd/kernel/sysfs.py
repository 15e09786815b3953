"""Access to a sysfs tree below an injectable root (``/sys`` by default).

Every read and write of daxd goes through :class:`Sysfs`, so tests can point it at a tree in a
temporary folder and a fake kernel can answer writes the way the real one does (see
``tests/fakekernel``).  Writes that can block in the kernel (offlining a memory block loops until
the pages migrate or a signal arrives) take a timeout that interrupts the system call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import threading
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


def _write_interruptible(fd: int, data: bytes, timeout: float) -> None:
    """write(2) that gives up after ``timeout`` seconds by signalling the writing thread.

    Python's os.write retries on EINTR (PEP 475), so libc's write is called directly.
    """
    tid = threading.get_ident()
    done = threading.Event()

    def interrupt() -> None:
        while not done.wait(0.05 if interrupt_sent.is_set() else timeout):
            signal.pthread_kill(tid, _INTERRUPT_SIGNAL)
            interrupt_sent.set()

    interrupt_sent = threading.Event()
    timer = threading.Thread(target=interrupt, daemon=True)
    timer.start()
    try:
        buf = ctypes.create_string_buffer(data, len(data))
        n = _libc.write(fd, buf, len(data))
        err = ctypes.get_errno()
    finally:
        done.set()
        timer.join()
    if n < 0:
        if err == errno.EINTR and interrupt_sent.is_set():
            raise TimeoutError(errno.ETIMEDOUT, "timed out")
        raise OSError(err, os.strerror(err))


class Sysfs:
    """A sysfs tree; paths are given relative to the root, e.g. ``"bus/dax/devices"``."""

    def __init__(self, root: Path | str = "/sys") -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def _at(self, rel: str) -> str:
        """``path(rel)`` as a string: what the hot reads use (a Path costs ~10 µs to build)."""
        return os.path.join(self.root, rel)

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
        real = os.path.realpath(self._at(rel))
        root = os.path.realpath(self.root)
        return os.path.relpath(real, root)

    def write(self, rel: str, value: str, timeout: float | None = None) -> None:
        """Write ``value`` to an attribute; failures raise SysfsError with the kernel's meaning."""
        for part in rel.split("/"):
            if not SAFE_COMPONENT.match(part) or part in (".", ".."):
                raise SysfsError(rel, errno.EINVAL, f"refusing to write to unsafe path {rel!r}")
        # A tree given with --sysfs (a dump) may hold symlinks to anywhere; never follow one out.
        root = os.path.realpath(self.root)
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

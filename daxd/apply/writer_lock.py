"""One writer at a time: the lock that `daxd run` holds for its lifetime and `daxd apply` for
its run, in daxd's runtime folder (``/run/daxd/lock``).

flock(2) on an open file: the kernel drops it when the holder dies, so a crash never leaves it
held. The holder writes its pid and what it is into the file, so that a writer that waits in
vain can name it. The folder may be removed and made again while a writer waits (systemd's
RuntimeDirectory=): a lock taken on a file that is no longer the one at the path is taken again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "lock"
_POLL = 0.05


class LockBusy(Exception):
    """Another writer holds the lock; ``str()`` names it."""


class LockUnavailable(Exception):
    """The lock file cannot be made or opened (not root, read-only folder); ``str()`` says why."""


class WriterLock:
    def __init__(self, runtime_dir: Path, what: str) -> None:
        self.path = runtime_dir / LOCK_NAME
        self.what = what  # "daxd run", "daxd apply": said to whoever waits
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; True when this process holds it now."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise LockUnavailable(f"cannot open {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise LockUnavailable(f"cannot lock {self.path}: {e.strerror}") from None
        if not _same_file(fd, self.path):  # removed while we waited: lock the new one
            os.close(fd)
            return self.try_acquire()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self._fd = fd
        return True

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting at most ``timeout`` seconds; LockBusy names the holder."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"another writer holds {self.path}: {self.holder()}; "
                    f"gave up after {timeout:g} s"
                )
            time.sleep(_POLL)

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it ("pid 1234 (daxd run)")."""
        try:
            words = self.path.read_text(encoding="utf-8", errors="replace").split(None, 1)
        except OSError:
            return "unknown"
        if not words or not words[0].isdigit():
            return "unknown"
        what = words[1].strip() if len(words) > 1 else "?"
        return f"pid {words[0]} ({what})"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock; the file stays for the next writer

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

"""The record of an ``auto_online_blocks`` switched for one kmem bind.

The executor switches the kernel's global setting only for the length of a bind and puts it
back right after, also when the bind fails. A daxd killed in between (SIGKILL, power cut of the
service, OOM) cannot; it leaves this record in its runtime folder (``/run/daxd``, kept across
service restarts, gone at reboot along with the setting itself), and the next daxd that starts
puts the value back, unless someone changed it meanwhile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daxd.kernel.layout import AUTO_ONLINE_PATH
from daxd.kernel.model import OnlineType
from daxd.kernel.sysfs import Sysfs, SysfsError

log = logging.getLogger("daxd.apply")

RECORD_NAME = "auto_online_blocks.switched"
RUNTIME_DIR = Path("/run/daxd")


def save(runtime_dir: Path, original: str, temporary: str) -> None:
    """Write the record (atomically); raises OSError when it cannot."""
    runtime_dir.mkdir(mode=0o755, exist_ok=True)
    tmp = runtime_dir / f".{RECORD_NAME}.{os.getpid()}"
    tmp.write_text(f"{original} {temporary} {os.getpid()}\n")
    tmp.replace(runtime_dir / RECORD_NAME)


def clear(runtime_dir: Path) -> None:
    try:
        (runtime_dir / RECORD_NAME).unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot remove %s: %s", runtime_dir / RECORD_NAME, e.strerror)


def recover(sysfs: Sysfs, runtime_dir: Path) -> str | None:
    """Put back a setting a previous daxd left switched; what was done, as a sentence, or None."""
    path = runtime_dir / RECORD_NAME
    try:
        words = path.read_bytes().decode("ascii", errors="replace").split()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    known = all(OnlineType.parse(w) is not None for w in words[:2])
    if len(words) != 3 or not known or not words[2].isdigit():
        clear(runtime_dir)
        return f"ignored {path}: not 'ORIGINAL TEMPORARY PID'"
    original, temporary, pid = words[0], words[1], int(words[2])
    if pid != os.getpid() and _alive(pid):
        return None  # that daxd is still binding; it puts the value back itself
    try:
        now = sysfs.read(AUTO_ONLINE_PATH)
        if now != temporary:
            clear(runtime_dir)
            return (
                f"auto_online_blocks is {now or 'unreadable'}, not the {temporary} a previous "
                "daxd set for a kmem bind; left as it is"
            )
        sysfs.write(AUTO_ONLINE_PATH, original)
        now = sysfs.read(AUTO_ONLINE_PATH)
    except SysfsError as e:
        return f"cannot put auto_online_blocks back to {original}: {e.message}"
    if now != original:  # the record stays: the next apply or start tries again
        return f"cannot put auto_online_blocks back to {original}: it reads {now} after the write"
    clear(runtime_dir)
    return (
        f"put auto_online_blocks back to {original} (a previous daxd stopped during a kmem bind "
        f"with it switched to {temporary})"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True

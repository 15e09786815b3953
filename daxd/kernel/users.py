"""Processes using /dev/daxX.Y: unbinding device_dax under them succeeds and they get SIGBUS.

Found through procfs like fuser/lsof do: ``/proc/PID/fd/*`` links to the device node, or
``/proc/PID/maps`` lines whose path is the device node (a mapping outlives a closed fd).
Matching is by path: a process that opened the device through another node (a bind mount, a udev
symlink resolved differently) is not seen.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_DEVNAME = re.compile(r"^dax[0-9]+\.[0-9]+\Z")
_DELETED = " (deleted)"


@dataclass(frozen=True)
class DeviceUser:
    pid: int
    comm: str
    how: str  # "open", "mapped" or "open, mapped"


def find_device_users(proc_root: Path, devname: str) -> list[DeviceUser]:
    """Processes that have ``/dev/<devname>`` open or mapped, by pid.

    Processes that exit mid-scan are skipped.  One whose fd table or maps daxd may not read
    (EACCES: no CAP_SYS_PTRACE) is listed with ``how="cannot inspect"``: it might be mapping
    the device, and a SIGBUS is not a risk to take on a guess.
    """
    if not _DEVNAME.match(devname):
        raise ValueError(f"not a dax device name: {devname!r}")
    node = f"/dev/{devname}"
    try:
        pids = sorted(int(e) for e in os.listdir(proc_root) if e.isdigit())
    except OSError:
        return []
    users = []
    for pid in pids:
        base = proc_root / str(pid)
        found = (("open", _has_fd(base, node)), ("mapped", _maps(base, node)))
        if any(hit is None for _, hit in found):
            users.append(DeviceUser(pid, _comm(base), "cannot inspect"))
            continue
        how = [word for word, hit in found if hit]
        if how:
            users.append(DeviceUser(pid, _comm(base), ", ".join(how)))
    return users


def _is_node(path: str, node: str) -> bool:
    return path == node or path == node + _DELETED


def _has_fd(base: Path, node: str) -> bool | None:
    """Whether an fd of the process is the node; None when we may not look."""
    try:
        fds = os.listdir(base / "fd")
    except PermissionError:
        return None
    except OSError:
        return False
    for fd in fds:
        try:
            if _is_node(os.readlink(base / "fd" / fd), node):
                return True
        except OSError:
            continue  # closed or the process exited meanwhile
    return False


def _maps(base: Path, node: str) -> bool | None:
    """Whether the process maps the node; None when we may not look."""
    try:
        with open(base / "maps", encoding="utf-8", errors="replace") as f:
            # "start-end perms offset dev inode   path": the path is everything after field 5.
            return any(
                len(parts := line.split(None, 5)) == 6 and _is_node(parts[5].rstrip("\n"), node)
                for line in f
            )
    except PermissionError:
        return None
    except OSError:
        return False


def _comm(base: Path) -> str:
    try:
        return (base / "comm").read_text(encoding="utf-8", errors="replace").strip() or "?"
    except OSError:
        return "?"

"""Processes using /dev/daxX.Y: unbinding device_dax under them succeeds and they get SIGBUS.

Found through procfs like fuser/lsof do: ``/proc/PID/fd/*`` links to the device node, or
``/proc/PID/maps`` lines whose path is the device node (a mapping outlives a closed fd).
Matching is by path: a process that opened the device through another node (a bind mount, a udev
symlink resolved differently) is not seen.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daxd.kernel.model import DRIVER_DEVDAX, KernelState

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
    targets = (node, node + _DELETED)
    needle = node.encode()
    root = os.fspath(proc_root)
    try:
        pids = sorted(int(e) for e in os.listdir(root) if e.isdigit())
    except OSError:
        return []
    # Plain strings throughout: this runs before every unbind, over every process, and building
    # Path objects was most of its cost in a slow (emulated) guest.
    users = []
    for pid in pids:
        base = os.path.join(root, str(pid))
        opened = _has_fd(base, targets)
        # An fd table we may not read makes the process a suspect whatever its maps say.
        mapped = _maps(base, needle, targets) if opened is not None else None
        if opened is None or mapped is None:
            users.append(DeviceUser(pid, _comm(base), "cannot inspect"))
        elif opened or mapped:
            how = "open, mapped" if opened and mapped else "open" if opened else "mapped"
            users.append(DeviceUser(pid, _comm(base), how))
    return users


def _has_fd(base: str, targets: tuple[str, str]) -> bool | None:
    """Whether an fd of the process is the node; None when we may not look."""
    fd_dir = f"{base}/fd"
    try:
        fds = os.listdir(fd_dir)
    except PermissionError:
        return None
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") in targets:
                return True
        except OSError:
            continue  # closed or the process exited meanwhile
    return False


def _maps(base: str, needle: bytes, targets: tuple[str, str]) -> bool | None:
    """Whether the process maps the node; None when we may not look."""
    try:
        with open(f"{base}/maps", "rb") as f:
            data = f.read()
    except PermissionError:
        return None
    except OSError:
        return False
    # Nearly every process maps no dax device: one substring search then settles it.  A line whose
    # path is the node holds its ASCII bytes, whatever the decoding and line splitting below.
    if needle not in data:
        return False
    # Parsed as the text file it was read as before: UTF-8 with replacement, universal newlines.
    # "start-end perms offset dev inode   path": the path is everything after field 5.
    lines = io.StringIO(data.decode("utf-8", errors="replace"), newline=None)
    return any(
        len(parts := line.split(None, 5)) == 6 and parts[5].rstrip("\n") in targets
        for line in lines
    )


def _comm(base: str) -> str:
    # Only read for the processes listed: text mode as before is cheap enough.
    try:
        with open(f"{base}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def device_users(proc_root: Path, names: Iterable[str]) -> dict[str, str]:
    """Who has each of these devices open or mapped, in words; devices nobody uses are left
    out."""
    out = {}
    for name in names:
        found = find_device_users(proc_root, name)
        if found:
            out[name] = ", ".join(f"pid {u.pid} {u.comm} ({u.how})" for u in found)
    return out


def cxl_device_users(proc_root: Path, state: KernelState) -> dict[str, str]:
    """Who has each device_dax-bound CXL device open or mapped, in words: a region is not torn
    down under them."""
    names = [n for n, d in state.devices.items() if d.cxl is not None and d.driver == DRIVER_DEVDAX]
    return device_users(proc_root, names)

"""Whether a policy file may be trusted by a process that acts as root (like sshd's StrictModes).

A policy decides what memory the kernel gets, so whoever can write it can take memory away or
destroy persistent data.  Refused: files not owned by root (or by the user running daxd),
files or their folders writable by group or others, and symlinks that lead out of the policy's
own folder.  ``--allow-untrusted-policy`` turns this off.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def distrust(file: Path, base: Path) -> str | None:
    """Why ``file`` must not be used, or None; ``base`` is the folder links must stay in."""
    try:
        if file.is_symlink():
            target = file.resolve()
            root = base.resolve()
            if target != root and root not in target.parents:
                return f"refusing a symlink that leads out of {base} (to {target})"
        info = file.stat()
        folder = file.resolve().parent.stat()
    except (OSError, RuntimeError, ValueError):
        return None  # missing or unreadable: the reader reports it precisely
    for what, st in (("the file", info), (f"its folder {file.resolve().parent}", folder)):
        owner = st.st_uid
        if owner not in (0, os.geteuid()):
            return f"refusing to trust it: {what} is owned by uid {owner}, not root"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
            st.st_mode & stat.S_ISVTX and what != "the file" and owner == 0
        ):
            mode = stat.S_IMODE(st.st_mode)
            return (
                f"refusing to trust it: {what} is writable by group or others (mode {mode:04o}); "
                "chmod go-w, or pass --allow-untrusted-policy"
            )
    return None

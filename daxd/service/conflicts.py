"""Other agents that act on DAX devices or memory blocks and may fight the policy."""

from __future__ import annotations

import re
from pathlib import Path

from daxd.kernel.model import HotplugSettings

RULE_DIRS = ("etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d")
DAXCTL_CONF_DIR = "etc/daxctl.conf.d"

# A udev rule that onlines memory blocks by itself (distros ship these for hot-added DIMMs).
_MEMORY_ONLINE = re.compile(
    r'SUBSYSTEM=="memory".*(ATTR\{state\}=|ATTR\{online\}=|chmem|/state)', re.IGNORECASE
)
_DAXCTL = re.compile(r"daxctl|daxdev-reconfigure", re.IGNORECASE)


def find_conflicts(root: Path, hotplug: HotplugSettings) -> list[str]:
    """Human sentences, one per conflicting agent found below ``root`` (``/`` in production)."""
    out: list[str] = []
    daxctl_rules: list[str] = []
    seen: set[str] = set()
    for folder in RULE_DIRS:
        d = root / folder
        try:
            files = sorted(d.glob("*.rules"))
        except OSError:
            continue
        for f in files:
            if f.name in seen:
                continue  # an earlier folder's file of the same name masks this one
            seen.add(f.name)
            onlines, runs_daxctl = _check_rules_file(f)
            if onlines:
                out.append(f"/{folder}/{f.name} onlines memory blocks when they are added")
            if runs_daxctl:
                daxctl_rules.append(f"/{folder}/{f.name}")
    # daxctl's own rule acts only on devices its config files name.
    confs = _daxctl_confs(root / DAXCTL_CONF_DIR)
    if confs:
        via = f" (via {', '.join(daxctl_rules)})" if daxctl_rules else ""
        out.append(
            f"daxctl reconfigures devices when they appear{via}, configured in "
            f"/{DAXCTL_CONF_DIR}/{{{','.join(confs)}}}; daxd and daxctl may undo each other's work"
        )
    if hotplug.auto_online_blocks and hotplug.auto_online_blocks != "offline":
        out.append(
            f"the kernel onlines hot-added memory by itself (auto_online_blocks="
            f"{hotplug.auto_online_blocks}); daxd corrects the zone of memory the kernel adds "
            "(it switches this off while binding kmem itself)"
        )
    return out


def _check_rules_file(path: Path) -> tuple[bool, bool]:
    """(onlines memory blocks, runs daxctl on dax devices)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False, False
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    onlines = any(_MEMORY_ONLINE.search(ln) for ln in lines)
    return onlines, any("dax" in ln and _DAXCTL.search(ln) for ln in lines)


def _daxctl_confs(folder: Path) -> list[str]:
    """daxctl.conf.d files with [reconfigure-device] sections."""
    try:
        files = sorted(folder.glob("*.conf"))
    except OSError:
        return []
    out = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if "reconfigure-device" in text:
            out.append(str(f.name))
    return out

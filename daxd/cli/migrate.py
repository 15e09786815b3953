"""`daxd migrate-device-model`: opt in to /sys/bus/dax, as daxctl-migrate-device-model(1) does.

Kernels 5.1+ can publish device-dax instances on the dax bus (needed for kmem) instead of
/sys/class/dax; which one a pmem namespace gets depends on whether dax_pmem_compat or dax_pmem
claims it, so the switch is a modprobe policy that takes effect at the next boot.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from daxd.cli import exitcodes

CONF_NAME = "daxd-device-model.conf"
CONF_TEXT = (
    "# Installed by `daxd migrate-device-model`: publish device-dax on /sys/bus/dax.\n"
    "blacklist dax_pmem_compat\n"
    "alias nd:t5* dax_pmem\n"
)
DAXCTL_CONF = "daxctl.conf"  # what daxctl migrate-device-model installs; same effect


def migrate_device_model(root: Path) -> int:
    folder = root / "etc/modprobe.d"
    target = folder / CONF_NAME
    if (folder / DAXCTL_CONF).exists():
        print(f"{folder / DAXCTL_CONF} already opts in to /sys/bus/dax; nothing to do")
        return exitcodes.OK
    if target.exists() and target.read_text() == CONF_TEXT:
        print(f"{target} already installed; reboot (or reload the dax modules) to take effect")
        return exitcodes.OK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(CONF_TEXT)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        print(f"daxd: cannot install {target}: {e.strerror}", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    print(f"installed {target}; reboot (or reload the dax modules) to take effect")
    return exitcodes.OK

"""Where daxd finds the system it manages: one value for every root, as netplan's --root-dir.

The running system is ``Roots()``: /sys, /proc, /run/daxd and configuration below /. Tests and
dumps use ``Roots.under(DIR)`` (DIR/sys, DIR/proc, DIR/run/daxd, DIR/etc ...), or ``with_sysfs``
for a bare sysfs dump, which has no runtime folder: nothing is recorded or locked for a tree
that is not a running kernel's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

# Defaults written once; the CLI, the daemon and the executor all take them from here.
DEFAULT_OFFLINE_TIMEOUT = 30.0  # seconds one memory block may take to go offline
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a second writer waits for the first


@dataclass(frozen=True)
class Roots:
    base: Path = Path("/")  # configuration of other agents (udev rules, daxctl.conf.d) below it
    sys: Path = Path("/sys")
    proc: Path = Path("/proc")
    # daxd's runtime folder: the writer lock and the auto_online_blocks record; None for a tree
    # that is not a running kernel (a sysfs dump): nothing is recorded there.
    runtime: Path | None = Path("/run/daxd")

    @classmethod
    def under(cls, base: Path | str) -> Roots:
        b = Path(base)
        return cls(base=b, sys=b / "sys", proc=b / "proc", runtime=b / "run" / "daxd")

    def with_sysfs(self, sys: Path | str) -> Roots:
        """Another sysfs tree (a dump): no runtime folder unless it is the base's own."""
        s = Path(sys)
        runtime = self.runtime if s == self.sys else None
        return replace(self, sys=s, runtime=runtime)

    @property
    def live(self) -> bool:
        """Whether these are the running system's own roots (the daemon on D-Bus manages it)."""
        return self == Roots()

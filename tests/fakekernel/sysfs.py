"""The Sysfs daxd uses, pointed at the fake tree, with writes answered by the FakeKernel."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from daxd.kernel.sysfs import Sysfs, SysfsError

if TYPE_CHECKING:
    from tests.fakekernel.kernel import FakeKernel


_VALID_ZONES = re.compile(r"devices/system/memory/memory([0-9]+)/valid_zones\Z")


class FakeSysfs(Sysfs):
    def __init__(self, kernel: FakeKernel) -> None:
        super().__init__(kernel.sysfs_root)
        self.kernel = kernel
        # Called before every read, in the reading thread: the kernel's own work that is due
        # by then happens first (hotadd.GradualKmemAdd), so no reader sees it half-done.
        self.before_read: Callable[[], None] | None = None

    def _raw_write(self, rel: str, value: str, timeout: float | None) -> None:
        self.kernel.handle_write(rel, value, timeout)

    def read(self, rel: str) -> str | None:
        """kernfs_fop_open(): no read bits -> EACCES even for root; 0400 -> EACCES for a user.

        [lab] valid_zones of a block that is not online can oops Linux 6.12 (a block kmem has
        just added has no node yet): such reads are recorded in ``kernel.risky_reads``.
        """
        if self.before_read is not None:
            self.before_read()
        m = _VALID_ZONES.match(rel)
        if m:
            block = self.kernel.memory.blocks.get(int(m.group(1)))
            if block is not None and not block.online:
                self.kernel.risky_reads.append(rel)
        try:
            st = os.stat(self.path(rel))
        except OSError:
            return super().read(rel)
        if stat.S_ISREG(st.st_mode):
            wanted = 0o004 if self.kernel.non_root else 0o444
            if not st.st_mode & wanted:
                raise SysfsError(rel, errno.EACCES, f"{rel}: cannot read: Permission denied")
        return super().read(rel)

"""Small helpers shared by the kernel tests."""

from __future__ import annotations

import errno

import pytest

from daxd.kernel.sysfs import Sysfs, SysfsError


def write_error(sysfs: Sysfs, rel: str, value: str, timeout: float | None = None) -> int:
    """The errno a write fails with (the test fails if it succeeds)."""
    with pytest.raises(SysfsError) as info:
        sysfs.write(rel, value, timeout=timeout)
    return info.value.errno


def errname(code: int) -> str:
    return errno.errorcode[code]


class CountingSysfs(Sysfs):
    """A Sysfs that remembers every attribute it read and every directory it listed."""

    def __init__(self, root: object) -> None:
        super().__init__(str(root))
        self.reads: list[str] = []
        self.listed: list[str] = []

    def read(self, rel: str) -> str | None:
        self.reads.append(rel)
        return super().read(rel)

    def listdir(self, rel: str) -> list[str]:
        self.listed.append(rel)
        return super().listdir(rel)

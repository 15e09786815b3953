"""Reading sysfs attributes where every oddity becomes a Diagnostic instead of an exception."""

from __future__ import annotations

import errno

from daxd.kernel.model import Diagnostic
from daxd.kernel.sysfs import Sysfs, SysfsError


def io_problem(err: SysfsError, verb: str = "read") -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        # mappingN/{start,end}, resource and dax_region/align are 0400: root only.
        return f"cannot {verb}: permission denied (some of it is root-only: run daxd as root)"
    return f"cannot {verb}: {err.errno_name}"


class AttrReader:
    """Typed attribute reads through a Sysfs that collect Diagnostics instead of raising."""

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs
        self.diagnostics: list[Diagnostic] = []

    def note(self, rel: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(str(self.sysfs.path(rel)), message))

    def text(self, rel: str, *, required: bool = True, allow_empty: bool = False) -> str | None:
        """The stripped contents; None (and a Diagnostic when it matters) if absent or empty."""
        try:
            value = self.sysfs.read(rel)
        except SysfsError as e:
            self.note(rel, io_problem(e))
            return None
        if value is None:
            if required:
                self.note(rel, "missing attribute")
            return None
        if value == "" and not allow_empty:
            self.note(rel, "empty")
            return None
        return value

    def integer(self, rel: str, *, base: int = 10, required: bool = True) -> int | None:
        """A number as the kernel prints it: "%d"/"%llu" (base 10) or "%#llx"/"%lx" (base 16)."""
        value = self.text(rel, required=required)
        if value is None:
            return None
        try:
            number = int(value, base)
        except ValueError:
            kind = "hexadecimal" if base == 16 else "decimal"
            self.note(rel, f"not a {kind} number: {value[:40]!r}")
            return None
        if not -(1 << 63) <= number < 1 << 64:
            # The kernel prints 64-bit values; anything larger is damage, and would only make
            # block counts that take ages to print.
            self.note(rel, f"out of the 64-bit range: {value[:40]!r}...")
            return None
        return number

    def flag(self, rel: str, *, required: bool = True) -> bool | None:
        """A "0"/"1" attribute (sysfs_emit "%d" of a bool)."""
        value = self.text(rel, required=required)
        if value is None:
            return None
        if value in ("0", "1"):
            return value == "1"
        self.note(rel, f"expected 0 or 1, got {value[:40]!r}")
        return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return self.sysfs.listdir(rel)
        except SysfsError as e:
            self.note(rel, io_problem(e, "list"))
            return []

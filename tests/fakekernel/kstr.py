"""The kernel's parsers of written values, as sysfs store functions apply them."""

from __future__ import annotations

import errno
import os


def einval() -> OSError:
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL))


def sysfs_streq(buf: str, s: str) -> bool:
    """lib/string.c sysfs_streq(): equal, ignoring one trailing newline on either side."""
    return buf.removesuffix("\n") == s.removesuffix("\n")


def kstrtobool(buf: str) -> bool:
    """lib/kstrtox.c kstrtobool(): decided by the first one or two characters; else EINVAL.

    1/y/Y/t/T and 0/n/N/f/F (t/f since Linux 5.17), on/off.  Newer kernels may also take
    e/E/d/D (enable/disable); whether 6.12 does is not known here, so they are refused.
    """
    first = buf[:1]
    if first and first in "1yYtT":
        return True
    if first and first in "0nNfF":
        return False
    if first in ("o", "O") and buf[1:2] in ("n", "N"):
        return True
    if first in ("o", "O") and buf[1:2] in ("f", "F"):
        return False
    raise einval()


def match_word(buf: str, words: tuple[str, ...]) -> str:
    """sysfs_match_string()/mhp_online_type_from_str(): one of ``words`` or EINVAL."""
    for word in words:
        if sysfs_streq(buf, word):
            return word
    raise einval()


def node_list(nodes: set[int]) -> str:
    """A nodemask as "%*pbl" prints it: "0-1,3"."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(nodes):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def cstr(buf: str) -> str:
    """What a store function's string functions see: the buffer up to its first NUL. ndctl
    writes the terminating NUL too (util/sysfs.c write_attr(): strlen + 1 bytes)."""
    return buf.split("\0", 1)[0]


def _erange() -> OSError:
    return OSError(errno.ERANGE, os.strerror(errno.ERANGE))


def _kstrtoull(s: str) -> int:
    """lib/kstrtox.c _kstrtoull() with base 0: 0x.. hex, 0.. octal, else decimal; one trailing
    newline; anything else, or no digit, EINVAL; more than 64 bits ERANGE."""
    base, digits = 10, "0123456789"
    if s[:1] == "0":
        if s[1:2] in ("x", "X") and s[2:3] != "" and s[2:3] in "0123456789abcdefABCDEF":
            base, digits, s = 16, "0123456789abcdefABCDEF", s[2:]
        else:
            base, digits = 8, "01234567"
    n = 0
    while n < len(s) and s[n] in digits:
        n += 1
    if n == 0:
        raise einval()
    value = int(s[:n], base)
    if value >= 1 << 64:
        raise _erange()
    rest = s[n:]
    if rest.startswith("\n"):
        rest = rest[1:]
    if rest:
        raise einval()
    return value


def kstrtoull(buf: str, bits: int = 64) -> int:
    """kstrtoull()/kstrtou64() (bits=64) and kstrtouint() (bits=32): a leading '+' allowed."""
    s = cstr(buf)
    value = _kstrtoull(s[1:] if s[:1] == "+" else s)
    if value >= 1 << bits:
        raise _erange()
    return value


def kstrtoll(buf: str, bits: int = 64) -> int:
    """kstrtoll() (bits=64) and kstrtoint() (bits=32)."""
    s = cstr(buf)
    if s[:1] == "-":
        value = -_kstrtoull(s[1:])
        if value < -(1 << (bits - 1)):
            raise _erange()
        return value
    value = kstrtoull(s)
    if value >= 1 << (bits - 1):
        raise _erange()
    return value

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

"""glibc malloc kept from holding on to memory after large D-Bus messages.

glibc serves an allocation of at least M_MMAP_THRESHOLD bytes (128 KiB at start) with its own
mmap and unmaps it on free.  But the threshold is dynamic (mallopt(3)): freeing such a chunk
raises M_MMAP_THRESHOLD to that chunk's size (up to 32 MiB on 64-bit) and M_TRIM_THRESHOLD to
twice that.  After one message with a 20 MiB argument, the next large buffers (dbus-fast's read
buffer, the decoded strings) come from the brk heap, and glibc only gives the heap back when
more than 40 MiB are free at its top: RSS went from 41 MB to 104 MB after a few such calls and
stayed there.  Setting either threshold explicitly turns the adjustment off; :func:`pin_thresholds`
holds both at glibc's own starting values, so large buffers are unmapped as soon as they are
freed.  Elsewhere (musl, no libc found) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's defaults (DEFAULT_MMAP_THRESHOLD_MIN, DEFAULT_TRIM_THRESHOLD), here made permanent.
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 128 * 1024

_log = logging.getLogger(__name__)


def pin_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds; True when glibc took both.  Idempotent."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: the option numbers are glibc's
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _log.debug("not glibc: malloc thresholds left alone")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = int(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) == 1
    done = int(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) == 1 and done
    if not done:
        _log.warning("glibc refused to fix its malloc thresholds; large messages may cost RSS")
    return done

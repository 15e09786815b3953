#!/usr/bin/env python3
"""Keep memory of one NUMA node from being offlined (guest side, stdlib only, run as root).

    python3 pin.py pagetables NODE [MIB]     # page tables on NODE: unmovable kernel memory
    python3 pin.py vmsplice NODE [memoryN]   # a user page held by a pipe: migration fails

``pagetables`` binds itself to NODE (set_mempolicy MPOL_BIND) and touches one byte in each 2 MiB
of a large mapping (no THP), so the kernel allocates a page-table page per 2 MiB. Page tables are
kernel allocations: they land in a kernel zone (ZONE_NORMAL) of NODE, never in ZONE_MOVABLE, and
a block holding one cannot be offlined (EBUSY).

``vmsplice`` binds itself to NODE, fills pages until one lies in memory block ``memoryN`` (any
block of NODE when not given) and vmsplice()s that page into a pipe that nobody reads: the pipe
holds a reference to the page, so migrating it fails and offlining its block retries until
interrupted (the kernel loops; daxd's --offline-timeout ends it).

Both print one line ``pinned memoryN...`` (the blocks of the pinned user pages, from
/proc/self/pagemap), then sleep until killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import sys

SYS_SET_MEMPOLICY = 238  # x86_64
MPOL_BIND = 2
PROT_RW = 0x1 | 0x2
MAP_PRIVATE_ANON = 0x02 | 0x20
MADV_NOHUGEPAGE = 15
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def bind_to(node: int) -> None:
    mask = (ctypes.c_ulong * 2)()
    mask[node // 64] = 1 << (node % 64)
    if libc.syscall(SYS_SET_MEMPOLICY, MPOL_BIND, mask, 128) != 0:
        raise fail(f"set_mempolicy(MPOL_BIND, node {node})")


def anon(length: int) -> int:
    """A private anonymous mapping without transparent huge pages; its address."""
    address = libc.mmap(None, length, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise fail("mmap")
    libc.madvise(address, length, MADV_NOHUGEPAGE)
    return int(address)


def touch(address: int, length: int, step: int = PAGE) -> None:
    for offset in range(0, length, step):
        ctypes.c_char.from_address(address + offset).value = b"x"


def blocks_of(address: int, length: int) -> list[str]:
    """The memory block of each page in [address, address + length), from /proc/self/pagemap."""
    with open("/sys/devices/system/memory/block_size_bytes") as fh:
        block_size = int(fh.read(), 16)
    pages = length // PAGE
    with open("/proc/self/pagemap", "rb") as fh:
        fh.seek(address // PAGE * 8)
        entries = struct.unpack(f"<{pages}Q", fh.read(pages * 8))
    out = []
    for entry in entries:
        pfn = entry & ((1 << 55) - 1)
        out.append(f"memory{pfn * PAGE // block_size}" if entry >> 63 & 1 else "not-present")
    return out


def pagetables(node: int, mib: int) -> list[str]:
    bind_to(node)
    step = 2 * MIB  # one page-table page (4 KiB) per 2 MiB touched
    length = mib * step
    address = anon(length)
    touch(address, length, step)
    return sorted(set(blocks_of(address, length)) - {"not-present"})


def vmsplice(node: int, block: str | None) -> list[str]:
    bind_to(node)
    chunk = 4 * MIB
    page = None
    for _ in range(4096 // 4):  # up to 4 GiB of the node
        address = anon(chunk)
        ctypes.memset(address, 0x78, chunk)  # every page present
        for index, name in enumerate(blocks_of(address, chunk)):
            if block is None or name == block:
                page = address + index * PAGE
                break
        if page is not None:
            break  # the other chunks stay mapped: freeing them could hand the block to others
    if page is None:
        raise SystemExit(f"no page of node {node} in {block}")
    _, w = os.pipe()

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    iov = IoVec(page, PAGE)
    if libc.vmsplice(w, ctypes.byref(iov), 1, 0) < 0:
        raise fail("vmsplice")
    return blocks_of(page, PAGE)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("pagetables", "vmsplice"):
        print(__doc__, file=sys.stderr)
        return 2
    node = int(argv[1])
    if argv[0] == "pagetables":
        blocks = pagetables(node, int(argv[2]) if len(argv) > 2 else 256)
    else:
        blocks = vmsplice(node, argv[2] if len(argv) > 2 else None)
    print("pinned " + " ".join(blocks), flush=True)
    signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

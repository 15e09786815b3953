"""Memory blocks (``devices/system/memory/memoryN``) and the memory-hotplug settings.

A block's index N is its ``phys_index`` (drivers/base/memory.c: the device id is
start_section_nr / sections_per_block, and phys_index_show() prints that same number as "%08lx"),
so which blocks belong to a DAX device follows from the directory names and the device's ranges:
only those blocks' attributes are read, never the thousands of boot-memory blocks.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from daxd.kernel.attrs import AttrReader
from daxd.kernel.layout import (
    AUTO_ONLINE_PATH,
    BLOCK_SIZE_PATH,
    MEMORY,
    block_dir,
    block_index,
    block_path,
    hotplug_param,
)
from daxd.kernel.model import (
    BlockState,
    HotplugSettings,
    KernelZone,
    MemoryBlock,
    OnlineType,
    Range,
    parse_zones,
)

_NODE = re.compile(r"^node([0-9]+)\Z")
ONLINE_POLICIES = ("contig-zones", "auto-movable")  # mm/memory_hotplug.c online_policy_to_str
# Above this many candidate indices, one listdir is cheaper than probing each memoryN.
_PROBE_LIMIT = 4096


def block_intervals(ranges: Iterable[Range], block_size: int) -> list[tuple[int, int]]:
    """Per range, the inclusive interval of block indices lying wholly inside it.

    kmem hot-adds only whole blocks (drivers/dax/kmem.c dax_kmem_range(): start aligned up, end
    aligned down), so a block that only partly overlaps a range is never the device's.
    """
    out = []
    for r in ranges:
        first = -(-r.start // block_size)
        last = (r.end + 1) // block_size - 1
        if first <= last:
            out.append((first, last))
    return out


def present_blocks(reader: AttrReader) -> list[int]:
    """Indices of all memoryN directories, ascending (names only: no attribute is read)."""
    out = []
    for name in reader.listdir(MEMORY):
        index = block_index(name)
        if index is not None:
            out.append(index)
    out.sort()
    return out


def in_intervals(present: Sequence[int], intervals: Iterable[tuple[int, int]]) -> list[int]:
    """The present indices inside the intervals, by bisection: O(log B + hits) per interval."""
    out: list[int] = []
    for first, last in intervals:
        lo = bisect.bisect_left(present, first)
        hi = bisect.bisect_right(present, last)
        out.extend(present[lo:hi])
    return out


def probe_blocks(reader: AttrReader, intervals: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of existing blocks inside the intervals, touching only those memoryN entries."""
    if sum(last - first + 1 for first, last in intervals) > _PROBE_LIMIT:
        return in_intervals(present_blocks(reader), intervals)
    return [
        i
        for first, last in intervals
        for i in range(first, last + 1)
        if reader.sysfs.exists(block_dir(i))
    ]


def read_block(reader: AttrReader, index: int) -> MemoryBlock | None:
    """One block, or None when it vanished while being read (hot-removed)."""
    rel = block_dir(index)
    entries = reader.listdir(rel)
    if not entries:
        return None
    text = reader.text(block_path(index, "state"))
    state = _state(reader, index, text) if text is not None else BlockState("unknown")
    # valid_zones of a block that is not online makes the kernel pick a default zone on the
    # block's node, and a block kmem has just added has no node yet (Linux 6.12 creates the
    # block devices with NUMA_NO_NODE and links the node afterwards): reading it then oopses
    # in zone_for_pfn_range() (seen in the lab, docs/lab.md). daxd needs the zone of online
    # blocks only.
    zones = _zones(reader, index) if state is BlockState.ONLINE else ()
    phys_index = reader.integer(block_path(index, "phys_index"), base=16)
    if phys_index is not None and phys_index != index:
        reader.note(
            block_path(index, "phys_index"),
            f"is {phys_index:#x}, expected {index:#x} (memory{index})",
        )
    nodes = [int(m.group(1)) for e in entries if (m := _NODE.match(e))]
    if len(nodes) > 1:
        reader.note(rel, f"links to several nodes: {sorted(nodes)}")
    return MemoryBlock(
        index=index,
        state=state,
        valid_zones=zones,
        phys_index=index if phys_index is None else phys_index,
        removable=reader.flag(block_path(index, "removable"), required=False),
        node=nodes[0] if len(nodes) == 1 else None,
    )


def read_blocks(reader: AttrReader, indices: Iterable[int]) -> tuple[MemoryBlock, ...]:
    blocks = (read_block(reader, i) for i in sorted(set(indices)))
    return tuple(b for b in blocks if b is not None)


def reread_block(reader: AttrReader, known: MemoryBlock) -> MemoryBlock | None:
    """A block read before, again: only what onlining and offlining change (state, zone).

    phys_index, removable and the node link stay as they were while the block exists; the
    executor re-reads a device's blocks after every round, and for 16,384 blocks the other
    three reads each were most of that.  None when the block is gone.
    """
    index = known.index
    text = reader.text(block_path(index, "state"), required=False)
    if text is None:
        return read_block(reader, index) if reader.sysfs.exists(block_dir(index)) else None
    state = _state(reader, index, text)
    zones = _zones(reader, index) if state is BlockState.ONLINE else ()
    return replace(known, state=state, valid_zones=zones)


def _state(reader: AttrReader, index: int, text: str) -> BlockState:
    state = BlockState(text)
    if not state.known:
        reader.note(block_path(index, "state"), f"unexpected state {text[:40]!r}")
    return state


def _zones(reader: AttrReader, index: int) -> tuple[KernelZone, ...]:
    zones = parse_zones(reader.text(block_path(index, "valid_zones"), required=False))
    unknown = [z for z in zones if not z.known]
    if unknown:
        reader.note(block_path(index, "valid_zones"), f"unknown zone {unknown[0][:40]!r}")
    return zones


def read_block_size(reader: AttrReader) -> int | None:
    """block_size_bytes: "%lx", hexadecimal without 0x (memory.c block_size_bytes_show())."""
    rel = BLOCK_SIZE_PATH
    if not reader.sysfs.exists(MEMORY):
        return None  # CONFIG_MEMORY_HOTPLUG off: nothing to map
    size = reader.integer(rel, base=16)
    if size is not None and (size <= 0 or size & (size - 1)):
        reader.note(rel, f"not a power of two: {size:#x}")
        return None
    return size


def read_hotplug(
    reader: AttrReader,
    block_size: int | None,
    blocks: Sequence[MemoryBlock],
    present: Sequence[int],
) -> HotplugSettings:
    """The global memory-hotplug knobs.

    ``hotremove`` (CONFIG_MEMORY_HOTREMOVE): since Linux 5.9 every block has ``removable``, and it
    reads 1 exactly when CONFIG_MEMORY_HOTREMOVE is set (removable_show() prints
    IS_ENABLED(CONFIG_MEMORY_HOTREMOVE)); ``valid_zones`` exists only with it.  So: True when a
    block shows removable=1 or (online) has valid_zones.  The blocks already read are used; else the
    lowest-numbered block is asked (one read).  No blocks at all: False (nothing can be removed).
    """
    exists = block_size is not None
    online_types = tuple(t.value for t in OnlineType)
    auto_online = _word(reader, AUTO_ONLINE_PATH, online_types, required=exists)
    policy = _word(reader, hotplug_param("online_policy"), ONLINE_POLICIES, required=False)
    memmap = _memmap_param(reader)
    known = list(blocks)
    if not known and present:
        probe = read_block(reader, present[0])
        known = [probe] if probe else []
    hotremove = any(b.removable or b.valid_zones for b in known)
    return HotplugSettings(
        block_size=block_size,
        auto_online_blocks=OnlineType(auto_online) if auto_online is not None else None,
        memmap_on_memory=memmap,
        online_policy=policy,
        hotremove=hotremove,
    )


def _word(reader: AttrReader, rel: str, words: tuple[str, ...], *, required: bool) -> str | None:
    value = reader.text(rel, required=required)
    if value is None:
        return None
    if value not in words:
        reader.note(rel, f"unexpected value {value[:40]!r} (known: {', '.join(words)})")
        return None
    return value


def _memmap_param(reader: AttrReader) -> bool | None:
    """memory_hotplug.memmap_on_memory: "Y"/"N", or "force" (mm/memory_hotplug.c, Linux >= 6.6)."""
    rel = hotplug_param("memmap_on_memory")
    value = reader.text(rel, required=False)
    if value is None:
        return None  # CONFIG_MHP_MEMMAP_ON_MEMORY off (or no memory_hotplug module params)
    if value in ("Y", "N"):
        return value == "Y"
    if value == "force":
        reader.note(
            rel,
            "memmap_on_memory=force: memmap is placed on hot-added memory even when "
            "that wastes part of each block",
        )
        return True
    reader.note(rel, f"unexpected value {value[:40]!r} (known: Y, N, force)")
    return None

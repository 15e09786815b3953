"""Memory blocks, zones and nodes as drivers/base/memory.c and mm/memory_hotplug.c keep them.

Sources: [facts] = ../shared/kernel-facts.md (Linux 6.12 observed); otherwise the function named.
Zones are reduced to Normal and Movable (DMA/DMA32 only show as memory0 spanning several zones).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from tests.fakekernel.events import EventLog
from tests.fakekernel.kstr import einval, node_list
from tests.fakekernel.tree import Tree

MiB = 1 << 20
GiB = 1 << 30
MEMORY = "devices/system/memory"
NODES = "devices/system/node"
PARAMS = "module/memory_hotplug/parameters"
ONLINE_TYPES = ("offline", "online", "online_kernel", "online_movable")
HANG = "hang"  # an offline_fault that loops until a signal arrives


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass
class HotplugConfig:
    block_size: int = 128 * MiB  # [facts] block_size_bytes 8000000
    auto_online_blocks: str = "online"  # [facts] Debian: CONFIG_MHP_DEFAULT_ONLINE_TYPE_ONLINE_AUTO
    online_policy: str = "contig-zones"  # [facts]
    memmap_on_memory: str = "N"  # [facts]; "Y" with memory_hotplug.memmap_on_memory=1; or "force"
    auto_movable_ratio: int = 301  # [facts]
    auto_movable_numa_aware: bool = True  # [facts]
    movable_node: bool = False  # the movable_node boot option
    hotremove: bool = True  # CONFIG_MEMORY_HOTREMOVE


@dataclass
class FakeBlock:
    index: int
    node: int
    boot: bool = False
    group: int | None = None  # kmem's static memory group (one per probe)
    online: bool = False
    zone: str | None = None  # while online; None = spans several zones (valid_zones "none")
    removable: bool = True
    offline_fault: int | str | None = None  # an errno, or HANG
    # Another process is offlining it right now (offline_pages() migrating): MEM_GOING_OFFLINE.
    going_offline: bool = False

    @property
    def devpath(self) -> str:
        return f"{MEMORY}/memory{self.index}"


@dataclass
class MemoryRecords:
    untimed_blocking_writes: list[str] = field(default_factory=list)


class MemorySubsystem:
    def __init__(self, tree: Tree, events: EventLog, config: HotplugConfig) -> None:
        self.tree = tree
        self.events = events
        self.config = config
        self.blocks: dict[int, FakeBlock] = {}
        self.cpu_nodes = {0}
        self.records = MemoryRecords()
        # Once booted, a node that appears (a hot-add on a node without memory) or goes
        # (try_offline_node()) sends its add / remove uevent, SUBSYSTEM=node ([lab] CXL order:
        # add memoryN..., add nodeN, online memoryN...).
        self.booted = False
        self._nodes: set[int] = set()
        self.render_globals()

    # --- rendering -------------------------------------------------------------------------
    def render_globals(self) -> None:
        c, t = self.config, self.tree
        t.attr(f"{MEMORY}/block_size_bytes", f"{c.block_size:x}")  # "%lx"
        t.attr(f"{MEMORY}/auto_online_blocks", c.auto_online_blocks, 0o644)
        t.attr(f"{MEMORY}/uevent", "", 0o644)
        t.attr(f"{PARAMS}/memmap_on_memory", c.memmap_on_memory)  # 0444 (boot parameter)
        t.attr(f"{PARAMS}/online_policy", c.online_policy, 0o644)
        t.attr(f"{PARAMS}/auto_movable_ratio", str(c.auto_movable_ratio), 0o644)
        numa_aware = "Y" if c.auto_movable_numa_aware else "N"
        t.attr(f"{PARAMS}/auto_movable_numa_aware", numa_aware, 0o644)
        for b in self.blocks.values():
            self.render_block(b)
        self.render_nodes()

    def render_block(self, b: FakeBlock) -> None:
        t, rel = self.tree, b.devpath
        t.attr(f"{rel}/phys_index", f"{b.index:08x}")  # phys_index_show(): "%08lx"
        # state_show(): MEM_GOING_OFFLINE while offline_pages() runs (seen in the QEMU lab).
        state = "going-offline" if b.going_offline else "online" if b.online else "offline"
        t.attr(f"{rel}/state", state, 0o644)
        t.attr(f"{rel}/online", "1" if b.online else "0", 0o644)
        t.attr(f"{rel}/phys_device", "0")
        # removable_show() prints IS_ENABLED(CONFIG_MEMORY_HOTREMOVE) for every block since 5.9.
        t.attr(f"{rel}/removable", "1" if b.removable and self.config.hotremove else "0")
        if self.config.hotremove:  # valid_zones only exists with CONFIG_MEMORY_HOTREMOVE
            t.attr(f"{rel}/valid_zones", self.valid_zones(b))
        t.attr(f"{rel}/uevent", "", 0o644)
        t.link(f"{rel}/subsystem", "bus/memory")
        # register_memory_blocks_under_node(): links both ways, whatever the state.
        t.link(f"{rel}/node{b.node}", f"{NODES}/node{b.node}")
        t.link(f"{NODES}/node{b.node}/memory{b.index}", rel)

    def render_node(self, node: int) -> None:
        """valid_zones of a node's offline blocks depend on its zones' spans: re-render them."""
        for b in self.blocks.values():
            if b.node == node and not b.online and self.config.hotremove:
                self.tree.attr(f"{b.devpath}/valid_zones", self.valid_zones(b))
        self.render_nodes()

    def render_nodes(self) -> None:
        with_blocks = {b.node for b in self.blocks.values()}
        online = with_blocks | self.cpu_nodes
        for node in online:
            self.tree.dir(f"{NODES}/node{node}")
        for entry in os.listdir(self.tree.path(NODES)):
            # try_offline_node(): a node without memory and CPUs goes away after hot-remove.
            if entry.startswith("node") and entry[4:].isdigit() and int(entry[4:]) not in online:
                self.tree.remove(f"{NODES}/{entry}")
        if self.booted:
            for node in sorted(online - self._nodes):
                self.events.emit("add", "node", f"{NODES}/node{node}")
            for node in sorted(self._nodes - online):
                self.events.emit("remove", "node", f"{NODES}/node{node}")
        self._nodes = set(online)
        has_memory = {b.node for b in self.blocks.values() if b.online}
        has_normal = {b.node for b in self.blocks.values() if b.online and b.zone != "Movable"}
        self.tree.attr(f"{NODES}/possible", node_list(online | set(range(4))))
        self.tree.attr(f"{NODES}/online", node_list(online))
        self.tree.attr(f"{NODES}/has_memory", node_list(has_memory))
        self.tree.attr(f"{NODES}/has_normal_memory", node_list(has_normal))
        self.tree.attr(f"{NODES}/has_cpu", node_list(self.cpu_nodes))

    # --- zones (mm/memory_hotplug.c) -----------------------------------------------------------
    def _span_has(self, node: int, zone: str, index: int) -> bool:
        """zone_intersects(): spans grow on online and shrink to the remaining blocks on offline."""
        idx = [
            b.index for b in self.blocks.values() if b.node == node and b.online and b.zone == zone
        ]
        return bool(idx) and min(idx) <= index <= max(idx)

    def zone_for(self, online_type: str, b: FakeBlock) -> str:
        """zone_for_pfn_range()."""
        if online_type == "online_kernel":
            return "Normal"
        if online_type == "online_movable":
            return "Movable"
        if self.config.online_policy == "auto-movable":
            return self._auto_movable_zone(b)
        in_kernel = self._span_has(b.node, "Normal", b.index)
        in_movable = self._span_has(b.node, "Movable", b.index)
        if in_kernel != in_movable:  # default_zone_for_pfn(): inherit a non-overlapping zone
            return "Normal" if in_kernel else "Movable"
        return "Movable" if self.config.movable_node else "Normal"

    def _auto_movable_zone(self, b: FakeBlock) -> str:
        """auto_movable_zone_for_pfn() for kmem's static groups, counted in blocks, not pages."""
        if self.config.auto_movable_ratio == 0:
            return "Normal"
        nr = 1
        if b.group is not None:
            members = [m for m in self.blocks.values() if m.group == b.group]
            if any(m.online and m.zone != "Movable" for m in members):
                return "Normal"  # "If anything is kernel, we cannot use movable."
            nr = len(members) - sum(1 for m in members if m.online)
        if not self._can_online_movable(None, nr):
            return "Normal"
        if self.config.auto_movable_numa_aware and not self._can_online_movable(b.node, nr):
            return "Normal"
        return "Movable"

    def _can_online_movable(self, node: int | None, nr: int) -> bool:
        """auto_movable_can_online_movable(): MOVABLE <= ratio% of boot-time kernel memory."""
        scope = [b for b in self.blocks.values() if node is None or b.node == node]
        early = sum(1 for b in scope if b.boot and b.online and b.zone != "Movable")
        movable = sum(1 for b in scope if b.online and b.zone == "Movable")
        return early > 0 and movable + nr <= self.config.auto_movable_ratio * early // 100

    def valid_zones(self, b: FakeBlock) -> str:
        """valid_zones_show(): the zone when online ("none" if several); else default first.

        Only MEM_ONLINE prints the zone: a block going offline lists candidates like an offline
        one (QEMU lab: "going-offline" with "Movable Normal" for a block in ZONE_MOVABLE).
        """
        if b.online and not b.going_offline:
            return b.zone or "none"
        default = self.zone_for("online", b)
        others = [z for z in ("Normal", "Movable") if z != default]
        return " ".join([default, *others])

    # --- boot memory, hot-add and hot-remove ---------------------------------------------------
    def add_boot_blocks(self, count: int, node: int = 0) -> None:
        """Boot memory, online before userspace; no uevents (udev would only see a coldplug)."""
        for i in range(count):
            b = FakeBlock(i, node, boot=True, online=True)
            # memory0 spans ZONE_DMA and ZONE_DMA32: memory_block_offline() -> EINVAL [facts].
            # Other boot blocks hold unmovable kernel allocations: offline_pages() cannot
            # isolate them -> EBUSY (start_isolate_page_range()).
            b.zone = None if i == 0 else "Normal"
            b.offline_fault = None if i == 0 else errno.EBUSY
            self.blocks[i] = b
        for b in self.blocks.values():
            self.render_block(b)
        self.render_nodes()

    def block_range(self, start: int, end: int) -> range:
        bs = self.config.block_size
        return range(start // bs, (end + 1) // bs)

    def hot_add(self, start: int, end: int, node: int, group: int) -> list[int]:
        """add_memory_resource(): create every block (add uevents), then auto-online each.

        [facts] with auto_online_blocks=online the blocks come online in Normal by themselves.
        """
        indices = list(self.block_range(start, end))
        assert not any(i in self.blocks for i in indices), "hot-add over existing memory blocks"
        for i in indices:
            b = FakeBlock(i, node, group=group)
            self.blocks[i] = b
            self.render_block(b)
            self.events.emit("add", "memory", b.devpath)
        self.render_node(node)
        online_type = self.config.auto_online_blocks
        if online_type != "offline":
            for i in indices:
                self.online(i, online_type)
        return indices

    def hot_remove(self, start: int, end: int) -> bool:
        """try_remove_memory(): EBUSY (False) if any block is online; else all blocks vanish."""
        indices = [i for i in self.block_range(start, end) if i in self.blocks]
        if any(self.blocks[i].online for i in indices):
            return False
        nodes = {self.blocks[i].node for i in indices}
        for i in indices:
            b = self.blocks.pop(i)
            self.tree.remove(b.devpath)
            self.tree.remove(f"{NODES}/node{b.node}/memory{i}")
            self.events.emit("remove", "memory", b.devpath)
        for node in nodes:
            self.render_node(node)
        return True

    # --- online / offline ------------------------------------------------------------------------
    def online(self, index: int, online_type: str) -> bool:
        """device_online() -> memory_block_online(); False when it already was online."""
        b = self.blocks[index]
        if b.online:
            return False
        b.zone = self.zone_for(online_type, b)
        b.online = True
        self.render_block(b)
        self.events.emit("online", "memory", b.devpath)
        self.render_node(b.node)
        return True

    def begin_offline(self, index: int) -> None:
        """Another process starts offlining an online block and is still at it (no uevent)."""
        b = self.blocks[index]
        assert b.online
        assert not b.going_offline
        b.going_offline = True
        self.render_block(b)

    def end_offline(self, index: int, done: bool) -> None:
        """That offline ends: done (offline, with its uevent) or given up (online again)."""
        b = self.blocks[index]
        assert b.going_offline
        b.going_offline = False
        if done:
            b.online = False
            b.zone = None
            self.render_block(b)
            self.events.emit("offline", "memory", b.devpath)
            self.render_node(b.node)
        else:
            self.render_block(b)

    def offline(self, index: int, timeout: float | None) -> bool:
        """device_offline() -> memory_block_offline() -> offline_pages(); False if offline."""
        b = self.blocks[index]
        if not b.online:
            return False
        # Someone else's offline holds device_hotplug_lock (state_store() restarts the write
        # until it is free), or offline_pages() migrates until signal_pending(): either way the
        # write returns only when interrupted.
        hangs = b.going_offline
        if not hangs and (not self.config.hotremove or b.zone is None):
            # offline_pages() is an EINVAL stub without CONFIG_MEMORY_HOTREMOVE; a block in
            # several zones has no mem->zone.
            raise einval()
        if hangs or b.offline_fault == HANG:
            if timeout is None:
                self.records.untimed_blocking_writes.append(f"{b.devpath}/state")
                raise oserror(errno.EINTR)
            raise TimeoutError(errno.ETIMEDOUT, "offline did not finish")
        if isinstance(b.offline_fault, int):
            raise oserror(b.offline_fault)
        b.online = False
        b.zone = None
        self.render_block(b)
        self.events.emit("offline", "memory", b.devpath)
        self.render_node(b.node)
        return True

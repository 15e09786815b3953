"""FakeKernel: a sysfs tree of real files whose writes are answered the way Linux 6.12 answers them.

    kernel = FakeKernel(tmp_path)                # boot memory on node 0, no DAX devices
    dev = kernel.add_pmem_device()               # dax0.0 bound to device_dax, as at boot
    kernel.sysfs.write("bus/dax/drivers/device_dax/unbind", "dax0.0")
    read_state(kernel.sysfs)                     # or Sysfs(kernel.sysfs_root)

Every change is recorded as a Uevent (``kernel.uevents``, and ``kernel.listener``); what must never
happen in daxd is recorded too: ``kernel.leaks`` (kmem unbound while memory could not be removed),
``kernel.sigbus`` (device_dax unbound under a process), ``kernel.untimed_blocking_writes``.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from daxd.kernel.roots import Roots
from tests.fakekernel.cxl import REGION, ROOT, WINDOW_ALIGN, CxlBus, CxlRegion, Memdev, Window
from tests.fakekernel.daxbus import DRIVERS, Bound, DaxBus, FakeDevice, Leak, Victim
from tests.fakekernel.events import EventLog, Uevent
from tests.fakekernel.kstr import einval, kstrtobool, match_word
from tests.fakekernel.layouts import PMD, cxl_region, hmem_region, pmem_region
from tests.fakekernel.memory import (
    HANG,
    MEMORY,
    ONLINE_TYPES,
    PARAMS,
    FakeBlock,
    GiB,
    HotplugConfig,
    MemorySubsystem,
    MiB,
    oserror,
)
from tests.fakekernel.procfs import FakeProcfs
from tests.fakekernel.sysfs import FakeSysfs
from tests.fakekernel.tree import Tree

PMEM_HEAD = 0x1200000  # [facts] the devdax namespace starts 18 MiB into the NVDIMM (labels, info)
PMEM_SIZE = 1054867456  # [facts] 1006 MiB: 7 whole 128 MiB blocks, memory33..memory39
_DRIVER_ATTR = re.compile(r"^bus/dax/drivers/([a-z_]+)/(bind|unbind|new_id|remove_id)$")
_BLOCK_ATTR = re.compile(rf"^{MEMORY}/memory([0-9]+)/(state|online)$")
_CXL_DRIVER_ATTR = re.compile(r"^bus/cxl/drivers/([a-z_]+)/(bind|unbind)$")
_CXL_WINDOW_ATTR = re.compile(rf"^{ROOT}/(decoder0\.[0-9]+)/(create_ram_region|delete_region)$")
_CXL_REGION_ATTR = re.compile(
    rf"^{ROOT}/decoder0\.[0-9]+/(region[0-9]+)/"
    r"(commit|interleave_granularity|interleave_ways|size|target([0-9]+))$"
)
_CXL_DECODER_ATTR = re.compile(
    rf"^{ROOT}/port[0-9]+/endpoint[0-9]+/(decoder[0-9]+\.[0-9]+)/(mode|dpa_size)$"
)


@dataclass
class _Fault:
    glob: str
    errno: int
    times: int


class FakeKernel:
    def __init__(
        self,
        base: Path,
        *,
        block_size: int = 128 * MiB,
        boot_memory: int = 2 * GiB,
        auto_online_blocks: str = "online",
        online_policy: str = "contig-zones",
        memmap_on_memory: str = "N",
        hotremove: bool = True,
        movable_node: bool = False,
    ) -> None:
        self.sysfs_root = base / "sys"
        self.proc_root = base / "proc"
        self.tree = Tree(self.sysfs_root)
        self.events = EventLog()
        self.config = HotplugConfig(
            block_size=block_size,
            auto_online_blocks=auto_online_blocks,
            online_policy=online_policy,
            memmap_on_memory=memmap_on_memory,
            hotremove=hotremove,
            movable_node=movable_node,
        )
        self.memory = MemorySubsystem(self.tree, self.events, self.config)
        self.procfs = FakeProcfs(Tree(self.proc_root))
        self.bus = DaxBus(self.tree, self.events, self.memory, self.procfs)
        # The cxl bus, built when the first CXL object is added.
        self.cxl = CxlBus(self.tree, self.events, lambda: self._next_region, self._region_id)
        self.cxl.release_driver = self._cxl_unbind  # the dax side goes first
        self.memory.add_boot_blocks(boot_memory // block_size)
        self.memory.booted = True  # nodes that come and go from now on send uevents
        self.writes: list[tuple[str, str]] = []  # every write attempted, in order
        self.non_root = False  # reads of 0400 attributes fail with EACCES, as for a user
        self.risky_reads: list[str] = []  # valid_zones of blocks not online (FakeSysfs.read)
        self._faults: list[_Fault] = []
        self._next_region = 0
        self._next_phys = 4 * GiB  # above the boot memory and the PCI hole
        self.sysfs = FakeSysfs(self)

    def roots(self, base: Path | None = None) -> Roots:
        """daxd's roots for this kernel: its sys and proc, its own run/daxd; udev rules and
        daxctl configuration below ``base`` (default: the kernel's folder, as --root-dir)."""
        folder = self.sysfs_root.parent
        return Roots(
            base=base or folder,
            sys=self.sysfs_root,
            proc=self.proc_root,
            runtime=folder / "run" / "daxd",
        )

    # --- what happened -----------------------------------------------------------------------
    @property
    def uevents(self) -> list[Uevent]:
        return self.events.events

    @property
    def listener(self) -> Callable[[Uevent], None] | None:
        return self.events.listener

    @listener.setter
    def listener(self, fn: Callable[[Uevent], None] | None) -> None:
        self.events.listener = fn

    @property
    def leaks(self) -> list[Leak]:
        return self.bus.leaks

    @property
    def sigbus(self) -> list[Victim]:
        return self.bus.sigbus

    @property
    def untimed_blocking_writes(self) -> list[str]:
        return self.memory.records.untimed_blocking_writes

    @property
    def devices(self) -> dict[str, FakeDevice]:
        return self.bus.devices

    @property
    def blocks(self) -> dict[int, FakeBlock]:
        return self.memory.blocks

    def dynamic_ids(self) -> dict[str, list[str]]:
        """The ids written to each driver's new_id and not taken out with remove_id, by driver
        (drivers with none left out). The kernel keeps them until reboot and shows them nowhere:
        a device of such a name, added later, binds to that driver."""
        return {drv: list(ids) for drv, ids in self.bus.ids.items() if ids}

    def blocks_of(self, name: str) -> list[FakeBlock]:
        """The blocks inside a device's ranges (whole blocks only), ascending."""
        bs = self.config.block_size
        ranges = [range(-(-s // bs), (e + 1) // bs) for s, e in self.devices[name].ranges]
        return [b for i, b in sorted(self.blocks.items()) if any(i in r for r in ranges)]

    # --- builders ----------------------------------------------------------------------------
    def add_pmem_device(
        self,
        *,
        size: int = PMEM_SIZE,
        start: int | None = None,
        region: int | None = None,
        namespace: int = 0,
        target_node: int = 1,
        numa_node: int = 0,
        align: int = PMD,
        uuid: str | None = None,
        namespace_uuid: str | None = None,
        bound: Bound = "auto",
        memmap_on_memory: bool | None = False,
        mappings: bool = True,
        legacy: bool = False,
    ) -> FakeDevice:
        """A devdax namespace (ndctl create-namespace -m devdax); auto-binds device_dax."""
        rid = self._region_id(region)
        begin = self._place(start, PMEM_HEAD, size)
        r = pmem_region(
            self.tree,
            rid,
            namespace,
            begin,
            size,
            target_node=target_node,
            numa_node=numa_node,
            align=align,
            uuid=uuid or str(uuidlib.uuid4()),
            namespace_uuid=namespace_uuid or str(uuidlib.uuid4()),
            legacy=legacy,
        )
        self.bus.add_region(r)
        d = self.bus.new_device(
            r,
            [(begin, begin + size - 1)],
            dev_id=namespace,
            memmap_on_memory=None if legacy else memmap_on_memory,
            mappings=mappings and not legacy,
        )
        return self.bus.add_device(d, bound)

    def add_legacy_device(self, **kwargs: Any) -> FakeDevice:
        """A pmem device in the /sys/class/dax model (CONFIG_DEV_DAX_PMEM_COMPAT)."""
        return self.add_pmem_device(legacy=True, **kwargs)

    def add_hmem_device(
        self,
        *,
        size: int = 2 * GiB,
        start: int | None = None,
        ranges: list[tuple[int, int]] | None = None,
        region: int | None = None,
        target_node: int = 1,
        numa_node: int = 0,
        bound: Bound = "auto",
        memmap_on_memory: bool | None = False,
        mappings: bool = True,
    ) -> FakeDevice:
        """Soft-reserved memory (EFI_MEMORY_SP); since 6.3 it auto-binds kmem, as at boot.

        ``ranges``: [(start, size), ...] for a multi-range device (after daxctl reconfiguring).
        """
        rid = self._region_id(region)
        spans = self._spans(start, size, ranges)
        r = hmem_region(
            self.tree,
            rid,
            spans[0][0],
            spans[-1][1],
            target_node=target_node,
            numa_node=numa_node,
        )
        self.bus.add_region(r)
        d = self.bus.new_device(r, spans, memmap_on_memory=memmap_on_memory, mappings=mappings)
        return self.bus.add_device(d, bound)

    def add_cxl_device(
        self,
        *,
        size: int = 4 * GiB,
        start: int | None = None,
        ranges: list[tuple[int, int]] | None = None,
        region: int | None = None,
        target_node: int | None = None,
        numa_node: int = -1,
        bound: Bound = "auto",
        memmap_on_memory: bool | None = True,
        mappings: bool = True,
        serials: Sequence[int] | None = None,
        host_bridges: Sequence[int] | None = None,
        window: str | None = None,
        granularity: int | None = None,
    ) -> FakeDevice:
        """A volatile CXL region's device (``cxl create-region -m -t ram``): the region made by
        the writes ndctl makes (as :meth:`handle_write` answers them), bound, then its dax
        device; cxl.c sets memmap_on_memory and kmem binds by itself.

        ``serials``: the memdevs, in interleave position order (one per way; default: a new
        memdev per host bridge); those not there yet are added below ``host_bridges`` (their
        uids, in the same order; default: the window's, else a new host bridge each).
        ``window``: the root decoder (``decoder0.N``) to make the region in; default: one over
        the memdevs' host bridges in that order, made for it when there is none with room.
        ``target_node``: default the window's node; ``numa_node`` -1 as observed ([lab]).
        A write the kernel refuses raises its OSError, the half-made region deleted first, as
        ndctl's create_region() does (one region per host bridge [lab]: EBUSY).
        """
        w = self.cxl.window(window) if window is not None else None
        if w is not None and host_bridges is None:  # new memdevs below the window's bridges
            ways = len(w.targets) if serials is None else len(serials)
            host_bridges = [w.targets[k % len(w.targets)].uid for k in range(ways)]
        memdevs = self._memdevs(serials, host_bridges)
        align = WINDOW_ALIGN * len(memdevs)
        if start is None and ranges is None:
            w = w or self._free_window(memdevs, -(-size // align) * align)
        if w is not None and start is None and ranges is None:
            at = self.cxl.free_gap(w, -(-size // align) * align)
            assert at is not None, f"no room for {size:#x} in {w.name}"
            spans = [(at, at + size - 1)]
        else:
            spans = self._spans(start, size, ranges)
        first, last = spans[0][0], spans[-1][1]
        region_size = -(-(last - first + 1) // align) * align
        self._advance(first + region_size - 1)
        if w is None:
            w = self.cxl.add_window(
                tuple(md.bridge.uid for md in memdevs),
                first,
                region_size,
                granularity=granularity,
                target_node=2 + len(self.cxl.windows),
                region_id=None,
            )
        for k, md in enumerate(memdevs):
            want = w.targets[k % len(w.targets)]
            if md.bridge is not want:  # [lab] "failed to set target0 to mem0"
                raise AssertionError(
                    f"{md.name} at position {k} is below {md.bridge.name}, the window's "
                    f"target_list has {want.name} there"
                )
        assert len(set(map(id, memdevs))) == len(memdevs), "a memdev twice in one region"
        offered = w.next_region
        rid = self._region_id(offered if region is None else region)
        assert rid not in self.bus.regions, f"region{rid} exists"
        cxl = self.cxl.new_region(w, rid)
        if offered is not None and rid == offered:  # the window takes a new id for the next
            self.cxl.offer(w, self._region_id(None))
        try:
            self._cxl_configure(cxl, memdevs, first, region_size)
        except OSError:
            self.cxl.delete_region(w, cxl.name)
            raise
        return self._cxl_bind(
            cxl,
            spans=spans,
            target_node=target_node,
            numa_node=numa_node,
            memmap_on_memory=memmap_on_memory,
            mappings=mappings,
            bound=bound,
        )

    def _cxl_configure(
        self, cxl: CxlRegion, memdevs: tuple[Memdev, ...], start: int, size: int
    ) -> None:
        """ndctl's create_region() writes, from interleave_granularity to commit (the builder
        places the region at ``start`` rather than in the window's lowest gap)."""
        c = self.cxl
        c.set_granularity(cxl, str(cxl.window.granularity))  # ndctl: the root's by default
        c.set_ways(cxl, str(len(memdevs)))
        c.alloc_hpa(cxl, size, start)
        for k, md in enumerate(memdevs):
            d = next((d for d in md.decoders if d.hpa is None), None)  # size 0: not in a region
            if d is None:
                raise oserror(errno.ENXIO)  # cxl_memdev_find_decoder(): no free decoder
            if d.mode != "ram":
                c.set_dpa_size(d, "0x0")
                c.set_mode(d, "ram")
            c.set_dpa_size(d, f"{size // len(memdevs):#x}")
            c.set_target(cxl, k, d.name)
        c.set_commit(cxl, "1")

    def _cxl_bind(
        self,
        cxl: CxlRegion,
        *,
        spans: list[tuple[int, int]] | None = None,
        target_node: int | None = None,
        numa_node: int = -1,
        memmap_on_memory: bool | None = True,
        mappings: bool = True,
        bound: Bound = "auto",
    ) -> FakeDevice:
        """The cxl_region driver binds: dax_regionR, then drivers/dax/cxl.c's dax region with
        daxR.0 over the whole region (``spans``: the builder's choice), which the bus probes
        (kmem by itself: IORESOURCE_DAX_KMEM), then the dax_region's bind uevent ([lab] order)."""
        self.cxl.probe(cxl)
        assert cxl.start is not None
        end = cxl.start + cxl.size - 1
        node = cxl.window.target_node if target_node is None else target_node
        r = cxl_region(cxl, cxl.start, end, target_node=node, numa_node=numa_node)
        self.bus.add_region(r)
        d = self.bus.new_device(
            r, spans or [(cxl.start, end)], memmap_on_memory=memmap_on_memory, mappings=mappings
        )
        self.bus.add_device(d, bound)
        self.cxl.bound_dax_region(cxl)
        return d

    def _cxl_unbind(self, cxl: CxlRegion) -> None:
        """The cxl_region driver lets go (unbind, commit 0, a target detached, delete_region):
        its dax devices go first (kmem's remove: online memory leaks, see ``leaks``)."""
        r = self.bus.regions.pop(cxl.id, None)
        for d in [d for d in self.devices.values() if d.region is r]:
            self.bus.remove_device(d.name)
        self.cxl.unbound(cxl)

    def add_cxl_host_bridge(self, uid: int) -> str:
        """A CXL host bridge (QEMU ``pxb-cxl,bus_nr=UID``) and its port; returns its name,
        ``pci0000:BB``. Ports are numbered in the order they are added: to get the kernel's
        numbering, add the host bridges before their memdevs, as the kernel enumerates them."""
        return self.cxl.add_host_bridge(uid).name

    def add_cxl_memdev(
        self, serial: int, host_bridge: int | None = None, *, ram_size: int | None = None
    ) -> str:
        """A CXL type-3 memory device (QEMU ``cxl-type3,sn=SERIAL``) below the host bridge of
        that uid (made when missing; default: a new one); returns its name, ``memN``, which
        follows the order memdevs are added in. ``ram_size``: its volatile capacity
        (``memN/ram/size``, the limit of dpa_size); None: no such file and no limit."""
        return self.cxl.add_memdev(serial, host_bridge, ram_size).name

    def add_cxl_window(
        self,
        host_bridges: Sequence[int],
        *,
        start: int | None = None,
        size: int = 4 * GiB,
        granularity: int | None = None,
        target_node: int | None = None,
    ) -> str:
        """A CXL Fixed Memory Window over host bridges (uids, in target_list order); returns its
        root decoder's name, ``decoder0.N``. Default node: 2 for the first window, then 3, ..."""
        begin = self._place(start, 0, size)
        node = 2 + len(self.cxl.windows) if target_node is None else target_node
        return self.cxl.add_window(
            tuple(host_bridges),
            begin,
            size,
            granularity=granularity,
            target_node=node,
            region_id=self._region_id(None),
        ).name

    def destroy_cxl_region(self, region: int, *, force: bool = False) -> None:
        """``cxl destroy-region [-f] regionR``: without force EBUSY while the region is enabled
        ([lab] "region0 active. Disable it or use --force"); with it the cxl_region driver is
        unbound first (its dax devices go; this builder does not offline memory: kmem unbound
        over online memory leaks, see ``leaks``). Then ndctl's writes: commit 0, each target
        cleared and its decoder's dpa_size 0, delete_region."""
        cxl = self.cxl.regions[region]
        if cxl.bound and not force:
            raise oserror(errno.EBUSY)
        if cxl.bound:
            self._cxl_unbind(cxl)
        c = self.cxl
        c.set_commit(cxl, "0")
        for pos in sorted(cxl.targets):
            d = cxl.targets[pos]
            c.set_target(cxl, pos, "\0")  # ndctl writes "" and its NUL
            c.set_dpa_size(d, "0x0")
        c.delete_region(cxl.window, cxl.name)

    def _memdevs(
        self, serials: Sequence[int] | None, host_bridges: Sequence[int] | None
    ) -> tuple[Memdev, ...]:
        if serials is None:
            serials = []
            serial = 0x1000  # [lab] QEMU sn= as in the lab: 0x1000, 0x1001, ...
            while len(serials) < (len(host_bridges) if host_bridges else 1):
                if serial not in self.cxl.memdevs:
                    serials.append(serial)
                serial += 1
        assert host_bridges is None or len(host_bridges) == len(serials)
        out = []
        for k, serial in enumerate(serials):
            md = self.cxl.memdevs.get(serial)
            if md is None:
                md = self.cxl.add_memdev(serial, host_bridges[k] if host_bridges else None)
            out.append(md)
        return tuple(out)

    def _free_window(self, memdevs: tuple[Memdev, ...], size: int) -> Window | None:
        """A window over the memdevs' host bridges, in their order, with room for ``size``."""
        bridges = tuple(md.bridge for md in memdevs)
        for w in self.cxl.windows:
            if w.targets == bridges and self.cxl.free_gap(w, size) is not None:
                return w
        return None

    def add_seed_device(self, region: int) -> FakeDevice:
        """A size-0 device in a dynamic (hmem/cxl) region, as ``dax_region/create`` made it while
        the region had room (so even when it has none now): the lowest free id, the region's
        seed unless it has one, its youngest. It stays unbound (dax_bus_probe(): size 0)."""
        return self.bus.create_device(self.bus.regions[region])

    def remove_device(self, name: str) -> None:
        """The device goes away (namespace disabled, CXL region destroyed) mid-operation."""
        self.bus.remove_device(name)

    def recreate_device(self, name: str) -> FakeDevice:
        """The device goes and comes back under the same name (ndctl disable-namespace and
        enable-namespace; hmem.N unbound from and bound to its platform driver): device_del,
        then a new dev_dax with the provider's defaults and the bus's autoprobe, which an id
        left in a driver's new_id takes before the region's type does (dax_bus_match())."""
        old = self.devices[name]
        self.bus.remove_device(name)
        memmap = None if old.memmap_on_memory is None else old.region.provider == "cxl"
        d = self.bus.new_device(
            old.region,
            list(old.ranges),
            dev_id=int(name.split(".")[1]),
            memmap_on_memory=memmap,
            mappings=old.mappings,
        )
        return self.bus.add_device(d, "auto")

    def _region_id(self, region: int | None) -> int:
        # nvdimm, hmem and cxl all take region ids from memregion_alloc(): one id space.
        rid = self._next_region if region is None else region
        self._next_region = max(self._next_region, rid + 1)
        return rid

    def _place(self, start: int | None, head: int, size: int) -> int:
        begin = self._next_phys + head if start is None else start
        self._advance(begin + size - 1)
        return begin

    def _advance(self, end: int) -> None:
        """Default placements go above everything placed so far, 1 GiB aligned."""
        self._next_phys = max(self._next_phys, -(-(end + 1) // GiB) * GiB)

    def _spans(
        self, start: int | None, size: int, ranges: list[tuple[int, int]] | None
    ) -> list[tuple[int, int]]:
        if ranges is None:
            begin = self._place(start, 0, size)
            return [(begin, begin + size - 1)]
        out = [(s, s + n - 1) for s, n in ranges]
        self._advance(max(e for _, e in out))
        return out

    # --- knobs and faults --------------------------------------------------------------------
    def configure(self, **knobs: Any) -> None:
        """Change HotplugConfig fields (boot parameters, kernel config) and re-render."""
        names = {f.name for f in fields(HotplugConfig)}
        for key, value in knobs.items():
            assert key in names, f"unknown knob {key}"
            setattr(self.config, key, value)
        self.memory.render_globals()

    def fail(self, path_glob: str, err: int, times: int = 1) -> None:
        """The next ``times`` writes to paths matching ``path_glob`` fail with ``err``."""
        self._faults.append(_Fault(path_glob, err, times))

    def block_offline_fails(self, index: int, err: int = errno.EBUSY) -> None:
        """Offlining the block fails (EBUSY: unmovable pages, offline_pages())."""
        self.blocks[index].offline_fault = err

    def block_offline_hangs(self, index: int) -> None:
        """Offlining the block loops (long-term pinned pages) until the write is interrupted."""
        self.blocks[index].offline_fault = HANG

    def set_removable(self, index: int, removable: bool) -> None:
        """removable=0 on one block (per-block before 5.9); offlining it then fails EBUSY."""
        b = self.blocks[index]
        b.removable = removable
        b.offline_fault = None if removable else errno.EBUSY
        self.memory.render_block(b)

    def open_device(self, pid: int, comm: str, devname: str, mapped: bool = False) -> None:
        self.procfs.open_device(pid, comm, devname, mapped)

    def close_device(self, pid: int, devname: str) -> None:
        self.procfs.close_device(pid, devname)

    def exit_process(self, pid: int) -> None:
        self.procfs.exit(pid)

    # --- writes ------------------------------------------------------------------------------
    def handle_write(self, rel: str, value: str, timeout: float | None) -> None:
        """What write(2) of ``value`` to ``rel`` does; raises OSError like the kernel."""
        self.writes.append((rel, value))
        path = self.sysfs_root / rel
        resolved = os.path.relpath(os.path.realpath(path), os.path.realpath(self.sysfs_root))
        for f in self._faults:
            if f.times > 0 and (fnmatch.fnmatch(rel, f.glob) or fnmatch.fnmatch(resolved, f.glob)):
                f.times -= 1
                raise oserror(f.errno)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise oserror(errno.ENOENT) from None
        if stat.S_ISDIR(st.st_mode):
            raise oserror(errno.EISDIR)
        if not st.st_mode & 0o222:
            raise oserror(errno.EACCES)  # kernfs_fop_open(): no write bits, even for root [facts]
        if not value:
            return  # sysfs_kf_write(): a zero-length write never reaches ->store()
        self._dispatch(resolved, value, timeout)

    def _dispatch(self, resolved: str, value: str, timeout: float | None) -> None:
        if m := _DRIVER_ATTR.match(resolved):
            drv, attr = m.groups()
            assert drv in DRIVERS
            getattr(self.bus, attr)(drv, value)
            return
        if m := _BLOCK_ATTR.match(resolved):
            self._block_write(int(m.group(1)), m.group(2), value, timeout)
            return
        if self.bus.store(resolved, value):  # dax_region/{create,delete}, daxX.Y/{size,align,...}
            return
        if self._cxl_write(resolved, value):
            return
        if resolved == f"{MEMORY}/auto_online_blocks":
            self.configure(auto_online_blocks=match_word(value, ONLINE_TYPES))
        elif resolved == f"{PARAMS}/online_policy":
            self.configure(online_policy=match_word(value, ("contig-zones", "auto-movable")))
        elif resolved == f"{PARAMS}/auto_movable_numa_aware":
            self.configure(auto_movable_numa_aware=kstrtobool(value))
        elif resolved == f"{PARAMS}/auto_movable_ratio":
            try:
                self.configure(auto_movable_ratio=int(value.strip(), 0))
            except ValueError:
                raise einval() from None
        else:
            raise NotImplementedError(f"the fake kernel does not model writes to {resolved}")

    def _cxl_write(self, resolved: str, value: str) -> bool:
        """The writes that make and tear down CXL regions (cxl.py); False: not one of them."""
        c = self.cxl
        if m := _CXL_DRIVER_ATTR.match(resolved):
            drv, attr = m.groups()
            name, kind = c.find(drv, value)  # ENODEV: no such device, or not this driver's
            r = c.region(name) if kind == REGION else None
            if attr == "bind":
                if r is None:
                    raise oserror(errno.EBUSY)  # the fake's other cxl devices are all bound
                self._cxl_bind(r)
            elif r is None:
                raise NotImplementedError(f"the fake kernel does not model unbinding {name}")
            elif not r.bound:
                raise oserror(errno.ENODEV)  # unbind_store(): not bound to this driver
            else:
                self._cxl_unbind(r)
            return True
        if m := _CXL_WINDOW_ATTR.match(resolved):
            w = c.window(m.group(1))
            if m.group(2) == "create_ram_region":
                c.create_ram_region(w, value)
            else:
                c.delete_region(w, value)
            return True
        if m := _CXL_REGION_ATTR.match(resolved):
            r = c.region(m.group(1))
            assert r is not None
            attr = m.group(2)
            if attr == "commit":
                c.set_commit(r, value)
            elif attr == "interleave_granularity":
                c.set_granularity(r, value)
            elif attr == "interleave_ways":
                c.set_ways(r, value)
            elif attr == "size":
                c.set_size(r, value)
            else:
                c.set_target(r, int(m.group(3)), value)
            return True
        if m := _CXL_DECODER_ATTR.match(resolved):
            d = c.endpoint_decoder(m.group(1))
            assert d is not None
            if m.group(2) == "mode":
                c.set_mode(d, value)
            else:
                c.set_dpa_size(d, value)
            return True
        return False

    def _block_write(self, index: int, attr: str, value: str, timeout: float | None) -> None:
        if attr == "state":
            # state_store(): a word from online_type_to_str[]; the current state again is EINVAL.
            word = match_word(value, ONLINE_TYPES)
            if word == "offline":
                changed = self.memory.offline(index, timeout)
            else:
                changed = self.memory.online(index, word)
            if not changed:
                raise einval()  # [facts]
        elif kstrtobool(value):  # online_store() (drivers/base/core.c): "1" -> default zone
            self.memory.online(index, "online")  # already online: accepted silently
        else:
            self.memory.offline(index, timeout)

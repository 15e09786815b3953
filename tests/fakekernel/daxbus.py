"""The dax bus: regions, devices, the device_dax and kmem drivers and their sysfs files.

Sources: [facts] = ../shared/kernel-facts.md (Linux 6.12 observed); otherwise the kernel function
named (drivers/dax/bus.c, drivers/dax/kmem.c, drivers/dax/device.c, drivers/base/bus.c and dd.c).

Dynamic regions (hmem, CXL: not IORESOURCE_DAX_STATIC) are carved into devices through sysfs, as
``daxctl create-device``/``destroy-device`` do; bus.c as of 6.12, after its dax_region_rwsem rework:

- ``dax_region/create`` (DEVICE_ATTR_RW: 0644; [lab] hmem-kmem.json) create_store(): kstrtoint()
  (EINVAL/ERANGE), value 1 or EINVAL, dax_region_avail_size() 0 -> ENOSPC, else
  __devm_create_dev_dax() with size 0: the lowest free id (alloc_dev_dax_id(): ida_alloc()),
  memmap_on_memory false, device_add() (add uevent; bus_probe_device() binds nothing, since
  dax_bus_probe() refuses size 0 with ENXIO); then ``seed`` if the region has none, and always
  ``youngest``, which create_show() prints.
- ``dax_region/seed`` seed_show(). Only dax_bus_probe() clears it, after the seed's successful
  probe ("Track new seed creation only after successful probe of the previous seed"): nothing
  makes a new seed then, even when other empty devices exist; delete_store() clears it too.
- ``dax_region/delete`` delete_store(): device_find_child_by_name() of the region's device
  (sysfs_streq()) or ENXIO; bound or size != 0 -> EBUSY; id 0 -> EBUSY (always kept); else
  __free_dev_dax_id(), seed/youngest cleared, unregister_dev_dax() (remove uevent).
- ``daxX.Y/size`` size_store(): kstrtoull(), !alloc_is_aligned() -> EINVAL (before anything
  else), then dev_dax_resize(): bound -> EBUSY, same size -> done, growth beyond
  dax_region_avail_size() -> ENOSPC (nothing is allocated: no partial growth), shrinking is
  dev_dax_shrink() (whole ranges off the end, then the last one trimmed), growth takes the
  region's holes first-fit from its start, each min(hole, left): a hole right after the
  device's last range extends it (adjust_ok(), adjust_dev_dax_range()), any other hole adds a
  range (alloc_dev_dax_range(): a mappingN device, which sends no uevent: no bus, no class).
- ``daxX.Y/align`` align_store(): kstrtoul() failing gives ENXIO (not EINVAL), dax_align_valid()
  (PAGE_SIZE, PMD_SIZE, PUD_SIZE on x86-64) or EINVAL, bound -> EBUSY, then
  dev_dax_validate_align(): every range's length a multiple of it, or EINVAL and the old align
  stays. Starts are not checked; dax_region/align never changes.
- ``daxX.Y/mapping`` (0200) mapping_store(): range_parse() ("start-end", kstrtoull() base 16)
  or EINVAL/ERANGE; a length that is not a multiple of align writes nothing and succeeds (the
  rwsem rework left rc 0 there; before it, ENXIO); else alloc_dev_dax_range(): a range outside
  the region or over another range -> ENOMEM (__request_region()), a new range appended even
  when adjacent to the last. It does not check that the device is unbound.
"""

from __future__ import annotations

import contextlib
import errno
import re
from dataclasses import dataclass, field
from typing import Literal

from tests.fakekernel.events import EventLog
from tests.fakekernel.kstr import cstr, einval, kstrtobool, kstrtoll, kstrtoull, sysfs_streq
from tests.fakekernel.memory import MemorySubsystem, oserror
from tests.fakekernel.procfs import FakeProcfs
from tests.fakekernel.tree import Tree

DEVDAX = "device_dax"
KMEM = "kmem"
# Registration order: an autoprobe binds the first matching driver whose probe succeeds.
DRIVERS = (DEVDAX, KMEM)
BUS = "bus/dax"
DAX_MAJOR = 252  # [facts] dev 252:0
Bound = Literal["auto", "device_dax", "kmem"] | None
PAGE_SIZE = 4096
# memremap_compat_align() on x86-64: SUBSECTION_SIZE (only powerpc has its own), the floor of
# alloc_is_aligned(): sizes and range lengths are whole 2 MiB even with align 4K [lab: probe]
COMPAT_ALIGN = 2 << 20
# dax_align_valid() on x86-64 with transparent hugepages (PMD) and PUD-sized THP support.
VALID_ALIGNS = (PAGE_SIZE, 2 << 20, 1 << 30)
_U64 = 1 << 64
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass
class FakeRegion:
    id: int
    provider: str  # pmem / hmem / cxl
    parent: str  # devpath of the device that carries dax_region/
    start: int
    end: int  # inclusive
    static: bool  # IORESOURCE_DAX_STATIC: pmem; size/align read-only, no seed/create/delete
    kmem_type: bool  # IORESOURCE_DAX_KMEM (hmem since 6.3, cxl): kmem matches without new_id
    target_node: int
    numa_node: int
    align: int
    legacy: bool = False  # /sys/class/dax device model
    seed: str | None = None  # dynamic regions: struct dax_region's seed and youngest devices
    youngest: str | None = None


@dataclass
class FakeDevice:
    name: str
    region: FakeRegion
    ranges: list[tuple[int, int]]  # inclusive
    devpath: str
    minor: int
    memmap_on_memory: bool | None  # None: no attribute (Linux < 6.8)
    align: int
    mappings: bool = True  # mappingN directories (Linux >= 5.10)
    driver: str | None = None
    kmem_ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # hot-added, reserved

    @property
    def size(self) -> int:
        return sum(e - s + 1 for s, e in self.ranges)

    @property
    def id(self) -> int:
        return int(self.name.rsplit(".", 1)[1])


@dataclass(frozen=True)
class Leak:
    """kmem unbound while memory could not be hot-removed: it stays until reboot."""

    device: str
    range_index: int
    start: int
    end: int
    online_blocks: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Victim:
    """A process that had /dev/daxX.Y open or mapped when device_dax was unbound under it."""

    pid: int
    comm: str
    device: str
    mapped: bool  # mapped: it gets SIGBUS on its next access [facts]


def kstrtoull_hex(buf: str) -> int:
    """kstrtoull(s, 16): an optional '+' and "0x", hex digits, one trailing newline; more than 64
    bits ERANGE (checked before what follows the digits), anything else EINVAL."""
    s = buf[1:] if buf[:1] == "+" else buf
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    n = 0
    while n < len(s) and s[n] in _HEX:
        n += 1
    if n == 0:
        raise einval()
    value = int(s[:n], 16)
    if value >= _U64:
        raise oserror(errno.ERANGE)
    if s[n:] not in ("", "\n"):
        raise einval()
    return value


def parse_id(value: str) -> str:
    """do_id_store(): sscanf("dax%d.%d") and the reprinted name must equal the input."""
    m = re.match(r"dax([+-]?\d+)\.([+-]?\d+)", value)
    if not m:
        raise einval()
    name = f"dax{int(m.group(1))}.{int(m.group(2))}"
    if not sysfs_streq(value, name):
        raise einval()
    return name


class DaxBus:
    def __init__(
        self, tree: Tree, events: EventLog, memory: MemorySubsystem, procfs: FakeProcfs
    ) -> None:
        self.tree = tree
        self.events = events
        self.memory = memory
        self.procfs = procfs
        self.regions: dict[int, FakeRegion] = {}
        self.devices: dict[str, FakeDevice] = {}
        self.ids: dict[str, list[str]] = {d: [] for d in DRIVERS}
        self.reserved: dict[tuple[int, int], str] = {}  # iomem requests held by drivers
        self.leaks: list[Leak] = []
        self.sigbus: list[Victim] = []
        self._minor = 0
        self._group = 0
        for drv in DRIVERS:
            for attr in ("bind", "unbind", "new_id", "remove_id", "uevent"):
                tree.attr(f"{BUS}/drivers/{drv}/{attr}", "", 0o200)
            tree.dir(f"module/{drv}")
            tree.link(f"{BUS}/drivers/{drv}/module", f"module/{drv}")
        tree.dir(f"{BUS}/devices")
        tree.attr(f"{BUS}/drivers_autoprobe", "1", 0o644)
        tree.attr(f"{BUS}/drivers_probe", "", 0o200)
        tree.attr(f"{BUS}/uevent", "", 0o200)

    # --- regions and devices -------------------------------------------------------------------
    def add_region(self, region: FakeRegion) -> FakeRegion:
        assert region.id not in self.regions, f"region {region.id} exists"
        self.regions[region.id] = region
        self.render_region(region)
        return region

    def new_device(
        self,
        region: FakeRegion,
        ranges: list[tuple[int, int]],
        *,
        dev_id: int | None = None,
        memmap_on_memory: bool | None = False,
        mappings: bool = True,
    ) -> FakeDevice:
        if dev_id is None:  # alloc_dev_dax_id(): ida_alloc(), the lowest id not in use
            used = {d.id for d in self.members(region)}
            dev_id = next(i for i in range(len(used) + 1) if i not in used)
        name = f"dax{region.id}.{dev_id}"
        assert name not in self.devices, f"{name} exists"
        sub = f"{region.parent}/dax" if region.legacy else region.parent
        device = FakeDevice(
            name,
            region,
            ranges,
            f"{sub}/{name}",
            self._minor,
            memmap_on_memory,
            region.align,
            mappings,
        )
        self._minor += 1
        return device

    def add_device(self, d: FakeDevice, bound: Bound = "auto") -> FakeDevice:
        """device_add(): the add uevent, then the bus probes drivers (bus_probe_device())."""
        self.devices[d.name] = d
        self.render_device(d)
        if d.region.legacy:
            self.tree.link(f"class/dax/{d.name}", d.devpath)
        else:
            self.tree.link(f"{BUS}/devices/{d.name}", d.devpath)
        self.render_region(d.region)
        self.events.emit("add", "dax", d.devpath, **self._props(d))
        if d.region.legacy or bound is None:
            return d
        if bound != "auto":
            if not self._match(bound, d):
                self.ids[bound].append(d.name)  # how it gets there for real: <driver>/new_id
            self._probe(bound, d)
            return d
        for drv in DRIVERS:  # __device_attach_driver(): probe errors just try the next driver
            if self._match(drv, d):
                try:
                    self._probe(drv, d)
                    break
                except OSError:
                    continue
        return d

    def remove_device(self, name: str) -> None:
        """device_del(): unbind (kmem may leak), then the remove uevent."""
        d = self.devices[name]
        if d.driver is not None:
            self._release(d)
        del self.devices[name]
        if d.region.seed == name:
            d.region.seed = None
        if d.region.youngest == name:
            d.region.youngest = None
        self.tree.remove(f"class/dax/{name}" if d.region.legacy else f"{BUS}/devices/{name}")
        self.tree.remove(d.devpath)
        self.render_region(d.region)
        self.events.emit("remove", "dax", d.devpath, **self._props(d))

    def members(self, r: FakeRegion) -> list[FakeDevice]:
        return [d for d in self.devices.values() if d.region is r]

    def available(self, r: FakeRegion) -> int:
        """dax_region_avail_size(): the region's size less its devices' ranges."""
        return r.end - r.start + 1 - sum(d.size for d in self.members(r))

    def find(self, value: str) -> FakeDevice | None:
        """bus_find_device_by_name(): sysfs_streq() on the device names."""
        for d in self.devices.values():
            if not d.region.legacy and sysfs_streq(value, d.name):
                return d
        return None

    # --- driver attributes ---------------------------------------------------------------------
    def new_id(self, drv: str, value: str) -> None:
        """do_id_store(ID_ADD): remember the id, then driver_attach() (probe errors ignored).

        [facts] "dax9.9" (no such device) is accepted silently; new_id on an unbound device
        binds it at once.  driver_attach() tries every unbound matching device, not only this one.
        """
        name = parse_id(value)
        if name not in self.ids[drv]:
            self.ids[drv].append(name)
        for d in list(self.devices.values()):
            if not d.region.legacy and d.driver is None and self._match(drv, d):
                with contextlib.suppress(OSError):
                    self._probe(drv, d)

    def remove_id(self, drv: str, value: str) -> None:
        name = parse_id(value)
        if name in self.ids[drv]:
            self.ids[drv].remove(name)

    def bind(self, drv: str, value: str) -> None:
        """bind_store(): ENODEV unless the device exists and matches; then the probe's answer."""
        d = self.find(value)
        if d is None or not self._match(drv, d):
            raise oserror(errno.ENODEV)
        self._probe(drv, d)

    def unbind(self, drv: str, value: str) -> None:
        """unbind_store(): ENODEV unless bound to this driver; the removal itself cannot fail."""
        d = self.find(value)
        if d is None or d.driver != drv:
            raise oserror(errno.ENODEV)
        self._release(d)

    def set_memmap(self, d: FakeDevice, value: str) -> None:
        """memmap_on_memory_store() (bus.c, Linux >= 6.8)."""
        val = kstrtobool(value)
        if val and self.memory.config.memmap_on_memory == "N":
            raise oserror(errno.EOPNOTSUPP)  # !mhp_supports_memmap_on_memory() [facts]
        if d.memmap_on_memory != val and d.driver == KMEM:
            raise oserror(errno.EBUSY)  # [facts]
        d.memmap_on_memory = val
        self.render_device(d)

    # --- writes to a dynamic region and its devices (see the module docstring) -----------------
    def store(self, resolved: str, value: str) -> bool:
        """A write to a dax_region or dax device attribute; False: not one of them."""
        for r in self.regions.values():
            if not r.static and resolved.startswith(f"{r.parent}/dax_region/"):
                attr = resolved.rsplit("/", 1)[1]
                if attr == "create":
                    self.create(r, value)
                    return True
                if attr == "delete":
                    self.delete(r, value)
                    return True
        for d in self.devices.values():
            if resolved.startswith(f"{d.devpath}/") and "/" not in resolved[len(d.devpath) + 1 :]:
                attr = resolved[len(d.devpath) + 1 :]
                if attr == "memmap_on_memory":
                    self.set_memmap(d, value)
                elif attr == "size" and not d.region.static:
                    self.resize(d, value)
                elif attr == "align" and not d.region.static:
                    self.set_align(d, value)
                elif attr == "mapping" and not d.region.static:
                    self.add_mapping(d, value)
                else:
                    return False
                return True
        return False

    def create(self, r: FakeRegion, value: str) -> FakeDevice:
        """create_store()."""
        if kstrtoll(value, 32) != 1:
            raise einval()
        if self.available(r) == 0:
            raise oserror(errno.ENOSPC)
        return self.create_device(r)

    def create_device(self, r: FakeRegion) -> FakeDevice:
        """create_store() once its checks passed: a size-0 device, the seed if there is none."""
        assert not r.static, "static (pmem) regions have no create"
        d = self.add_device(self.new_device(r, [], memmap_on_memory=False), "auto")
        if r.seed is None:
            r.seed = d.name
        r.youngest = d.name
        self.render_region(r)
        return d

    def delete(self, r: FakeRegion, value: str) -> None:
        """delete_store()."""
        want = cstr(value)
        victim = next((d for d in self.members(r) if sysfs_streq(want, d.name)), None)
        if victim is None:
            raise oserror(errno.ENXIO)
        if victim.driver is not None or victim.size or victim.id == 0:
            raise oserror(errno.EBUSY)
        self.remove_device(victim.name)  # clears seed and youngest when it was either

    def resize(self, d: FakeDevice, value: str) -> None:
        """size_store() and dev_dax_resize()."""
        size = kstrtoull(value)
        if not self._aligned(d, size):
            raise einval()
        if d.driver is not None:
            raise oserror(errno.EBUSY)
        have = d.size
        if size == have:
            return
        if size > have and size - have > self.available(d.region):
            raise oserror(errno.ENOSPC)
        try:
            if size < have:
                self._shrink(d, have - size)
            else:
                self._grow(d, size - have)
        finally:
            self.render_device(d)
            self.render_region(d.region)

    def _shrink(self, d: FakeDevice, to_shrink: int) -> None:
        """dev_dax_shrink(): whole ranges off the end (trim_dev_dax_range()), then the last one
        made shorter (adjust_dev_dax_range())."""
        while to_shrink:
            s, e = d.ranges[-1]
            if to_shrink >= e - s + 1:
                d.ranges.pop()
                to_shrink -= e - s + 1
                continue
            d.ranges[-1] = (s, e - to_shrink)
            return

    def _grow(self, d: FakeDevice, to_alloc: int) -> None:
        """dev_dax_resize()'s loop: each pass takes the first hole among the region's children
        (every device's ranges, by address), as much of it as is left to allocate."""
        r = d.region
        while to_alloc:
            children = sorted((s, e, o.name) for o in self.members(r) for s, e in o.ranges)
            if not children:
                d.ranges.append((r.start, r.start + to_alloc - 1))
                return
            for k, (s, e, owner) in enumerate(children):
                after = children[k + 1][0] if k + 1 < len(children) else None
                if k == 0 and s > r.start:  # space at the beginning of the region
                    alloc = min(s - r.start, to_alloc)
                    d.ranges.append((r.start, r.start + alloc - 1))
                    break
                alloc = 0
                if after is not None and after > e + 1:  # space between allocations
                    alloc = min(after - e - 1, to_alloc)
                if not alloc and after is None and e < r.end:  # space at the end
                    alloc = min(r.end - e, to_alloc)
                if not alloc:
                    continue
                if owner == d.name and d.ranges[-1] == (s, e):  # adjust_ok()
                    d.ranges[-1] = (s, e + alloc)
                else:
                    d.ranges.append((e + 1, e + alloc))
                break
            else:
                raise oserror(errno.ENOSPC)  # rc stays -ENOSPC: no hole (avail said there was)
            to_alloc -= alloc

    def set_align(self, d: FakeDevice, value: str) -> None:
        """align_store() and dev_dax_validate_align()."""
        try:
            align = kstrtoull(value)
        except OSError:
            raise oserror(errno.ENXIO) from None
        if align not in VALID_ALIGNS:
            raise einval()
        if d.driver is not None:
            raise oserror(errno.EBUSY)
        if any((e - s + 1) % max(align, COMPAT_ALIGN) for s, e in d.ranges):
            raise einval()
        d.align = align
        self.render_device(d)

    def add_mapping(self, d: FakeDevice, value: str) -> None:
        """mapping_store(): range_parse(), then alloc_dev_dax_range() at that address."""
        first, sep, last = cstr(value).partition("-")  # strsep(&end, "-")
        if not sep:
            raise einval()
        start, end = kstrtoull_hex(first), kstrtoull_hex(last)
        size = (end - start + 1) % _U64  # range_len()
        if not self._aligned(d, size):
            return  # rc is still the 0 of down_write_killable(): nothing done, "success"
        if size == 0:
            if d.ranges:
                raise oserror(errno.EBUSY)  # "0-size allocation must be first"
            return
        r = d.region
        taken = any(s <= end and start <= e for o in self.members(r) for s, e in o.ranges)
        if end < start or start < r.start or end > r.end or taken:
            raise oserror(errno.ENOMEM)  # __request_region() failed
        d.ranges.append((start, end))
        self.render_device(d)
        self.render_region(r)

    @staticmethod
    def _aligned(d: FakeDevice, size: int) -> bool:
        """alloc_is_aligned()."""
        return size % max(d.align, COMPAT_ALIGN) == 0

    # --- matching, probe and remove ------------------------------------------------------------
    def _match(self, drv: str, d: FakeDevice) -> bool:
        """dax_bus_match(): an id written to new_id, or the region's type (dax_match_type())."""
        return d.name in self.ids[drv] or (drv == KMEM) == d.region.kmem_type

    def _conflict(self, start: int, end: int) -> bool:
        return any(s <= end and start <= e for s, e in self.reserved)

    def _probe(self, drv: str, d: FakeDevice) -> None:
        if d.driver is not None:
            raise oserror(errno.EBUSY)  # __driver_probe_device() [facts: device_dax/bind EBUSY]
        if d.size == 0:
            raise oserror(errno.ENXIO)  # dax_bus_probe(): seeds cannot bind
        if drv == DEVDAX:
            self._devdax_probe(d)
        else:
            self._kmem_probe(d)
        if not d.region.static and d.region.seed == d.name:
            d.region.seed = None  # dax_bus_probe(): the seed has been used
            self.render_region(d.region)
        d.driver = drv
        self.render_device(d)
        self.tree.link(f"{BUS}/drivers/{drv}/{d.name}", d.devpath)
        self.events.emit("bind", "dax", d.devpath, **self._props(d), DRIVER=drv)

    def _devdax_probe(self, d: FakeDevice) -> None:
        """dev_dax_probe() (device.c): reserve every range; kmem leftovers make it EBUSY."""
        if d.region.static and len(d.ranges) > 1:
            raise einval()
        if any(self._conflict(s, e) for s, e in d.ranges):
            raise oserror(errno.EBUSY)
        for r in d.ranges:
            self.reserved[r] = f"{d.name} ({DEVDAX})"

    def _kmem_probe(self, d: FakeDevice) -> None:
        """dev_dax_kmem_probe(): hot-add the whole blocks of each range, one range at a time."""
        if d.region.target_node < 0:
            raise einval()  # "rejecting DAX region with invalid node"
        bs = self.memory.config.block_size
        aligned = {}
        for i, (s, e) in enumerate(d.ranges):
            start, end = -(-s // bs) * bs, (e + 1) // bs * bs - 1  # dax_kmem_range()
            if start < end:
                aligned[i] = (start, end)
        if not aligned:
            raise einval()  # "rejecting DAX region without any memory after alignment"
        self._group += 1
        for i, (start, end) in aligned.items():
            if self._conflict(start, end):
                if d.kmem_ranges:
                    continue  # "Once some memory has been onlined ..." keep what is mapped
                raise oserror(errno.EBUSY)
            self.reserved[(start, end)] = f"{d.name} ({KMEM})"
            d.kmem_ranges[i] = (start, end)
            self.memory.hot_add(start, end, d.region.target_node, self._group)

    def _release(self, d: FakeDevice) -> None:
        """__device_release_driver(): the driver's remove, then the unbind uevent (no DRIVER)."""
        drv = d.driver
        assert drv is not None
        if drv == DEVDAX:
            # kill_dev_dax() + unmap_mapping_range(): mappings SIGBUS on their next access.
            for pid, comm, mapped in self.procfs.users(d.name):
                self.sigbus.append(Victim(pid, comm, d.name, mapped))
            for r in d.ranges:
                self.reserved.pop(r, None)
        else:
            self._kmem_remove(d)
        d.driver = None
        self.tree.remove(f"{BUS}/drivers/{drv}/{d.name}")
        self.render_device(d)
        self.events.emit("unbind", "dax", d.devpath, **self._props(d))

    def _kmem_remove(self, d: FakeDevice) -> None:
        """dev_dax_kmem_remove(): "one shot" per range; unbind succeeds even when it fails."""
        hotremove = self.memory.config.hotremove
        for i, (start, end) in sorted(d.kmem_ranges.items()):
            if hotremove and self.memory.hot_remove(start, end):
                del self.reserved[(start, end)]
                continue
            blocks = self.memory.blocks
            span = self.memory.block_range(start, end)
            online = tuple(n for n in span if n in blocks and blocks[n].online)
            reason = "blocks online" if hotremove else "no CONFIG_MEMORY_HOTREMOVE"
            self.leaks.append(Leak(d.name, i, start, end, online, reason))
            self.reserved[(start, end)] = f"{d.name} ({KMEM}, leaked until reboot)"
        d.kmem_ranges.clear()

    # --- rendering -----------------------------------------------------------------------------
    def _props(self, d: FakeDevice) -> dict[str, str]:
        # udev's view [facts]: DEVNAME=/dev/daxX.Y, MODALIAS=dax:t0, MAJOR, MINOR.
        return {
            "MAJOR": str(DAX_MAJOR),
            "MINOR": str(d.minor),
            "DEVNAME": f"/dev/{d.name}",
            "MODALIAS": "dax:t0",
        }

    def render_region(self, r: FakeRegion) -> None:
        rel = f"{r.parent}/dax_region"
        self.tree.attr(f"{rel}/id", str(r.id))
        self.tree.attr(f"{rel}/size", str(r.end - r.start + 1))
        self.tree.attr(f"{rel}/align", str(r.align), 0o400)
        if r.static:  # dax_region_visible(): no available_size/seed/create/delete [facts]
            return
        self.tree.attr(f"{rel}/available_size", str(self.available(r)))
        # seed_show(), create_show(): "%s\n", an empty line when there is none.
        self.tree.raw(f"{rel}/seed", f"{r.seed or ''}\n")
        self.tree.raw(f"{rel}/create", f"{r.youngest or ''}\n", 0o644)  # [lab] 0644
        self.tree.attr(f"{rel}/delete", "", 0o200)

    def render_device(self, d: FakeDevice) -> None:
        t, rel, r = self.tree, d.devpath, d.region
        fixed = 0o444 if r.static else 0o644  # dev_dax_visible(): static size/align are 0444
        t.attr(f"{rel}/dev", f"{DAX_MAJOR}:{d.minor}")
        t.attr(f"{rel}/size", str(d.size), fixed)
        lines = [f"MAJOR={DAX_MAJOR}", f"MINOR={d.minor}", f"DEVNAME={d.name}"]
        if d.driver:
            lines.append(f"DRIVER={d.driver}")
        t.raw(f"{rel}/uevent", "\n".join([*lines, "MODALIAS=dax:t0"]) + "\n", 0o644)
        if r.legacy:
            t.link(f"{rel}/subsystem", "class/dax")
            return
        t.attr(f"{rel}/modalias", "dax:t0")
        t.attr(f"{rel}/align", str(d.align), fixed)
        if r.target_node >= 0:  # hidden when negative
            t.attr(f"{rel}/target_node", str(r.target_node))
        t.attr(f"{rel}/numa_node", str(r.numa_node))
        first = d.ranges[0][0] if d.ranges else r.start
        t.attr(f"{rel}/resource", f"{first:#x}", 0o400)  # [facts] 0400, "%#llx"
        if not r.static:
            t.attr(f"{rel}/mapping", "", 0o200)
        if d.memmap_on_memory is not None:
            t.attr(f"{rel}/memmap_on_memory", "1" if d.memmap_on_memory else "0", 0o644)
        t.link(f"{rel}/subsystem", BUS)
        if d.mappings:
            pgoff = 0
            for i, (s, e) in enumerate(d.ranges):
                t.attr(f"{rel}/mapping{i}/start", f"{s:#x}", 0o400)
                t.attr(f"{rel}/mapping{i}/end", f"{e:#x}", 0o400)
                t.attr(f"{rel}/mapping{i}/page_offset", f"{pgoff:#x}", 0o400)
                t.attr(f"{rel}/mapping{i}/uevent", "", 0o644)  # a device of its own [lab]
                pgoff += (e - s + 1) // PAGE_SIZE
        stale = len(d.ranges) if d.mappings else 0
        while t.exists(f"{rel}/mapping{stale}"):  # unregister_dax_mapping() of trimmed ranges
            t.remove(f"{rel}/mapping{stale}")
            stale += 1
        if d.driver:
            t.link(f"{rel}/driver", f"{BUS}/drivers/{d.driver}")
        else:
            t.remove(f"{rel}/driver")

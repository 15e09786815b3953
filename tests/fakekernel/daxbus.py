"""The dax bus: regions, devices, the device_dax and kmem drivers and their sysfs files.

Sources: [facts] = ../shared/kernel-facts.md (Linux 6.12 observed); otherwise the kernel function
named (drivers/dax/bus.c, drivers/dax/kmem.c, drivers/dax/device.c, drivers/base/bus.c and dd.c).
"""

from __future__ import annotations

import contextlib
import errno
import re
from dataclasses import dataclass, field
from typing import Literal

from tests.fakekernel.events import EventLog
from tests.fakekernel.kstr import einval, kstrtobool, sysfs_streq
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
    next_id: int = 0


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
        if dev_id is None:
            dev_id = region.next_id
        region.next_id = max(region.next_id, dev_id + 1)
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
        self.tree.remove(f"class/dax/{name}" if d.region.legacy else f"{BUS}/devices/{name}")
        self.tree.remove(d.devpath)
        self.render_region(d.region)
        self.events.emit("remove", "dax", d.devpath, **self._props(d))

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
        mine = [d for d in self.devices.values() if d.region is r]
        available = r.end - r.start + 1 - sum(d.size for d in mine)
        self.tree.attr(f"{rel}/available_size", str(available))
        seed = next((d.name for d in mine if d.size == 0 and d.driver is None), "")
        self.tree.attr(f"{rel}/seed", seed)
        self.tree.attr(f"{rel}/create", "", 0o644)
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
                pgoff += (e - s + 1) // 4096
        if d.driver:
            t.link(f"{rel}/driver", f"{BUS}/drivers/{d.driver}")
        else:
            t.remove(f"{rel}/driver")

"""The cxl bus of a QEMU 10 CXL machine under Linux 6.12: host bridges, windows, memdevs, regions.

Sources: [lab] = ../shared/cxl-lab.md; [observed] = tests/vm/snapshots/cxl-observed-*.json (every
object on /sys/bus/cxl/devices with its attributes, before and after ``cxl create-region``; the
fake's tree is checked against them by tests/kernel/test_fake_cxl_shape.py); otherwise the kernel
function named (drivers/cxl/core/port.c, region.c, memdev.c, drivers/cxl/acpi.c).

The objects and where they live:

- ``devices/platform/ACPI0017:00/root0``: the CXL root port (port id 0), with ``dport<uid>``
  links to the host bridges; its root decoders ``decoder0.N`` are the windows (CFMWS).
- a host bridge ``devices/pci0000:BB`` (``firmware_node/uid``: BB as a decimal number, as QEMU's
  ``pxb-cxl,bus_nr=BB``), its cxl port ``root0/portP`` with one switch decoder ``decoderP.0``
  ([lab] QEMU gives each host bridge one HDM decoder), its root ports ``0000:BB:0K.0``;
- a memdev ``devices/pci0000:BB/0000:BB:0K.0/0000:CC:00.0/memM`` (``serial``), its endpoint
  port ``root0/portP/endpointE`` (``uport`` -> the memdev) with four endpoint decoders
  ``decoderE.0..3``;
- a region ``root0/decoder0.N/regionR`` (``targetK`` -> the endpoint decoder at interleave
  position K) and its ``dax_regionR``, which carries the dax region of daxR.0.

Port ids, memdev and region numbers are handed out in creation order, as the kernel does: a
test that creates the same hardware in another order gets other names for it (renumbering).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakekernel.events import EventLog
from tests.fakekernel.memory import MiB, oserror
from tests.fakekernel.tree import Tree

PLATFORM = "devices/platform"
ACPI_ROOT = f"{PLATFORM}/ACPI0017:00"
ROOT = f"{ACPI_ROOT}/root0"
ACPI_BUS = "devices/LNXSYSTM:00/LNXSYBUS:00"
BUS = "bus/cxl"
DRIVERS = ("cxl_port", "cxl_mem", "cxl_region", "cxl_dax_region", "cxl_nvdimm_bridge")
MEMDEV_MAJOR = 250  # [observed] mem0 dev 250:0
ENDPOINT_DECODERS = 4  # [observed] decoderE.0..3 per QEMU type-3 device
DEFAULT_GRANULARITY = 256  # [observed] a window made without interleave-granularity
SWITCH_IDLE_GRANULARITY = 4096  # [observed] an unused host bridge decoder
WINDOW_ALIGN = 256 * MiB  # CXL windows come in multiples of 256 MiB per way
NO_DPA = (1 << 64) - 1  # [observed] dpa_resource of an unallocated endpoint decoder
# (devtype, modalias) of each kind of cxl bus device (drivers/cxl/cxl.h CXL_DEVICE_*)
ROOT_PORT = ("cxl_port", "cxl:t4")
PORT = ("cxl_port", "cxl:t3")
NVDIMM_BRIDGE = ("cxl_nvdimm_bridge", "cxl:t1")
ROOT_DECODER = ("cxl_decoder_root", "cxl:t0")
SWITCH_DECODER = ("cxl_decoder_switch", "cxl:t0")
ENDPOINT_DECODER = ("cxl_decoder_endpoint", "cxl:t0")
REGION = ("cxl_region", "cxl:t6")
DAX_REGION = ("cxl_dax_region", "cxl:t8")


def _hex(value: int) -> str:
    return f"{value:#x}"


@dataclass
class HostBridge:
    uid: int  # ACPI _UID; QEMU: the pxb-cxl bus_nr
    acpi: int  # N of its ACPI0016:0N firmware node
    port: int  # P of root0/portP
    root_ports: int = 0  # root ports made so far (one per memdev)
    region: CxlRegion | None = None  # what its one switch decoder decodes

    @property
    def name(self) -> str:
        return f"pci0000:{self.uid:02x}"

    @property
    def path(self) -> str:
        return f"devices/{self.name}"

    @property
    def port_path(self) -> str:
        return f"{ROOT}/port{self.port}"


@dataclass
class Memdev:
    index: int  # M of memM
    serial: int
    bridge: HostBridge
    root_port: int  # K of 0000:BB:0K.0
    endpoint: int  # E of endpointE
    # Per endpoint decoder: the region it decodes for, None when free.
    decoders: list[CxlRegion | None] = field(default_factory=lambda: [None] * ENDPOINT_DECODERS)

    @property
    def name(self) -> str:
        return f"mem{self.index}"

    @property
    def root_port_path(self) -> str:
        return f"{self.bridge.path}/0000:{self.bridge.uid:02x}:{self.root_port:02x}.0"

    @property
    def path(self) -> str:
        bus = (self.bridge.uid + 1 + self.root_port) & 0xFF
        return f"{self.root_port_path}/0000:{bus:02x}:00.0/{self.name}"

    @property
    def endpoint_path(self) -> str:
        return f"{self.bridge.port_path}/endpoint{self.endpoint}"


@dataclass
class Window:
    index: int  # N of decoder0.N
    targets: tuple[HostBridge, ...]  # in target_list order
    start: int
    size: int
    granularity: int
    target_node: int  # [lab] Linux makes one memoryless node per window
    # The region id create_ram_region offers (cxlrd->region_id), taken when the window was
    # registered (at boot); None for a window a test made on the fly for one region: it takes
    # the next free id when a region is made in it.
    next_region: int | None
    used: int = 0  # bytes of the window regions took, from its start

    @property
    def name(self) -> str:
        return f"decoder0.{self.index}"

    @property
    def path(self) -> str:
        return f"{ROOT}/{self.name}"


@dataclass
class CxlRegion:
    id: int
    window: Window
    memdevs: tuple[Memdev, ...]  # in interleave position order
    decoders: tuple[int, ...]  # per memdev: D of its endpoint decoder decoderE.D
    start: int
    size: int
    granularity: int

    @property
    def name(self) -> str:
        return f"region{self.id}"

    @property
    def path(self) -> str:
        return f"{self.window.path}/{self.name}"

    @property
    def dax_region_path(self) -> str:
        return f"{self.path}/dax_region{self.id}"


class CxlBus:
    """The cxl bus objects; regions are made with :meth:`create_region`, which the FakeKernel
    follows with the dax device (kernel.add_cxl_device)."""

    def __init__(self, tree: Tree, events: EventLog, next_free_id: Callable[[], int]) -> None:
        self.tree = tree
        self.events = events
        self.next_free_id = next_free_id  # the id memregion_alloc() would give now
        self.bridges: dict[int, HostBridge] = {}  # by uid
        self.memdevs: dict[int, Memdev] = {}  # by serial
        self.windows: list[Window] = []
        self.regions: dict[int, CxlRegion] = {}
        self._next_port = 1  # root0 is port 0
        self._started = False

    # --- the platform --------------------------------------------------------------------------
    def _start(self) -> None:
        """cxl_acpi at boot: the root port, the nvdimm bridge, the drivers."""
        if self._started:
            return
        self._started = True
        t = self.tree
        for drv in DRIVERS:
            t.dir(f"{BUS}/drivers/{drv}")
        t.dir(f"{BUS}/devices")
        _attrs(t, ROOT, ROOT_PORT, None, {"decoders_committed": "0"})
        # [observed] "../../ACPI0017:00", not "..": kernfs spells a link to an ancestor that way
        uport = t.path(f"{ROOT}/uport")
        if not os.path.lexists(uport):
            os.symlink("../../ACPI0017:00", uport)
        self._publish("root0", ROOT)
        bridge = f"{ROOT}/nvdimm-bridge0"
        _attrs(t, bridge, NVDIMM_BRIDGE, "cxl_nvdimm_bridge", {})
        self._publish("nvdimm-bridge0", bridge)
        self._firmware_node("devices/pci0000:00", "PNP0A03:00", "PNP0A08", 0)

    def _publish(self, name: str, path: str) -> None:
        self.tree.link(f"{BUS}/devices/{name}", path)

    def _firmware_node(self, device: str, acpi_name: str, hid: str, uid: int) -> None:
        node = f"{ACPI_BUS}/{acpi_name}"
        self.tree.attr(f"{node}/hid", hid)
        self.tree.attr(f"{node}/uid", str(uid))
        self.tree.link(f"{device}/firmware_node", node)

    def add_host_bridge(self, uid: int) -> HostBridge:
        """A pxb-cxl host bridge (bus_nr=uid) and its cxl port with one switch decoder."""
        self._start()
        assert uid not in self.bridges, f"host bridge {uid} exists"
        assert 0 < uid < 0x100, "the uid is the host bridge's PCI bus number"
        hb = HostBridge(uid, len(self.bridges), self._next_port)
        self._next_port += 1
        self.bridges[uid] = hb
        self._firmware_node(hb.path, f"ACPI0016:{hb.acpi:02x}", "ACPI0016", uid)
        self.tree.link(f"{ROOT}/dport{uid}", hb.path)
        self._render_port(hb)
        return hb

    def add_memdev(self, serial: int, host_bridge: int | None = None) -> Memdev:
        """A type-3 device on a root port of its own below the host bridge (a new one when
        ``host_bridge`` is None); cxl_mem probes it and adds its endpoint port."""
        assert serial not in self.memdevs, f"serial {serial:#x} exists"
        if host_bridge is None:
            host_bridge = self._free_uid()
        hb = self.bridges.get(host_bridge) or self.add_host_bridge(host_bridge)
        md = Memdev(len(self.memdevs), serial, hb, hb.root_ports, self._next_port)
        hb.root_ports += 1
        self._next_port += 1
        self.memdevs[serial] = md
        self.tree.dir(md.root_port_path)
        self._render_port(hb)
        self._render_memdev(md)
        return md

    def add_window(
        self,
        targets: tuple[int, ...],
        start: int,
        size: int,
        *,
        granularity: int | None = None,
        target_node: int,
        region_id: int | None,
    ) -> Window:
        """A CXL Fixed Memory Window over the host bridges ``targets`` (uids, in order)."""
        self._start()
        bridges = tuple(self.bridges.get(uid) or self.add_host_bridge(uid) for uid in targets)
        assert bridges, "a window needs a host bridge"
        gran = granularity or DEFAULT_GRANULARITY
        w = Window(len(self.windows), bridges, start, size, gran, target_node, region_id)
        self.windows.append(w)
        self._render_window(w)
        self._publish(w.name, w.path)
        return w

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise AssertionError(f"no window {name}")

    def _free_uid(self) -> int:
        """QEMU lab bus numbers: 12, 52, 92, ... (0x0c, 0x34, ...)."""
        uid = 12
        while uid in self.bridges:
            uid += 40
        return uid

    # --- regions ---------------------------------------------------------------------------------
    def create_region(
        self, window: Window, memdevs: tuple[Memdev, ...], start: int, size: int, region_id: int
    ) -> CxlRegion:
        """``cxl create-region -m -t ram -d <window> -w <ways> <memdevs>``: the region, committed,
        with its dax_region; the add region, add dax_region, bind region uevents [observed]."""
        ways = len(memdevs)
        for k, md in enumerate(memdevs):
            want = window.targets[k % len(window.targets)]
            if md.bridge is not want:  # [lab] "failed to set target0 to mem0"
                raise AssertionError(
                    f"{md.name} at position {k} is below {md.bridge.name}, the window's "
                    f"target_list has {want.name} there"
                )
            if md.bridge.region is not None:  # [lab] one region per host bridge at a time
                raise oserror(errno.ENXIO)
        if len(set(map(id, memdevs))) != ways:
            raise AssertionError("a memdev twice in one region")
        inside = window.start <= start and start + size <= window.start + window.size
        if size % (WINDOW_ALIGN * ways) or not inside:
            raise AssertionError(f"a {size:#x} region does not fit {window.name}")
        slots = []
        for md in memdevs:
            free = md.decoders.index(None) if None in md.decoders else None
            if free is None:
                raise oserror(errno.ENXIO)
            slots.append(free)
        region = CxlRegion(
            region_id, window, memdevs, tuple(slots), start, size, window.granularity
        )
        window.used = max(window.used, start - window.start + size)
        self.regions[region_id] = region
        for md, slot in zip(memdevs, slots, strict=True):
            md.decoders[slot] = region
            md.bridge.region = region
        self._render_region(region)
        self._publish(region.name, region.path)
        self._emit("add", region.path, REGION)
        dax_region = region.dax_region_path
        _attrs(self.tree, dax_region, DAX_REGION, "cxl_dax_region", {})
        self._publish(f"dax_region{region_id}", dax_region)
        self._emit("add", dax_region, DAX_REGION)
        self._emit("bind", region.path, REGION, "cxl_region")
        for md in memdevs:
            self._render_port(md.bridge)
            self._render_memdev(md)
        return region

    def bound_dax_region(self, region: CxlRegion) -> None:
        """cxl_dax_region_probe() returned (after its dax device was added and probed)."""
        self._emit("bind", region.dax_region_path, DAX_REGION, "cxl_dax_region")

    def destroy_region(self, region: CxlRegion) -> None:
        """The cxl side of ``cxl destroy-region -f``, once its dax devices are gone: the
        dax_region and the region go, the decoders are reset, and the window takes the region's
        id back when it is below the one it offers (cxl_region_release())."""
        dax_region = region.dax_region_path
        self._emit("unbind", dax_region, DAX_REGION)
        self.tree.remove(f"{BUS}/devices/dax_region{region.id}")
        self._emit("remove", dax_region, DAX_REGION)
        self._emit("unbind", region.path, REGION)
        self.tree.remove(f"{BUS}/devices/{region.name}")
        self.tree.remove(region.path)
        self._emit("remove", region.path, REGION)
        del self.regions[region.id]
        w = region.window
        if w.used == region.start - w.start + region.size:
            w.used -= region.size  # the last one made: its space is free again
        if w.next_region is not None:
            w.next_region = min(w.next_region, region.id)
        for md, slot in zip(region.memdevs, region.decoders, strict=True):
            md.decoders[slot] = None
            md.bridge.region = None
            self._render_port(md.bridge)
            self._render_memdev(md)
        self._render_window(w)

    def offer(self, window: Window, next_id: int | None) -> None:
        """The region id the window's create_ram_region offers next (memregion_alloc())."""
        window.next_region = next_id
        self._render_window(window)

    def _emit(
        self, action: str, path: str, kind: tuple[str, str], driver: str | None = None
    ) -> None:
        devtype, modalias = kind
        extra = {"DEVTYPE": devtype}
        if driver is not None:
            extra["DRIVER"] = driver
        self.events.emit(action, "cxl", path, **extra, MODALIAS=modalias)

    # --- rendering -------------------------------------------------------------------------------
    def _render_port(self, hb: HostBridge) -> None:
        t, path = self.tree, hb.port_path
        _attrs(t, path, PORT, "cxl_port", {"decoders_committed": "0"})
        t.link(f"{path}/uport", hb.path)
        t.link(f"{path}/parent_dport", hb.path)
        for k in range(hb.root_ports):
            t.link(f"{path}/dport{k}", f"{hb.path}/0000:{hb.uid:02x}:{k:02x}.0")
        self._publish(f"port{hb.port}", path)
        r = hb.region
        mine = [i for i, md in enumerate(r.memdevs) if md.bridge is hb] if r else []
        ways = max(1, len(mine))
        decoder = f"{path}/decoder{hb.port}.0"
        _attrs(
            t,
            decoder,
            SWITCH_DECODER,
            None,
            {
                "interleave_granularity": str(
                    r.granularity * len(r.memdevs) // ways if r else SWITCH_IDLE_GRANULARITY
                ),
                "interleave_ways": str(ways),
                "locked": "0",
                "region": r.name if r else "",
                "size": _hex(r.size if r else 0),
                "target_list": ",".join(str(r.memdevs[i].root_port) for i in mine) if r else "0",
                "target_type": "expander",
            },
        )
        t.attr(f"{decoder}/start", _hex(r.start if r else 0), 0o400)
        self._publish(f"decoder{hb.port}.0", decoder)

    def _render_memdev(self, md: Memdev) -> None:
        t, path = self.tree, md.path
        t.attr(f"{path}/dev", f"{MEMDEV_MAJOR}:{md.index}")
        t.link(f"{path}/driver", f"{BUS}/drivers/cxl_mem")
        t.attr(f"{path}/firmware_version", "BWFW VERSION 00")
        t.attr(f"{path}/label_storage_size", "0")
        t.attr(f"{path}/numa_node", "-1")
        t.attr(f"{path}/payload_max", "2048")
        t.attr(f"{path}/serial", _hex(md.serial))  # serial_show(): "%#llx"
        t.attr(f"{path}/trigger_poison_list", "", 0o200)
        uevent = [
            f"MAJOR={MEMDEV_MAJOR}",
            f"MINOR={md.index}",
            f"DEVNAME=cxl/{md.name}",
            "DEVTYPE=cxl_memdev",
            "DRIVER=cxl_mem",
            "MODALIAS=cxl:t5",
        ]
        t.raw(f"{path}/uevent", "\n".join(uevent) + "\n", 0o644)
        self._publish(md.name, path)
        ep = md.endpoint_path
        committed = sum(1 for r in md.decoders if r is not None)
        _attrs(t, ep, PORT, "cxl_port", {"decoders_committed": str(committed)})
        t.raw(f"{ep}/CDAT", "\x92\x00\x00\x00\x02\n", 0o400)
        t.link(f"{ep}/uport", path)
        t.link(f"{ep}/parent_dport", md.root_port_path)
        self._publish(f"endpoint{md.endpoint}", ep)
        offset = 0
        for d, r in enumerate(md.decoders):
            decoder = f"{ep}/decoder{md.endpoint}.{d}"
            share = r.size // len(r.memdevs) if r else 0
            _attrs(
                t,
                decoder,
                ENDPOINT_DECODER,
                None,
                {
                    "dpa_resource": _hex(offset if r else NO_DPA),
                    "interleave_granularity": str(r.granularity if r else DEFAULT_GRANULARITY),
                    "interleave_ways": str(len(r.memdevs) if r else 1),
                    "locked": "0",
                    "region": r.name if r else "",
                    "size": _hex(r.size if r else 0),
                    "target_type": "expander",
                },
            )
            t.attr(f"{decoder}/dpa_size", f"{share:#018x}", 0o644)  # "%#018llx"
            t.attr(f"{decoder}/mode", "ram" if r else "none", 0o644)
            t.attr(f"{decoder}/start", _hex(r.start if r else 0), 0o400)
            self._publish(f"decoder{md.endpoint}.{d}", decoder)
            offset += share

    def _render_window(self, w: Window) -> None:
        t, path = self.tree, w.path
        offered = f"region{self.next_free_id() if w.next_region is None else w.next_region}"
        _attrs(
            t,
            path,
            ROOT_DECODER,
            None,
            {
                "cap_pmem": "1",  # [lab] QEMU's windows can hold either
                "cap_ram": "1",
                "cap_type2": "1",
                "cap_type3": "1",
                "interleave_granularity": str(w.granularity),
                "interleave_ways": str(len(w.targets)),
                "locked": "0",
                "qos_class": "0",
                "size": _hex(w.size),
                "target_list": ",".join(str(hb.uid) for hb in w.targets),
            },
        )
        t.attr(f"{path}/create_pmem_region", offered, 0o644)
        t.attr(f"{path}/create_ram_region", offered, 0o644)
        t.attr(f"{path}/delete_region", "", 0o200)
        t.attr(f"{path}/start", _hex(w.start), 0o400)

    def _render_region(self, r: CxlRegion) -> None:
        t, path = self.tree, r.path
        t.attr(f"{path}/commit", "1", 0o644)
        t.attr(f"{path}/devtype", "cxl_region")
        t.link(f"{path}/driver", f"{BUS}/drivers/cxl_region")
        t.attr(f"{path}/interleave_granularity", str(r.granularity), 0o644)
        t.attr(f"{path}/interleave_ways", str(len(r.memdevs)), 0o644)
        t.attr(f"{path}/modalias", "cxl:t6")
        t.attr(f"{path}/mode", "ram")
        t.attr(f"{path}/resource", _hex(r.start))
        t.attr(f"{path}/size", _hex(r.size), 0o644)
        for k, (md, slot) in enumerate(zip(r.memdevs, r.decoders, strict=True)):
            t.attr(f"{path}/target{k}", f"decoder{md.endpoint}.{slot}", 0o644)
        lines = "DEVTYPE=cxl_region\nDRIVER=cxl_region\nMODALIAS=cxl:t6\n"
        t.raw(f"{path}/uevent", lines, 0o644)
        t.attr(f"{path}/uuid", "")  # region.c uuid_visible(): 0444 and empty for RAM regions


def _attrs(
    t: Tree, path: str, kind: tuple[str, str], driver: str | None, values: dict[str, str]
) -> None:
    """A cxl bus device's attributes (0444) with its devtype, modalias, driver and uevent."""
    devtype, modalias = kind
    for name, value in values.items():
        t.attr(f"{path}/{name}", value)
    t.attr(f"{path}/devtype", devtype)
    t.attr(f"{path}/modalias", modalias)
    lines = [f"DEVTYPE={devtype}"]
    if driver is not None:
        t.link(f"{path}/driver", f"{BUS}/drivers/{driver}")
        lines.append(f"DRIVER={driver}")
    lines.append(f"MODALIAS={modalias}")
    t.raw(f"{path}/uevent", "\n".join(lines) + "\n", 0o644)


__all__ = ["CxlBus", "CxlRegion", "HostBridge", "Memdev", "Window"]

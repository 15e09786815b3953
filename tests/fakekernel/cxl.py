"""The cxl bus of a QEMU 10 CXL machine under Linux 6.12: host bridges, windows, memdevs, regions.

Sources: [lab] = ../shared/cxl-lab.md; [observed] = tests/vm/snapshots/cxl-observed-*.json (every
object on /sys/bus/cxl/devices with its attributes, before and after ``cxl create-region``; the
fake's tree is checked against them by tests/kernel/test_fake_cxl_shape.py); otherwise the kernel
function named (drivers/cxl/core/port.c, region.c, hdm.c, memdev.c, drivers/cxl/acpi.c), and
for the writes ndctl v81 makes, its cxl/region.c and cxl/lib/libcxl.c.

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

Regions are made and torn down by the writes ``cxl create-region`` and ``cxl destroy-region``
make (create_ram_region, interleave_granularity, interleave_ways, size, the endpoint decoders'
mode and dpa_size, targetK, commit, the cxl_region driver's bind and unbind, delete_region):
each method below parses the value and answers as the kernel's store function does. The dax
side of a bound region (dax_region's dax device, kmem) is the FakeKernel's (kernel.py).

Port ids, memdev and region numbers are handed out in creation order, as the kernel does: a
test that creates the same hardware in another order gets other names for it (renumbering).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from tests.fakekernel.events import EventLog
from tests.fakekernel.kstr import cstr, einval, kstrtobool, kstrtoll, kstrtoull, sysfs_streq
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
SWITCH_IDLE_GRANULARITY = 4096  # [observed] an unused host bridge decoder (passthrough: PAGE_SIZE)
WINDOW_ALIGN = 256 * MiB  # CXL windows come in multiples of 256 MiB per way
DPA_ALIGN = 256 * MiB  # SZ_256M: dpa_size_store(), alloc_hpa()
MAX_GRANULARITY = 16384  # granularity_to_eig(): a power of 2 in 256..16K
NO_DPA = (1 << 64) - 1  # [observed] dpa_resource of an unallocated endpoint decoder
NO_RESOURCE = (1 << 64) - 1  # resource_show() before size is set: -1ULL
WAYS = (1, 2, 4, 8, 16, 3, 6, 12)  # ways_to_eiw()
# (devtype, modalias) of each kind of cxl bus device (drivers/cxl/cxl.h CXL_DEVICE_*)
ROOT_PORT = ("cxl_port", "cxl:t4")
PORT = ("cxl_port", "cxl:t3")
NVDIMM_BRIDGE = ("cxl_nvdimm_bridge", "cxl:t1")
MEMDEV = ("cxl_memdev", "cxl:t5")
ROOT_DECODER = ("cxl_decoder_root", "cxl:t0")
SWITCH_DECODER = ("cxl_decoder_switch", "cxl:t0")
ENDPOINT_DECODER = ("cxl_decoder_endpoint", "cxl:t0")
REGION = ("cxl_region", "cxl:t6")
DAX_REGION = ("cxl_dax_region", "cxl:t8")
# cxl_bus_match(): a driver takes the one device type of its id.
DRIVER_KIND = {
    "cxl_port": PORT,
    "cxl_mem": MEMDEV,
    "cxl_region": REGION,
    "cxl_dax_region": DAX_REGION,
    "cxl_nvdimm_bridge": NVDIMM_BRIDGE,
}


def _hex(value: int) -> str:
    return f"{value:#x}"


class Config(IntEnum):
    """enum cxl_config_state (drivers/cxl/cxl.h), in its order."""

    IDLE = 0
    INTERLEAVE_ACTIVE = 1  # ways, granularity and size set
    ACTIVE = 2  # every target attached
    RESET_PENDING = 3
    COMMIT = 4


@dataclass(eq=False)
class HostBridge:
    uid: int  # ACPI _UID; QEMU: the pxb-cxl bus_nr
    acpi: int  # N of its ACPI0016:0N firmware node
    port: int  # P of root0/portP
    root_ports: int = 0  # root ports made so far (one per memdev)
    # Its one switch decoder decoderP.0. With one root port it is a passthrough decoder
    # (devm_cxl_add_passthrough_decoder(): 1 way, PAGE_SIZE, no ->commit, so the port's
    # decoders_committed stays 0 [observed]). What the last region set in it stays afterwards.
    region: CxlRegion | None = None  # cxld->region: from the first target attached below it
    ways: int = 1
    granularity: int = SWITCH_IDLE_GRANULARITY
    hpa: tuple[int, int] | None = None  # (start, size) once the region's targets are set up
    targets: tuple[int, ...] = (0,)  # cxlsd->target[]: root port numbers

    @property
    def name(self) -> str:
        return f"pci0000:{self.uid:02x}"

    @property
    def path(self) -> str:
        return f"devices/{self.name}"

    @property
    def port_path(self) -> str:
        return f"{ROOT}/port{self.port}"


@dataclass(eq=False)
class EndpointDecoder:
    memdev: Memdev = field(repr=False)
    index: int  # D of decoderE.D
    mode: str = "none"  # cxl_decoder_mode_name(): none until mode_store or a DPA allocation
    dpa: tuple[int, int] | None = None  # (offset, size) in the memdev's DPA space
    region: CxlRegion | None = None
    committed: bool = False  # CXL_DECODER_F_ENABLE
    # Set when it joins a region and kept after (cxl_region_attach(); detach resets only hpa).
    ways: int = 1
    granularity: int = DEFAULT_GRANULARITY
    hpa: tuple[int, int] | None = None  # (start, size): hpa_range while in a region

    @property
    def name(self) -> str:
        return f"decoder{self.memdev.endpoint}.{self.index}"

    @property
    def path(self) -> str:
        return f"{self.memdev.endpoint_path}/{self.name}"


@dataclass(eq=False)
class Memdev:
    index: int  # M of memM
    serial: int
    bridge: HostBridge
    root_port: int  # K of 0000:BB:0K.0
    endpoint: int  # E of endpointE
    # Volatile capacity, memN/ram/size; None: the file is not there and DPA has no limit.
    ram_size: int | None = None
    decoders: list[EndpointDecoder] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.decoders = [EndpointDecoder(self, d) for d in range(ENDPOINT_DECODERS)]

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

    @property
    def hdm_end(self) -> int:
        """port->hdm_end: the highest decoder with DPA (allocations go in decoder order)."""
        return max((d.index for d in self.decoders if d.dpa is not None), default=-1)

    @property
    def committed(self) -> int:
        """cxl_num_decoders_committed() of its endpoint port."""
        return sum(d.committed for d in self.decoders)

    def free_ram_start(self) -> int:
        """cxl_dpa_alloc(): free ram starts after the last allocation."""
        return max((o + s for o, s in (d.dpa for d in self.decoders if d.dpa)), default=0)


@dataclass(eq=False)
class Window:
    index: int  # N of decoder0.N
    targets: tuple[HostBridge, ...]  # in target_list order
    start: int
    size: int
    granularity: int
    target_node: int  # [lab] Linux makes one memoryless node per window
    # The region id create_ram_region offers (cxlrd->region_id), taken when the window was
    # registered (at boot); None for a window a test made on the fly for one region: it offers
    # the next free id, whatever that is at the time.
    next_region: int | None

    @property
    def name(self) -> str:
        return f"decoder0.{self.index}"

    @property
    def path(self) -> str:
        return f"{ROOT}/{self.name}"


@dataclass(eq=False)
class CxlRegion:
    id: int
    window: Window = field(repr=False)
    state: Config = Config.IDLE
    ways: int = 0  # kzalloc(): 0 until interleave_ways_store()
    granularity: int = 0
    start: int | None = None  # p->res
    size: int = 0
    targets: dict[int, EndpointDecoder] = field(default_factory=dict)  # by position
    bound: bool = False  # the cxl_region driver

    @property
    def name(self) -> str:
        return f"region{self.id}"

    @property
    def path(self) -> str:
        return f"{self.window.path}/{self.name}"

    @property
    def dax_region_path(self) -> str:
        return f"{self.path}/dax_region{self.id}"

    @property
    def memdevs(self) -> tuple[Memdev, ...]:
        """The memdevs of the attached targets, in position order."""
        return tuple(self.targets[k].memdev for k in sorted(self.targets))


class CxlBus:
    """The cxl bus objects and the writes that make and tear down regions.

    ``release_driver`` is device_release_driver() of a bound region: the FakeKernel sets it to
    what takes the dax side down (kernel._cxl_unbind), which ends with :meth:`unbound`."""

    def __init__(
        self,
        tree: Tree,
        events: EventLog,
        next_free_id: Callable[[], int],
        take_id: Callable[[int | None], int],
    ) -> None:
        self.tree = tree
        self.events = events
        self.next_free_id = next_free_id  # the id memregion_alloc() would give now
        self.take_id = take_id  # memregion_alloc(): that id (or, for None, the next) is taken
        self.release_driver: Callable[[CxlRegion], None] = self.unbound
        self.bridges: dict[int, HostBridge] = {}  # by uid
        self.memdevs: dict[int, Memdev] = {}  # by serial
        self.windows: list[Window] = []
        self.regions: dict[int, CxlRegion] = {}
        self.kinds: dict[str, tuple[str, str]] = {}  # bus/cxl/devices/<name>: its kind
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
            for attr in ("bind", "unbind", "uevent"):  # driver_create_file(): 0200
                t.attr(f"{BUS}/drivers/{drv}/{attr}", "", 0o200)
        t.dir(f"{BUS}/devices")
        _attrs(t, ROOT, ROOT_PORT, None, {"decoders_committed": "0"})
        # [observed] "../../ACPI0017:00", not "..": kernfs spells a link to an ancestor that way
        uport = t.path(f"{ROOT}/uport")
        if not os.path.lexists(uport):
            os.symlink("../../ACPI0017:00", uport)
        self._publish("root0", ROOT, ROOT_PORT)
        bridge = f"{ROOT}/nvdimm-bridge0"
        _attrs(t, bridge, NVDIMM_BRIDGE, "cxl_nvdimm_bridge", {})
        self._publish("nvdimm-bridge0", bridge, NVDIMM_BRIDGE)
        self._firmware_node("devices/pci0000:00", "PNP0A03:00", "PNP0A08", 0)

    def _publish(self, name: str, path: str, kind: tuple[str, str]) -> None:
        self.tree.link(f"{BUS}/devices/{name}", path)
        self.kinds[name] = kind

    def _unpublish(self, name: str) -> None:
        self.tree.remove(f"{BUS}/devices/{name}")
        self.kinds.pop(name, None)

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

    def add_memdev(
        self, serial: int, host_bridge: int | None = None, ram_size: int | None = None
    ) -> Memdev:
        """A type-3 device on a root port of its own below the host bridge (a new one when
        ``host_bridge`` is None); cxl_mem probes it and adds its endpoint port."""
        assert serial not in self.memdevs, f"serial {serial:#x} exists"
        if host_bridge is None:
            host_bridge = self._free_uid()
        hb = self.bridges.get(host_bridge) or self.add_host_bridge(host_bridge)
        md = Memdev(len(self.memdevs), serial, hb, hb.root_ports, self._next_port, ram_size)
        hb.root_ports += 1
        self._next_port += 1
        self.memdevs[serial] = md
        self.tree.dir(md.root_port_path)
        self._render_port(hb)
        self._render_memdev(md)
        # cxl_pci adds memN, cxl_mem binds it (and adds its endpoint port)
        self._emit("add", md.path, MEMDEV)
        self._emit("bind", md.path, MEMDEV, "cxl_mem")
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
        self._publish(w.name, w.path, ROOT_DECODER)
        return w

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise AssertionError(f"no window {name}")

    def endpoint_decoder(self, name: str) -> EndpointDecoder | None:
        for md in self.memdevs.values():
            for d in md.decoders:
                if d.name == name:
                    return d
        return None

    def region(self, name: str) -> CxlRegion | None:
        return next((r for r in self.regions.values() if r.name == name), None)

    def _free_uid(self) -> int:
        """QEMU lab bus numbers: 12, 52, 92, ... (0x0c, 0x34, ...)."""
        uid = 12
        while uid in self.bridges:
            uid += 40
        return uid

    def free_gap(self, w: Window, size: int, align: int = DPA_ALIGN) -> int | None:
        """alloc_free_mem_region(): the lowest ``align``-aligned gap of ``size`` in the window
        between the regions that hold an address range; None when there is none."""
        taken = sorted(
            (r.start, r.start + r.size)
            for r in self.regions.values()
            if r.window is w and r.start is not None
        )
        at = -(-w.start // align) * align
        for s, e in taken:
            if at + size <= s:
                break
            at = max(at, -(-e // align) * align)
        return at if at + size <= w.start + w.size else None

    def offer(self, window: Window, next_id: int | None) -> None:
        """The region id the window's create_ram_region offers next (memregion_alloc())."""
        window.next_region = next_id
        self._render_window(window)

    def offered(self, window: Window) -> int:
        """create_ram_region_show(): the id a create must name."""
        return self.next_free_id() if window.next_region is None else window.next_region

    # --- making a region: the root decoder's and the region's attributes ------------------------
    def create_ram_region(self, w: Window, value: str) -> CxlRegion:
        """create_region_store(): sscanf(buf, "region%d"), which must be the offered id."""
        text = cstr(value)
        number = _scan_int(text.removeprefix("region")) if text.startswith("region") else None
        if number is None:
            raise einval()  # sscanf() != 1
        offered = self.offered(w)
        if number != offered:
            raise oserror(errno.EBUSY)  # __create_region(): atomic_cmpxchg(region_id) failed
        rid = self.take_id(offered)
        if w.next_region is not None:
            self.offer(w, self.take_id(None))  # the window's next id: memregion_alloc()
        return self.new_region(w, rid)

    def new_region(self, w: Window, rid: int) -> CxlRegion:
        """devm_cxl_add_region(): an unconfigured RAM region, its add uevent."""
        assert rid not in self.regions, f"region{rid} exists"
        region = CxlRegion(rid, w)
        self.regions[rid] = region
        self._render_region(region)
        self._publish(region.name, region.path, REGION)
        self._emit("add", region.path, REGION)
        self._render_dynamic_windows()
        return region

    def set_granularity(self, r: CxlRegion, value: str) -> None:
        """interleave_granularity_store()."""
        val = kstrtoll(value, 32)
        if not _granularity_ok(val):
            raise einval()  # granularity_to_eig()
        w = r.window
        if len(w.targets) > 1 and val != w.granularity:
            raise einval()  # an interleaved root takes only its own granularity
        if r.state >= Config.INTERLEAVE_ACTIVE:
            raise oserror(errno.EBUSY)
        r.granularity = val
        self._render_region(r)

    def set_ways(self, r: CxlRegion, value: str) -> None:
        """interleave_ways_store(): also which targetN files there are."""
        val = kstrtoull(value, 32)
        if val not in WAYS:
            raise einval()  # ways_to_eiw()
        root = len(r.window.targets)
        per_root = val // root
        if val % root or per_root & (per_root - 1):
            raise einval()  # a power of 2 multiple of the root's ways
        if r.state >= Config.INTERLEAVE_ACTIVE:
            raise oserror(errno.EBUSY)
        r.ways = val
        self._render_region(r)

    def set_size(self, r: CxlRegion, value: str) -> None:
        """size_store(): alloc_hpa(), or free_hpa() for 0."""
        val = kstrtoull(value)
        if val:
            self.alloc_hpa(r, val)
        else:
            self.free_hpa(r)

    def alloc_hpa(self, r: CxlRegion, size: int, start: int | None = None) -> None:
        """alloc_hpa(); ``start`` places it there (the builder's choice) instead of the lowest
        free gap."""
        if r.start is not None and r.size == size:
            return
        if r.start is not None or r.state >= Config.INTERLEAVE_ACTIVE:
            raise oserror(errno.EBUSY)
        if not r.ways or not r.granularity:
            raise oserror(errno.ENXIO)  # ways and granularity come first
        if size % (DPA_ALIGN * r.ways):
            raise einval()
        w = r.window
        if start is None:
            start = self.free_gap(w, size)
            if start is None:
                raise oserror(errno.ERANGE)  # get_free_mem_region(): no gap
        else:
            inside = w.start <= start and start + size <= w.start + w.size
            clear = all(
                o.start is None or start + size <= o.start or o.start + o.size <= start
                for o in self.regions.values()
                if o.window is w and o is not r
            )
            assert inside, f"a {size:#x} region at {start:#x} is not inside {w.name}"
            assert clear, f"a {size:#x} region at {start:#x} overlaps another in {w.name}"
        r.start, r.size = start, size
        r.state = Config.INTERLEAVE_ACTIVE
        self._render_region(r)

    def free_hpa(self, r: CxlRegion) -> None:
        if r.start is None:
            return
        if r.state >= Config.ACTIVE:
            raise oserror(errno.EBUSY)
        r.start, r.size = None, 0
        r.state = Config.IDLE
        self._render_region(r)

    def set_target(self, r: CxlRegion, pos: int, value: str) -> None:
        """store_targetN(): a newline (or nothing: ndctl writes "\\0") detaches."""
        text = cstr(value)
        if sysfs_streq(text, "\n"):
            self.detach_target(r, pos)
            return
        kind = next((k for n, k in self.kinds.items() if sysfs_streq(text, n)), None)
        if kind is None:
            raise oserror(errno.ENODEV)  # bus_find_device_by_name()
        decoder = self.endpoint_decoder(text.removesuffix("\n"))
        if kind != ENDPOINT_DECODER or decoder is None:
            raise einval()
        self.attach(r, decoder, pos)

    def attach(self, r: CxlRegion, d: EndpointDecoder, pos: int) -> None:
        """cxl_region_attach(), its checks in its order (check_interleave_cap() not modelled)."""
        if d.mode != "ram":
            raise einval()  # mode mismatch with the (RAM) region
        if r.state > Config.INTERLEAVE_ACTIVE:
            raise oserror(errno.EBUSY)  # "region already active"
        if r.state < Config.INTERLEAVE_ACTIVE:
            raise oserror(errno.ENXIO)  # "interleave config missing"
        if len(r.targets) >= r.ways:
            raise einval()
        if d.dpa is None:
            raise oserror(errno.ENXIO)  # "missing DPA allocation"
        if d.dpa[1] * r.ways != r.size:
            raise einval()  # decoder-size * ways != region-size
        # cxl_region_validate_position(); a decoder already at pos is not modelled (the kernel
        # walks on into an unclean path): it is refused as busy like any taken position.
        if pos >= r.ways:
            raise oserror(errno.ENXIO)
        if pos in r.targets or any(t.memdev is d.memdev for t in r.targets.values()):
            raise oserror(errno.EBUSY)
        hb = d.memdev.bridge
        w = r.window
        if hb is not w.targets[pos % len(w.targets)]:
            raise oserror(errno.ENXIO)  # "invalid target position" [lab] "failed to set target0"
        # cxl_port_attach_region(), endpoint then host bridge port.
        if d.region is not None:
            raise oserror(errno.EBUSY)  # "already attached"
        if hb.region is not None and hb.region is not r:
            raise oserror(errno.EBUSY)  # cxl_rr_alloc_decoder(): "no decoder available"
        ports = {t.memdev.root_port for t in r.targets.values() if t.memdev.bridge is hb}
        if len(ports | {d.memdev.root_port}) > max(1, hb.root_ports):
            raise oserror(errno.ENXIO)  # more targets than the switch decoder has
        r.targets[pos] = d
        d.region = r
        hb.region = r
        try:
            if len(r.targets) == r.ways:
                self._setup_targets(r)  # a failure leaves the target attached, as in the kernel
                r.state = Config.ACTIVE
            d.ways, d.granularity = r.ways, r.granularity
            assert r.start is not None
            d.hpa = (r.start, r.size)
        finally:
            self._render_region(r)
            self._render_memdev(d.memdev)
            for b in {t.memdev.bridge for t in r.targets.values()}:
                self._render_port(b)

    def _setup_targets(self, r: CxlRegion) -> None:
        """cxl_region_setup_targets() -> cxl_port_setup_targets() for each host bridge: its
        granularity is the region's times the root's ways, its ways its root ports used."""
        assert r.start is not None
        gran = r.granularity * len(r.window.targets)
        if not _granularity_ok(gran):
            raise einval()  # granularity_to_eig(parent_ig * parent_iw)
        for hb in {t.memdev.bridge for t in r.targets.values()}:
            ports: list[int] = []
            for k in sorted(r.targets):
                md = r.targets[k].memdev
                if md.bridge is hb and md.root_port not in ports:
                    ports.append(md.root_port)
            hb.ways, hb.granularity, hb.targets = len(ports), gran, tuple(ports)
            hb.hpa = (r.start, r.size)

    def detach_target(self, r: CxlRegion, pos: int) -> None:
        """detach_target() -> cxl_region_detach(): a committed region's decode is reset first;
        the region driver is released at the end."""
        if pos >= r.ways:
            raise oserror(errno.ENXIO)
        d = r.targets.get(pos)
        if d is None:
            return
        if r.state > Config.ACTIVE:
            self._decode_reset(r)
            r.state = Config.ACTIVE
        hb = d.memdev.bridge
        if r.state == Config.ACTIVE:
            r.state = Config.INTERLEAVE_ACTIVE
            for t in r.targets.values():  # cxl_region_teardown_targets()
                t.memdev.bridge.hpa = None
        bridges = {t.memdev.bridge for t in r.targets.values()}
        del r.targets[pos]
        d.region, d.hpa = None, None
        if not any(t.memdev.bridge is hb for t in r.targets.values()):
            hb.region = None  # free_region_ref() once no endpoint below it is left
        self._render_region(r)
        self._render_memdev(d.memdev)
        for b in bridges:
            self._render_port(b)
        if r.bound:
            self.release_driver(r)

    def set_commit(self, r: CxlRegion, value: str) -> None:
        """commit_store(): 1 commits every endpoint decoder (the host bridges' passthrough
        decoders have no ->commit); 0 releases the region driver, then resets them."""
        commit = kstrtobool(value)
        if commit == (r.state >= Config.COMMIT):
            return  # already so
        if commit and r.state < Config.ACTIVE:
            raise oserror(errno.ENXIO)  # targets missing
        if commit:
            for k in sorted(r.targets):
                d = r.targets[k]
                if d.memdev.committed != d.index:
                    self._decode_reset(r)
                    raise oserror(errno.EBUSY)  # cxl_decoder_commit(): out of order
                d.committed = True
            r.state = Config.COMMIT
        else:
            r.state = Config.RESET_PENDING
            if r.bound:
                self.release_driver(r)
            self._decode_reset(r)
            r.state = Config.ACTIVE
        self._render_region(r)
        for md in {t.memdev for t in r.targets.values()}:
            self._render_memdev(md)

    def _decode_reset(self, r: CxlRegion) -> None:
        for d in r.targets.values():
            d.committed = False
            self._render_memdev(d.memdev)

    # --- the endpoint decoders -----------------------------------------------------------------
    def set_mode(self, d: EndpointDecoder, value: str) -> None:
        """mode_store() -> cxl_dpa_set_mode() (which does not look at the DPA allocation)."""
        text = cstr(value)
        if sysfs_streq(text, "pmem"):
            mode = "pmem"
        elif sysfs_streq(text, "ram"):
            mode = "ram"
        else:
            raise einval()
        if d.committed:
            raise oserror(errno.EBUSY)
        if mode == "pmem" or d.memdev.ram_size == 0:
            raise oserror(errno.ENXIO)  # no capacity of that kind (QEMU: volatile-memdev only)
        d.mode = mode
        self._render_memdev(d.memdev)

    def set_dpa_size(self, d: EndpointDecoder, value: str) -> None:
        """dpa_size_store(): cxl_dpa_free(), then cxl_dpa_alloc() unless 0."""
        size = kstrtoull(value)
        if size % DPA_ALIGN:
            raise einval()
        md = d.memdev
        if d.dpa is not None:
            if d.region is not None or d.committed or d.index != md.hdm_end:
                raise oserror(errno.EBUSY)  # in a region, enabled, or not the last allocation
            d.dpa = None
        if size:
            if d.region is not None or d.committed:
                raise oserror(errno.EBUSY)
            if d.mode not in ("ram", "pmem"):
                raise einval()  # "mode not set"
            start = md.free_ram_start()
            ram = 1 << 64 if md.ram_size is None else md.ram_size
            avail = 0 if d.mode == "pmem" else ram - start
            if size > avail:
                self._render_memdev(md)
                raise oserror(errno.ENOSPC)
            if d.index != md.hdm_end + 1:
                self._render_memdev(md)
                raise oserror(errno.EBUSY)  # __cxl_dpa_reserve(): decoders in order
            d.dpa = (start, size)
        self._render_memdev(md)

    # --- the cxl_region driver -----------------------------------------------------------------
    def find(self, driver: str, value: str) -> tuple[str, tuple[str, str]]:
        """bind_store()/unbind_store(): the device of that name, which the driver must match."""
        text = cstr(value)
        name = next((n for n in self.kinds if sysfs_streq(text, n)), None)
        if name is None or DRIVER_KIND.get(driver) != self.kinds[name]:
            raise oserror(errno.ENODEV)
        return name, self.kinds[name]

    def probe(self, r: CxlRegion) -> None:
        """device_driver_attach() -> cxl_region_probe() -> devm_cxl_add_dax_region(): the
        dax_region, then the region's bind uevent [observed]; its dax device is kernel.py's."""
        if r.bound:
            raise oserror(errno.EBUSY)  # __driver_probe_device(): dev->driver set
        if r.state < Config.COMMIT:
            raise oserror(errno.ENXIO)
        r.bound = True
        dax_region = r.dax_region_path
        _attrs(self.tree, dax_region, DAX_REGION, "cxl_dax_region", {})
        self.tree.link(f"{BUS}/drivers/cxl_dax_region/dax_region{r.id}", dax_region)
        self._publish(f"dax_region{r.id}", dax_region, DAX_REGION)
        self._emit("add", dax_region, DAX_REGION)
        self._render_region(r)
        self._emit("bind", r.path, REGION, "cxl_region")

    def bound_dax_region(self, region: CxlRegion) -> None:
        """cxl_dax_region_probe() returned (after its dax device was added and probed)."""
        self._emit("bind", region.dax_region_path, DAX_REGION, "cxl_dax_region")

    def unbound(self, r: CxlRegion) -> None:
        """The cxl side of the region driver's release, once its dax devices are gone: the
        dax_region goes (cxlr_dax_unregister()), then the region's unbind uevent."""
        dax_region = r.dax_region_path
        self._emit("unbind", dax_region, DAX_REGION)
        self._unpublish(f"dax_region{r.id}")
        self.tree.remove(f"{BUS}/drivers/cxl_dax_region/dax_region{r.id}")
        self.tree.remove(dax_region)
        self._emit("remove", dax_region, DAX_REGION)
        r.bound = False
        self._render_region(r)
        self._emit("unbind", r.path, REGION)

    # --- tearing a region down -----------------------------------------------------------------
    def delete_region(self, w: Window, value: str) -> None:
        """delete_region_store() -> unregister_region(): a bound, committed region is not
        refused (only ndctl refuses, in user space): device_del() releases the driver and sends
        the remove uevent, then every target is detached and the address range freed.
        cxl_region_release() gives the window the id back when it is below the offered one."""
        text = cstr(value)
        r = next(
            (o for o in self.regions.values() if o.window is w and sysfs_streq(text, o.name)),
            None,
        )
        if r is None:
            raise oserror(errno.ENODEV)  # cxl_find_region_by_name()
        if r.bound:
            self.release_driver(r)
        self._unpublish(r.name)
        self.tree.remove(r.path)
        self._emit("remove", r.path, REGION)
        del self.regions[r.id]
        if r.state > Config.ACTIVE:
            self._decode_reset(r)
        for pos in sorted(r.targets):
            d = r.targets[pos]
            d.region, d.hpa = None, None
            if d.memdev.bridge.region is r:
                d.memdev.bridge.region, d.memdev.bridge.hpa = None, None
            self._render_memdev(d.memdev)
            self._render_port(d.memdev.bridge)
        r.targets.clear()
        if w.next_region is not None:
            self.offer(w, min(w.next_region, r.id))
        self._render_dynamic_windows()

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
        self._publish(f"port{hb.port}", path, PORT)
        start, size = hb.hpa or (0, 0)
        decoder = f"{path}/decoder{hb.port}.0"
        _attrs(
            t,
            decoder,
            SWITCH_DECODER,
            None,
            {
                "interleave_granularity": str(hb.granularity),
                "interleave_ways": str(hb.ways),
                "locked": "0",
                "region": hb.region.name if hb.region else "",
                "size": _hex(size),
                "target_list": ",".join(str(p) for p in hb.targets[: hb.ways]),
                "target_type": "expander",
            },
        )
        t.attr(f"{decoder}/start", _hex(start), 0o400)
        self._publish(f"decoder{hb.port}.0", decoder, SWITCH_DECODER)

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
        if md.ram_size is not None:
            t.attr(f"{path}/ram/size", _hex(md.ram_size))  # ram_size_show(): "%#llx", 0444
        uevent = [
            f"MAJOR={MEMDEV_MAJOR}",
            f"MINOR={md.index}",
            f"DEVNAME=cxl/{md.name}",
            "DEVTYPE=cxl_memdev",
            "DRIVER=cxl_mem",
            "MODALIAS=cxl:t5",
        ]
        t.raw(f"{path}/uevent", "\n".join(uevent) + "\n", 0o644)
        self._publish(md.name, path, MEMDEV)
        ep = md.endpoint_path
        _attrs(t, ep, PORT, "cxl_port", {"decoders_committed": str(md.committed)})
        t.raw(f"{ep}/CDAT", "\x92\x00\x00\x00\x02\n", 0o400)
        t.link(f"{ep}/uport", path)
        t.link(f"{ep}/parent_dport", md.root_port_path)
        self._publish(f"endpoint{md.endpoint}", ep, PORT)
        for d in md.decoders:
            start, size = d.hpa or (0, 0)  # hpa_range {0, -1} out of a region
            offset, dpa_size = d.dpa or (NO_DPA, 0)
            _attrs(
                t,
                d.path,
                ENDPOINT_DECODER,
                None,
                {
                    "dpa_resource": _hex(offset),
                    "interleave_granularity": str(d.granularity),
                    "interleave_ways": str(d.ways),
                    "locked": "0",
                    "region": d.region.name if d.region else "",
                    "size": _hex(size),
                    "target_type": "expander",
                },
            )
            t.attr(f"{d.path}/dpa_size", f"{dpa_size:#018x}", 0o644)  # "%pa"
            t.attr(f"{d.path}/mode", d.mode, 0o644)
            t.attr(f"{d.path}/start", _hex(start), 0o400)
            self._publish(d.name, d.path, ENDPOINT_DECODER)

    def _render_window(self, w: Window) -> None:
        t, path = self.tree, w.path
        offered = f"region{self.offered(w)}"
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

    def _render_dynamic_windows(self) -> None:
        """Windows offering "the next free id" show a new one once a region took it."""
        for w in self.windows:
            if w.next_region is None:
                self._render_window(w)

    def _render_region(self, r: CxlRegion) -> None:
        """The region's attributes in its state (region.c show functions): before size,
        resource reads -1; targetN exist for N < interleave_ways (cxl_region_target_visible())."""
        t, path = self.tree, r.path
        t.attr(f"{path}/commit", "1" if r.state >= Config.COMMIT else "0", 0o644)
        t.attr(f"{path}/interleave_granularity", str(r.granularity), 0o644)
        t.attr(f"{path}/interleave_ways", str(r.ways), 0o644)
        t.attr(f"{path}/mode", "ram")
        t.attr(f"{path}/resource", _hex(NO_RESOURCE if r.start is None else r.start))
        t.attr(f"{path}/size", _hex(r.size), 0o644)
        for k in range(16):  # TARGET_ATTR_RW(0..15)
            if k < r.ways:
                d = r.targets.get(k)
                t.attr(f"{path}/target{k}", d.name if d else "", 0o644)
            elif t.exists(f"{path}/target{k}"):
                t.remove(f"{path}/target{k}")
        t.attr(f"{path}/uuid", "")  # uuid_show(), cxl_region_visible(): 0444, empty for RAM
        driver = f"{BUS}/drivers/cxl_region/{r.name}"
        if r.bound:
            _attrs(t, path, REGION, "cxl_region", {})
            t.link(driver, path)
        else:
            _attrs(t, path, REGION, None, {})
            t.remove(f"{path}/driver")
            t.remove(driver)


def _scan_int(s: str) -> int | None:
    """sscanf's %d: blanks skipped, a sign, at least one digit; None when there is none."""
    s = s.lstrip(" \t\n\v\f\r")
    sign = s[:1] if s[:1] in ("+", "-") else ""
    n = len(sign)
    while n < len(s) and s[n] in "0123456789":
        n += 1
    return int(s[:n]) if n > len(sign) else None


def _granularity_ok(value: int) -> bool:
    return DEFAULT_GRANULARITY <= value <= MAX_GRANULARITY and value & (value - 1) == 0


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


__all__ = ["Config", "CxlBus", "CxlRegion", "EndpointDecoder", "HostBridge", "Memdev", "Window"]

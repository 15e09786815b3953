"""Observed kernel state as plain immutable values; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Provider(StrEnum):
    PMEM = "pmem"
    HMEM = "hmem"
    CXL = "cxl"
    UNKNOWN = "unknown"


# Driver names as the dax bus reports them; any other name is kept verbatim.
DRIVER_DEVDAX = "device_dax"
DRIVER_KMEM = "kmem"


@dataclass(frozen=True)
class Range:
    """A physical address range, both ends inclusive (as mappingN/{start,end} print them)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class CxlMemdev:
    """One memory device behind a CXL region, at its place in the interleave.

    ``memdev`` (``memN``) is today's name only: the kernel numbers memdevs in probe order, which
    changes between boots; ``serial`` (the device's serial number) and the host bridge do not.
    Anything the kernel did not show readably is None.
    """

    position: int  # K of the region's targetK attribute
    memdev: str | None  # "mem1"
    serial: int | None  # memN/serial, e.g. 0x1000
    host_bridge: str | None  # "pci0000:0c": the PCI root the memdev sits below
    host_bridge_uid: int | None  # its ACPI _UID, as root decoders' target_list name it (12)


@dataclass(frozen=True)
class CxlIdentity:
    """What says which CXL memory a dax device is, beyond names that change between boots.

    ``region`` (``regionR``) names the region now; its id is handed out again after a destroy,
    as are dax device and memdev names. The window is the root decoder the region was made in
    (``decoder0.N``, one per CXL Fixed Memory Window of the platform) and its start address.
    """

    region: str  # "region0"
    uuid: str | None  # the region's uuid; None when empty (RAM regions have none)
    mode: str | None  # "ram", "pmem"
    interleave_ways: int | None
    interleave_granularity: int | None  # bytes
    window: str  # the root decoder, "decoder0.0"
    window_start: int | None  # its start address (0400: root only)
    memdevs: tuple[CxlMemdev, ...]  # in interleave position order

    @property
    def serials(self) -> tuple[int, ...]:
        return tuple(m.serial for m in self.memdevs if m.serial is not None)


@dataclass(frozen=True)
class DaxDevice:
    name: str  # "dax0.0"
    region_id: int
    size: int
    align: int | None
    target_node: int | None
    numa_node: int | None
    resource: int | None
    ranges: tuple[Range, ...]
    memmap_on_memory: bool | None  # None: attribute absent (kernel < 6.8)
    driver: str | None  # None: unbound
    provider: Provider
    devpath: str  # real path below the sysfs root, e.g. "devices/.../region0/dax0.0/dax0.0"
    namespace: str | None = None  # "namespace0.0" for pmem
    uuid: str | None = None  # namespace uuid where the kernel exposes it
    cxl: CxlIdentity | None = None  # CXL devices only: region, window, memdevs

    @property
    def is_seed(self) -> bool:
        """Size-0 devices are region seeds waiting to be sized, not memory."""
        return self.size == 0


@dataclass(frozen=True)
class DaxRegion:
    """A dax region: the ``dax_region/`` directory of the device its dax devices hang on
    (drivers/dax/bus.c), read once per region (daxd/kernel/scan.py).

    ``start``, the region's lowest address, is known from, in this order: a CXL region's
    ``regionR/resource``; the ``resource`` of a device without ranges (bus.c resource_show()
    prints the region's start for it; 0400); else the lowest start of its devices' ranges, which
    is the region's start while its first byte belongs to a device: always so as the kernel
    makes daxR.0, and after carving, since bus.c grows devices first-fit from the region's
    start. None when no device shows a range (all empty, or read without root: mappingN is 0400).
    """

    id: int
    parent: str  # real path below the sysfs root of the device carrying dax_region/
    provider: Provider
    size: int
    align: int | None  # dax_region/align (0400: None when unreadable)
    available_size: int | None  # None: a static region (pmem), which has no such attribute
    seed: str | None  # dax_region/seed; None when empty or absent
    dynamic: bool  # dax_region/create exists (not IORESOURCE_DAX_STATIC)
    start: int | None  # the region's lowest address when known (above), else None
    devices: tuple[str, ...]  # its dax devices' names, by device id
    cxl: CxlIdentity | None = None  # CXL: the identity of its devices (one region: the same)
    # What its devices show that the region itself does not (bus.c gives each device the
    # region's target_node; pmem has one device per region, with its namespace's identity).
    target_node: int | None = None
    numa_node: int | None = None
    namespace: str | None = None
    uuid: str | None = None

    def whole(self) -> DaxDevice:
        """The region as one device named daxR.0 with the region's size and start, so that a
        policy Selector matches a region with the same keys as a device."""
        ranges = (Range(self.start, self.start + self.size - 1),) if self.start is not None else ()
        name = f"dax{self.id}.0"
        return DaxDevice(
            name=name,
            region_id=self.id,
            size=self.size,
            align=self.align,
            target_node=self.target_node,
            numa_node=self.numa_node,
            resource=self.start,
            ranges=ranges,
            memmap_on_memory=None,
            driver=None,
            provider=self.provider,
            devpath=f"{self.parent}/{name}",
            namespace=self.namespace,
            uuid=self.uuid,
            cxl=self.cxl,
        )


class KernelWord(StrEnum):
    """A word sysfs prints: the known ones are members.  Any other text becomes a value that is
    not ``known`` and equals the text as read, so a word from a newer kernel (or damage) neither
    crashes daxd nor disappears: it prints, compares and lands in JSON verbatim."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        word = str.__new__(cls, value)
        word._name_ = "UNKNOWN"
        word._value_ = value
        return word

    @property
    def known(self) -> bool:
        return self._value_ in type(self)._value2member_map_


class BlockState(KernelWord):
    """memoryN/state as memory.c state_show() prints it."""

    ONLINE = "online"
    OFFLINE = "offline"
    GOING_OFFLINE = "going-offline"  # offline_pages() is migrating the block's pages


class KernelZone(KernelWord):
    """A zone name in memoryN/valid_zones (mm/page_alloc.c zone_names)."""

    DMA = "DMA"
    DMA32 = "DMA32"
    NORMAL = "Normal"
    HIGHMEM = "HighMem"  # 32-bit only
    MOVABLE = "Movable"
    DEVICE = "Device"
    # valid_zones_show() prints "none" for an online block whose pages span several zones.
    NONE = "none"


def parse_zones(text: str | None) -> tuple[KernelZone, ...]:
    """valid_zones: the zone of an online block, or the candidates, default first."""
    return tuple(KernelZone(word) for word in text.split()) if text else ()


class OnlineType(StrEnum):
    """What memoryN/state and auto_online_blocks take (memory.c online_type_to_str); daxd writes
    these, so an unknown word is an error, not a value."""

    OFFLINE = "offline"
    ONLINE = "online"  # the kernel picks the zone (online_policy)
    ONLINE_KERNEL = "online_kernel"
    ONLINE_MOVABLE = "online_movable"

    @classmethod
    def parse(cls, text: str) -> OnlineType | None:
        try:
            return cls(text)
        except ValueError:
            return None


@dataclass(frozen=True)
class MemoryBlock:
    index: int  # N of memoryN
    state: BlockState
    valid_zones: tuple[KernelZone, ...]  # online: the zone it is in; offline: candidates
    phys_index: int
    removable: bool | None
    node: int | None

    @property
    def online(self) -> bool:
        return self.state is BlockState.ONLINE

    @property
    def zone(self) -> KernelZone | None:
        """The zone of an online block (Movable, Normal, ...); None when offline."""
        if self.online and len(self.valid_zones) == 1:
            return self.valid_zones[0]
        return None


@dataclass(frozen=True)
class Diagnostic:
    """Something odd the kernel showed: located at a sysfs path, never fatal."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class HotplugSettings:
    block_size: int | None  # bytes
    auto_online_blocks: OnlineType | None
    memmap_on_memory: bool | None  # module parameter memory_hotplug.memmap_on_memory
    online_policy: str | None  # "contig-zones" / "auto-movable"
    # CONFIG_MEMORY_HOTREMOVE (offline and hot-remove possible): a block reads removable=1 or has
    # valid_zones (daxd/kernel/blocks.py read_hotplug()).
    hotremove: bool


def memmap_in_effect(attribute: bool | None, param: bool | None) -> bool | None:
    """Whether a device's memmap (struct pages) is, or would be, placed on its own memory.

    ``attribute``: the device's ``memmap_on_memory`` (None: absent, Linux < 6.8); ``param``: the
    global ``memory_hotplug.memmap_on_memory`` (None: not shown, then the attribute is trusted).
    The attribute alone does not say it: on CXL it reads 1 by default even while the global
    parameter is N, and kmem then keeps the memmap in RAM (mhp_supports_memmap_on_memory()).
    None when the attribute is absent.
    """
    if attribute is None:
        return None
    return attribute and param is not False


@dataclass(frozen=True)
class KernelState:
    devices: dict[str, DaxDevice]
    blocks: dict[str, tuple[MemoryBlock, ...]]  # device name -> its blocks, ascending
    hotplug: HotplugSettings
    legacy_device_model: bool  # /sys/class/dax in use instead of /sys/bus/dax
    diagnostics: tuple[Diagnostic, ...] = field(default=())
    regions: dict[int, DaxRegion] = field(default_factory=dict)  # by region id

    def blocks_of(self, name: str) -> tuple[MemoryBlock, ...]:
        return self.blocks.get(name, ())

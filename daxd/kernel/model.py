"""Observed kernel state as plain immutable values; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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

    @property
    def is_seed(self) -> bool:
        """Size-0 devices are region seeds waiting to be sized, not memory."""
        return self.size == 0


@dataclass(frozen=True)
class MemoryBlock:
    index: int  # N of memoryN
    state: str  # "online", "offline", "going-offline" (verbatim)
    valid_zones: tuple[str, ...]  # online: the zone it is in; offline: candidates, default first
    phys_index: int
    removable: bool | None
    node: int | None

    @property
    def online(self) -> bool:
        return self.state == "online"

    @property
    def zone(self) -> str | None:
        """The zone of an online block ("Movable", "Normal", ...); None when offline."""
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
    auto_online_blocks: str | None  # "online", "offline", "online_movable", "online_kernel"
    memmap_on_memory: bool | None  # module parameter memory_hotplug.memmap_on_memory
    online_policy: str | None  # "contig-zones" / "auto-movable"
    # CONFIG_MEMORY_HOTREMOVE (offline and hot-remove possible): a block reads removable=1 or has
    # valid_zones (daxd/kernel/blocks.py read_hotplug()).
    hotremove: bool


@dataclass(frozen=True)
class KernelState:
    devices: dict[str, DaxDevice]
    blocks: dict[str, tuple[MemoryBlock, ...]]  # device name -> its blocks, ascending
    hotplug: HotplugSettings
    legacy_device_model: bool  # /sys/class/dax in use instead of /sys/bus/dax
    diagnostics: tuple[Diagnostic, ...] = field(default=())

    def blocks_of(self, name: str) -> tuple[MemoryBlock, ...]:
        return self.blocks.get(name, ())

"""How an operator would describe a device's observed state, in one place for CLI, log and D-Bus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daxd.kernel.model import (
    DRIVER_DEVDAX,
    DRIVER_KMEM,
    CxlIdentity,
    DaxDevice,
    HotplugSettings,
    KernelZone,
    MemoryBlock,
    memmap_in_effect,
)

# The zones the kernel itself may allocate from (everything but ZONE_MOVABLE and ZONE_DEVICE):
# an online block in one of these holds memory that cannot be offlined at will.
KERNEL_ZONES = frozenset({KernelZone.DMA, KernelZone.DMA32, KernelZone.NORMAL, KernelZone.HIGHMEM})


def observed_mode(device: DaxDevice) -> str:
    """devdax / system-ram / unbound / other:<driver> (never assume "not kmem" means devdax)."""
    if device.driver == DRIVER_KMEM:
        return "system-ram"
    if device.driver == DRIVER_DEVDAX:
        return "devdax"
    if device.driver is None:
        return "unbound"
    return f"other:{device.driver}"


def zone_word(kernel_zone: KernelZone | None) -> str:
    """The zone as the policy and the documents spell it: movable, normal, none, ..."""
    if kernel_zone is None:
        return ""
    return kernel_zone.lower()


def observed_zone(blocks: tuple[MemoryBlock, ...]) -> str:
    """The zone of the online blocks: movable / normal / mixed / "" when none is online."""
    zones = {zone_word(b.zone) or "none" for b in blocks if b.online}
    if not zones:
        return ""
    if len(zones) == 1:
        return zones.pop()
    return "mixed"


@dataclass(frozen=True)
class DeviceView:
    name: str
    provider: str
    size: int
    mode: str
    driver: str
    zone: str
    # In effect (model.memmap_in_effect): the attribute reads 1 and the global parameter is not
    # off; None when the device has no attribute (Linux < 6.8).
    memmap_on_memory: bool | None
    blocks_online: int
    blocks_total: int
    numa_node: int | None
    target_node: int | None
    blocks_movable: int = 0  # online blocks in ZONE_MOVABLE
    blocks_normal: int = 0  # online blocks in a kernel zone (KERNEL_ZONES)
    memmap_on_memory_attribute: bool | None = None  # the device's attribute as it reads
    cxl: CxlIdentity | None = None  # CXL devices: region, window, memdevs (cxl_record)


def view(
    device: DaxDevice, blocks: tuple[MemoryBlock, ...], hotplug: HotplugSettings | None
) -> DeviceView:
    """``hotplug``: the settings read with the device (None: not known, the attribute counts)."""
    param = hotplug.memmap_on_memory if hotplug is not None else None
    return DeviceView(
        name=device.name,
        provider=str(device.provider),
        size=device.size,
        mode=observed_mode(device),
        driver=device.driver or "",
        zone=observed_zone(blocks),
        memmap_on_memory=memmap_in_effect(device.memmap_on_memory, param),
        blocks_online=sum(1 for b in blocks if b.online),
        blocks_total=len(blocks),
        numa_node=device.numa_node,
        target_node=device.target_node,
        blocks_movable=sum(1 for b in blocks if b.zone is KernelZone.MOVABLE),
        blocks_normal=sum(1 for b in blocks if b.zone in KERNEL_ZONES),
        memmap_on_memory_attribute=device.memmap_on_memory,
        cxl=device.cxl,
    )


def cxl_record(cxl: CxlIdentity | None) -> dict[str, Any] | None:
    """The ``cxl`` object of the JSON documents (and, key for key, Device.Cxl on D-Bus); None
    for a device that is not a CXL region's. Addresses are hex strings, as ``resource``."""
    if cxl is None:
        return None
    return {
        "region": cxl.region,
        "uuid": cxl.uuid,
        "mode": cxl.mode,
        "interleave_ways": cxl.interleave_ways,
        "interleave_granularity": cxl.interleave_granularity,
        "window": cxl.window,
        "window_start": None if cxl.window_start is None else f"0x{cxl.window_start:x}",
        "memdevs": [
            {
                "position": m.position,
                "memdev": m.memdev,
                "serial": m.serial,
                "host_bridge": m.host_bridge,
                "host_bridge_uid": m.host_bridge_uid,
            }
            for m in cxl.memdevs
        ],
    }

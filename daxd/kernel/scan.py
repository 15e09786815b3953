"""sysfs -> KernelState: every DAX device, its memory blocks, and the memory-hotplug settings.

Reads only; never raises for what the kernel shows (odd contents and unreadable attributes become
Diagnostics).  Attributes per device as drivers/dax/bus.c (Linux 6.12) exposes them: ``size``,
``align``, ``target_node`` (absent when < 0), ``numa_node`` (absent without CONFIG_NUMA),
``resource`` and ``mappingN/{start,end}`` (0400), ``memmap_on_memory`` (Linux >= 6.8), the
``driver`` link, and the parent's ``dax_region/id``; for CXL devices their identity on the cxl
bus (daxd/kernel/cxl.py). Per dax region, once: ``dax_region/{size,align,available_size,seed}``
and whether it has ``create`` (dynamic regions only; ``align`` is 0400).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from daxd.kernel.attrs import AttrReader
from daxd.kernel.blocks import (
    block_intervals,
    in_intervals,
    present_blocks,
    probe_blocks,
    read_block_size,
    read_blocks,
    read_hotplug,
    reread_block,
)
from daxd.kernel.cxl import read_cxl_identity
from daxd.kernel.layout import (
    CXL_DAX_REGION_NAME,
    CXL_REGION_NAME,
    DAX_CLASS,
    DAX_DEVICES,
    DEVICE_NAME,
    MAPPING_NAME,
    device_dir,
    legacy_device_dir,
    region_dir,
    region_parent,
    region_path,
)
from daxd.kernel.model import (
    DRIVER_DEVDAX,
    DaxDevice,
    DaxRegion,
    Diagnostic,
    HotplugSettings,
    KernelState,
    MemoryBlock,
    Provider,
    Range,
)
from daxd.kernel.provider import detect_provider, read_pmem_identity
from daxd.kernel.sysfs import Sysfs

_NO_RESOURCE = (1 << 64) - 1  # -1ULL: what a CXL region's resource reads before it has one


@dataclass(frozen=True)
class DeviceReading:
    """One device re-read: None when it is gone; its blocks; what was odd."""

    device: DaxDevice | None
    blocks: tuple[MemoryBlock, ...]
    diagnostics: tuple[Diagnostic, ...]


def read_state(sysfs: Sysfs) -> KernelState:
    reader = AttrReader(sysfs)
    bus_names = _device_names(reader, DAX_DEVICES)
    class_names = _device_names(reader, DAX_CLASS) if sysfs.exists(DAX_CLASS) else []
    legacy = bool(class_names) and not bus_names
    if legacy:
        reader.note(
            DAX_CLASS,
            "legacy /sys/class/dax device model (dax_pmem_compat): devices "
            "cannot change mode; see 'daxd migrate-device-model'",
        )
    dir_of = legacy_device_dir if legacy else device_dir
    devices: dict[str, DaxDevice] = {}
    for name in bus_names or class_names:
        device = _read_device(reader, dir_of(name), name, legacy=legacy)
        if device is not None:
            devices[name] = device

    present = present_blocks(reader)  # names only: one listdir, no attribute reads
    block_size = read_block_size(reader)
    blocks: dict[str, tuple[MemoryBlock, ...]] = {}
    for name, device in devices.items():
        intervals = block_intervals(device.ranges, block_size) if block_size else []
        blocks[name] = read_blocks(reader, in_intervals(present, intervals))
    hotplug = read_hotplug(reader, block_size, [b for bs in blocks.values() for b in bs], present)
    regions = _read_regions(reader, devices, legacy=legacy)
    return KernelState(
        devices=devices,
        blocks=blocks,
        hotplug=hotplug,
        legacy_device_model=legacy,
        diagnostics=tuple(reader.diagnostics),
        regions=regions,
    )


def read_region(
    sysfs: Sysfs, parent: str, region_id: int, diagnostics: list[Diagnostic] | None = None
) -> DaxRegion | None:
    """Re-read one dax region, whose device is ``parent`` (DaxRegion.parent), and its devices:
    those on the bus named dax<region_id>.N whose region is that one.

    None when ``parent`` carries no dax region any more, or another one (the region id was
    handed out again). ``diagnostics``: where to add what was odd.
    """
    reader = AttrReader(sysfs)
    found = None
    if sysfs.exists(region_path(parent, "size")):
        shown = reader.integer(region_path(parent, "id"), required=False)
        if shown is None or shown == region_id:
            found = _read_region(
                reader, parent, region_id, _region_members(reader, parent, region_id)
            )
    if diagnostics is not None:
        diagnostics += reader.diagnostics
    return found


def _region_members(reader: AttrReader, parent: str, region_id: int) -> list[DaxDevice]:
    legacy = False
    names = [n for n in _device_names(reader, DAX_DEVICES) if _name_key(n)[0] == region_id]
    if not names and reader.sysfs.exists(DAX_CLASS):
        names = [n for n in _device_names(reader, DAX_CLASS) if _name_key(n)[0] == region_id]
        legacy = bool(names)
    dir_of = legacy_device_dir if legacy else device_dir
    members = []
    for name in names:
        device = _read_device(reader, dir_of(name), name, legacy=legacy)
        if device is not None and region_parent(device.devpath, legacy=legacy) == parent:
            members.append(device)
    return members


def _read_regions(
    reader: AttrReader, devices: Mapping[str, DaxDevice], *, legacy: bool
) -> dict[int, DaxRegion]:
    """The dax regions of these devices, each region's attributes read once."""
    members: dict[int, list[DaxDevice]] = {}
    for device in devices.values():  # in name order: by region, then device id
        members.setdefault(device.region_id, []).append(device)
    regions = {}
    for region_id, mine in members.items():
        parent = region_parent(mine[0].devpath, legacy=legacy)
        strays = [d.name for d in mine if region_parent(d.devpath, legacy=legacy) != parent]
        if strays:
            reader.note(
                region_path(parent, "id"),
                f"region {region_id} also names devices below another parent: {strays[:4]}",
            )
        own = [d for d in mine if d.name not in strays]
        region = _read_region(reader, parent, region_id, own)
        if region is not None:
            regions[region_id] = region
    return regions


def _read_region(
    reader: AttrReader, parent: str, region_id: int, members: list[DaxDevice]
) -> DaxRegion | None:
    """None (noted) when the region's size cannot be read: nothing can be carved from it."""
    sysfs = reader.sysfs
    if not sysfs.exists(region_dir(parent)):
        reader.note(parent, f"no dax_region/ for region {region_id}: the region is not read")
        return None
    size = reader.integer(region_path(parent, "size"))
    if size is None:
        return None
    dynamic = sysfs.exists(region_path(parent, "create"))
    # dax_region_visible() hides available_size, seed, create and delete of static regions.
    available = reader.integer(region_path(parent, "available_size"), required=dynamic)
    provider = members[0].provider if members else detect_provider(f"{parent}/dax{region_id}.0")
    return DaxRegion(
        id=region_id,
        parent=parent,
        provider=provider,
        size=size,
        align=reader.integer(region_path(parent, "align"), required=False),
        available_size=available,
        seed=_seed(reader, parent, region_id) if dynamic else None,
        dynamic=dynamic,
        start=_region_start(reader, parent, provider, members),
        devices=tuple(d.name for d in sorted(members, key=lambda d: _name_key(d.name))),
        cxl=_first(d.cxl for d in members),
        target_node=_first(d.target_node for d in members),
        numa_node=_first(d.numa_node for d in members),
        namespace=_first(d.namespace for d in members),
        uuid=_first(d.uuid for d in members),
    )


T = TypeVar("T")


def _first(values: Iterable[T | None]) -> T | None:
    return next((v for v in values if v is not None), None)


def _seed(reader: AttrReader, parent: str, region_id: int) -> str | None:
    rel = region_path(parent, "seed")
    seed = reader.text(rel, required=False, allow_empty=True) or None
    m = DEVICE_NAME.match(seed) if seed is not None else None
    if seed is not None and (m is None or int(m.group(1)) != region_id):
        reader.note(rel, f"not a device of region {region_id}: {seed[:40]!r}")
        return None
    return seed


def _region_start(
    reader: AttrReader, parent: str, provider: Provider, members: list[DaxDevice]
) -> int | None:
    """The region's lowest address; see DaxRegion for where it comes from."""
    cxl_region = posixpath.dirname(parent)
    if (
        provider is Provider.CXL
        and CXL_DAX_REGION_NAME.match(posixpath.basename(parent))
        and CXL_REGION_NAME.match(posixpath.basename(cxl_region))
    ):
        # region.c resource_show(): 0444, -1ULL before the region has its address range
        start = reader.integer(f"{cxl_region}/resource", base=16, required=False)
        if start is not None and start != _NO_RESOURCE:
            return start
    for device in members:
        if not device.ranges and device.resource is not None:
            return device.resource  # resource_show(): the region's start for a rangeless device
    starts = [r.start for d in members for r in d.ranges]
    return min(starts) if starts else None


def read_device(
    sysfs: Sysfs,
    name: str,
    hotplug: HotplugSettings,
    known: Mapping[int, MemoryBlock] | None = None,
) -> DeviceReading:
    """Re-read one device and only the memory blocks its ranges can hold.

    ``known``: blocks read a moment ago (by index); those still there are re-read only for
    their state and zone (blocks.reread_block).
    """
    reader = AttrReader(sysfs)
    if not DEVICE_NAME.match(name):
        reader.note(DAX_DEVICES, f"not a dax device name: {name[:40]!r}")
        return DeviceReading(None, (), tuple(reader.diagnostics))
    rel, legacy = device_dir(name), False
    if not sysfs.exists(rel) and sysfs.exists(legacy_device_dir(name)):
        rel, legacy = legacy_device_dir(name), True
    if not sysfs.exists(rel):
        return DeviceReading(None, (), tuple(reader.diagnostics))
    device = _read_device(reader, rel, name, legacy=legacy)
    block_size = hotplug.block_size or read_block_size(reader)
    blocks: tuple[MemoryBlock, ...] = ()
    if device is not None and block_size:
        intervals = block_intervals(device.ranges, block_size)
        if known:
            blocks = _reread_blocks(reader, intervals, known)
        else:
            blocks = read_blocks(reader, probe_blocks(reader, intervals))
    if not sysfs.exists(rel):
        device = None  # removed while being read
    return DeviceReading(device, blocks, tuple(reader.diagnostics))


@dataclass(frozen=True)
class Binding:
    """What binding and unbinding change: the driver, and memmap_on_memory (set while unbound)."""

    driver: str | None
    memmap_on_memory: bool | None


def read_binding(sysfs: Sysfs, name: str) -> Binding | None:
    """Only the device's driver and memmap_on_memory; None when the device is gone.

    The executor reads this back after every bind and unbind, where a full ``read_device``
    (ranges, identity, every memory block) would cost more than the check needs.
    """
    if not DEVICE_NAME.match(name):
        return None
    rel = device_dir(name)
    if sysfs.exists(rel):
        memmap = AttrReader(sysfs).flag(f"{rel}/memmap_on_memory", required=False)
        return Binding(sysfs.link_name(f"{rel}/driver"), memmap)
    if sysfs.exists(legacy_device_dir(name)):
        return Binding(DRIVER_DEVDAX, None)  # as _read_device: the class model has no driver
    return None


def _reread_blocks(
    reader: AttrReader, intervals: list[tuple[int, int]], known: Mapping[int, MemoryBlock]
) -> tuple[MemoryBlock, ...]:
    wanted = in_intervals(sorted(known), intervals)
    again = (reread_block(reader, known[i]) for i in wanted)
    seen = tuple(b for b in again if b is not None)
    if len(wanted) < sum(last - first + 1 for first, last in intervals):
        # blocks not read before (kmem just bound): look for them the usual way
        new = [i for i in probe_blocks(reader, intervals) if i not in known]
        seen = tuple(sorted((*seen, *read_blocks(reader, new)), key=lambda b: b.index))
    return seen


def read_hotplug_settings(sysfs: Sysfs) -> HotplugSettings:
    """Only the memory-hotplug settings (reads at most one memory block)."""
    reader = AttrReader(sysfs)
    return read_hotplug(reader, read_block_size(reader), [], present_blocks(reader))


def _device_names(reader: AttrReader, rel: str) -> list[str]:
    names = []
    for entry in reader.listdir(rel):
        if DEVICE_NAME.match(entry):
            names.append(entry)
        else:
            reader.note(f"{rel}", f"skipping unexpected entry {entry[:40]!r}")
    names.sort(key=_name_key)
    return names


def _name_key(name: str) -> tuple[int, int]:
    m = DEVICE_NAME.match(name)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def _read_device(reader: AttrReader, rel: str, name: str, *, legacy: bool) -> DaxDevice | None:
    sysfs = reader.sysfs
    if not reader.listdir(rel):
        return None  # vanished between listing and reading
    devpath = sysfs.realpath(rel)
    if devpath == "." or devpath.startswith("../") or devpath == "..":
        reader.note(rel, f"resolves outside the sysfs tree ({devpath[:60]!r})")
        devpath = rel
    parent = region_parent(devpath, legacy=legacy)

    size = reader.integer(f"{rel}/size")
    resource = reader.integer(f"{rel}/resource", base=16, required=False)
    ranges = _ranges(reader, rel, size, resource)
    if size is None:
        size = sum(r.size for r in ranges)
    elif ranges and sum(r.size for r in ranges) != size:
        reader.note(f"{rel}/size", f"{size} differs from the sum of its mapping ranges")
    provider = detect_provider(devpath)
    namespace, uuid = (
        read_pmem_identity(reader, parent) if provider is Provider.PMEM else (None, None)
    )
    return DaxDevice(
        name=name,
        region_id=_region_id(reader, name, parent),
        size=size,
        align=reader.integer(f"{rel}/align", required=False),
        target_node=_node(reader, f"{rel}/target_node"),
        numa_node=_node(reader, f"{rel}/numa_node"),
        resource=resource,
        ranges=ranges,
        memmap_on_memory=reader.flag(f"{rel}/memmap_on_memory", required=False),
        # Class-model devices are always-enabled character devices (libdaxctl
        # daxctl_dev_is_enabled() returns 1 for them); they have no driver link.
        driver=DRIVER_DEVDAX if legacy else sysfs.link_name(f"{rel}/driver"),
        provider=provider,
        devpath=devpath,
        namespace=namespace,
        uuid=uuid,
        # Only CXL devices: a few more reads on the cxl bus (region, its targets, memdevs).
        cxl=read_cxl_identity(reader, devpath) if provider is Provider.CXL else None,
    )


def _region_id(reader: AttrReader, name: str, parent: str) -> int:
    m = DEVICE_NAME.match(name)
    assert m is not None
    from_name = int(m.group(1))
    region_id = reader.integer(region_path(parent, "id"), required=False)
    if region_id is None:
        return from_name
    if region_id != from_name:
        # bus.c names devices "dax%d.%d" from dax_region->id: a mismatch means a foreign layout.
        reader.note(region_path(parent, "id"), f"region {region_id} does not match {name}")
    return region_id


def _node(reader: AttrReader, rel: str) -> int | None:
    node = reader.integer(rel, required=False)
    # numa_node prints -1 (NUMA_NO_NODE) for "none"; target_node is hidden when negative.
    return None if node is None or node < 0 else node


def _ranges(
    reader: AttrReader, rel: str, size: int | None, resource: int | None
) -> tuple[Range, ...]:
    mappings = sorted(
        (int(m.group(1)), e) for e in reader.listdir(rel) if (m := MAPPING_NAME.match(e))
    )
    ranges = []
    for _, entry in mappings:
        start = reader.integer(f"{rel}/{entry}/start", base=16)
        end = reader.integer(f"{rel}/{entry}/end", base=16)
        if start is None or end is None:
            continue
        if end < start:
            reader.note(f"{rel}/{entry}", f"end {end:#x} before start {start:#x}")
            continue
        ranges.append(Range(start, end))
    if mappings or not size:
        return tuple(ranges)
    # No mappingN (kernels before 5.10): one range from resource and size.
    return (Range(resource, resource + size - 1),) if resource is not None else ()

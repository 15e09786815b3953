"""The identity of a CXL dax device: its region, window and memdevs, read from the cxl bus.

Names on the dax and cxl buses change between boots and region re-creations (``memN`` follows
probe order, ``regionR`` and ``daxR.0`` the region id the root decoder hands out next); what does
not change is what the hardware says: each memdev's serial number, the host bridge it sits
below (its ACPI ``_UID``, as the root decoders' ``target_list`` prints it), and the window (root
decoder) the region was made in. For a dax device at
``devices/platform/ACPI0017:00/root0/decoder0.N/regionR/dax_regionR/daxR.0`` this reads
(Linux 6.12, drivers/cxl/core/region.c, port.c, memdev.c):

- ``regionR/{uuid,mode,interleave_ways,interleave_granularity,targetK}``: ``targetK`` names the
  endpoint decoder at interleave position K (``decoderE.D``);
- ``bus/cxl/devices/decoderE.D`` -> ``.../endpointE/decoderE.D``; ``endpointE/uport`` -> the
  memdev ``devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem1``, whose ``serial`` is ``0x1000``;
- ``devices/pci0000:0c/firmware_node/uid``: the host bridge's uid (``12``);
- ``decoder0.N/start``: the window's start address (0400: root only).

Reads only, and never raises for what sysfs shows: whatever is missing or odd is None and a
Diagnostic (see scan.py).
"""

from __future__ import annotations

import posixpath
import uuid as uuidlib

from daxd.kernel.attrs import AttrReader
from daxd.kernel.layout import (
    CXL_DAX_REGION_NAME,
    CXL_DECODER_NAME,
    CXL_MEMDEV_NAME,
    CXL_REGION_NAME,
    CXL_TARGET_NAME,
    HOST_BRIDGE_NAME,
    cxl_device_dir,
    host_bridge_uid_path,
)
from daxd.kernel.model import CxlIdentity, CxlMemdev

# CXL 3.1 8.2.4.20.13: at most 16 interleave ways; more targets than that is damage.
MAX_WAYS = 16
U32 = 1 << 32


def read_cxl_identity(reader: AttrReader, devpath: str) -> CxlIdentity | None:
    """The identity of the CXL dax device whose real path (below the sysfs root) is ``devpath``;
    None (with a Diagnostic) when the path is not a CXL region's dax device."""
    dax_region = posixpath.dirname(devpath)
    region_dir = posixpath.dirname(dax_region)
    window_dir = posixpath.dirname(region_dir)
    dax_match = CXL_DAX_REGION_NAME.match(posixpath.basename(dax_region))
    region = posixpath.basename(region_dir)
    region_match = CXL_REGION_NAME.match(region)
    window = posixpath.basename(window_dir)
    if dax_match is None or region_match is None or not CXL_DECODER_NAME.match(window):
        reader.note(devpath, "CXL dax device that is not below a region of a root decoder")
        return None
    if dax_match.group(1) != region_match.group(1):
        reader.note(dax_region, f"{posixpath.basename(dax_region)} is not the one of {region}")
    ways = read_unsigned(reader, f"{region_dir}/interleave_ways", MAX_WAYS + 1)
    return CxlIdentity(
        region=region,
        uuid=_uuid(reader, f"{region_dir}/uuid"),
        mode=reader.text(f"{region_dir}/mode"),
        interleave_ways=ways,
        interleave_granularity=read_unsigned(reader, f"{region_dir}/interleave_granularity", U32),
        window=window,
        window_start=read_unsigned(reader, f"{window_dir}/start", 1 << 64, base=16),
        memdevs=_memdevs(reader, region_dir, ways),
    )


def _memdevs(reader: AttrReader, region_dir: str, ways: int | None) -> tuple[CxlMemdev, ...]:
    positions = sorted(
        int(m.group(1)) for e in reader.listdir(region_dir) if (m := CXL_TARGET_NAME.match(e))
    )
    limit = MAX_WAYS if ways is None else ways  # targetK for K >= ways are hidden by the kernel
    if ways is not None and positions != list(range(ways)):
        reader.note(region_dir, f"interleave_ways is {ways} but the targets are {positions[:8]}")
    uids: dict[str, int | None] = {}
    return tuple(_memdev(reader, region_dir, k, uids) for k in positions if k < limit)


def _memdev(
    reader: AttrReader, region_dir: str, position: int, uids: dict[str, int | None]
) -> CxlMemdev:
    unknown = CxlMemdev(position, None, None, None, None)
    rel = f"{region_dir}/target{position}"
    decoder = reader.text(rel, allow_empty=True)
    if not decoder:
        return unknown  # not set (a region being assembled), or unreadable
    if not CXL_DECODER_NAME.match(decoder):
        reader.note(rel, f"not an endpoint decoder name: {decoder[:40]!r}")
        return unknown
    sysfs = reader.sysfs
    link = cxl_device_dir(decoder)
    if not sysfs.exists(link):
        reader.note(link, f"missing: {rel.rsplit('/', 1)[-1]} names it")
        return unknown
    endpoint = posixpath.dirname(_inside(reader, link) or "")
    uport = f"{endpoint}/uport"
    memdev_dir = _inside(reader, uport) if endpoint and sysfs.exists(uport) else None
    if memdev_dir is None:
        reader.note(uport if endpoint else link, "no memdev (endpoint port without uport)")
        return unknown
    memdev = posixpath.basename(memdev_dir)
    if not CXL_MEMDEV_NAME.match(memdev):
        reader.note(uport, f"does not lead to a memdev: {memdev[:40]!r}")
        return unknown
    bridge = next((p for p in memdev_dir.split("/")[1:] if HOST_BRIDGE_NAME.match(p)), None)
    if bridge is None:
        reader.note(memdev_dir, "memdev below no PCI host bridge (pciDDDD:BB)")
    elif bridge not in uids:
        uids[bridge] = read_unsigned(reader, host_bridge_uid_path(bridge), U32, required=False)
    return CxlMemdev(
        position=position,
        memdev=memdev,
        serial=read_unsigned(reader, f"{memdev_dir}/serial", 1 << 64, base=16),
        host_bridge=bridge,
        host_bridge_uid=uids.get(bridge) if bridge is not None else None,
    )


def _inside(reader: AttrReader, rel: str) -> str | None:
    """The real path of ``rel`` below the sysfs root; None (noted) when it leads out of it."""
    real = reader.sysfs.realpath(rel)
    if real in (".", "..") or real.startswith("../"):
        reader.note(rel, f"resolves outside the sysfs tree ({real[:60]!r})")
        return None
    return real


def read_unsigned(
    reader: AttrReader, rel: str, limit: int, *, base: int = 10, required: bool = True
) -> int | None:
    value = reader.integer(rel, base=base, required=required)
    if value is None:
        return None
    if not 0 <= value < limit:
        reader.note(rel, f"out of range: {value}")
        return None
    return value


def _uuid(reader: AttrReader, rel: str) -> str | None:
    value = reader.text(rel, required=False, allow_empty=True)
    if not value:
        return None  # RAM regions print an empty uuid
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        reader.note(rel, f"not a uuid: {value[:40]!r}")
        return None

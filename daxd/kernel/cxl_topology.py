"""The CXL topology as the cxl bus shows it: memdevs, windows (root decoders), host bridges and
regions; what daxd needs to build a region the way ``cxl create-region`` does.

Everything is read from ``bus/cxl/devices`` (Linux 6.12, drivers/cxl/core/port.c, hdm.c,
region.c, memdev.c):

- ``memN``: ``serial``, ``ram/size`` (its volatile capacity), and the host bridge it sits below
  (``devices/pci0000:BB/...``); its endpoint port ``endpointE`` (``uport`` -> the memdev) holds
  the endpoint decoders ``decoderE.D`` (``mode``, ``dpa_size``, ``region``: empty when free);
- ``portP`` (``uport`` -> a host bridge): the host bridge's switch decoders ``decoderP.D``, one
  per region going through it (QEMU gives each host bridge one);
- ``decoder0.N`` below ``root0``: a window, ``start`` (0400), ``size``, ``cap_ram``,
  ``interleave_ways``/``interleave_granularity`` and ``target_list`` (host bridge uids in
  interleave order); ``create_ram_region`` reads the region name it hands out next;
- ``regionR`` below its window: ``mode``, ``size``, ``resource``, ``interleave_*``, ``targetK``,
  ``commit``, the ``driver`` link once bound (then ``dax_regionR`` holds its dax devices).

Reads only; nothing odd raises: it becomes None and a Diagnostic.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from daxd.kernel.attrs import AttrReader
from daxd.kernel.cxl import MAX_WAYS, U32, read_unsigned
from daxd.kernel.layout import (
    CXL_DEVICES,
    CXL_MEMDEV_NAME,
    CXL_REGION_NAME,
    CXL_TARGET_NAME,
    DEVICE_NAME,
    HOST_BRIDGE_NAME,
    host_bridge_uid_path,
)
from daxd.kernel.model import Diagnostic
from daxd.kernel.sysfs import Sysfs

_ROOT_DECODER = re.compile(r"^decoder0\.[0-9]+\Z")
_DECODER = re.compile(r"^decoder([0-9]+)\.([0-9]+)\Z")
_PORT = re.compile(r"^port([0-9]+)\Z")
_ENDPOINT = re.compile(r"^endpoint([0-9]+)\Z")
U64 = 1 << 64


@dataclass(frozen=True)
class EndpointDecoder:
    name: str  # decoderE.D
    mode: str | None  # "none", "ram", "pmem"
    dpa_size: int | None
    region: str | None  # the region it decodes for; None when free

    @property
    def free(self) -> bool:
        return self.region is None and not self.dpa_size


@dataclass(frozen=True)
class Memdev:
    name: str  # memN: today's name only
    serial: int | None
    host_bridge: str | None  # pci0000:BB
    host_bridge_uid: int | None
    ram_size: int | None  # volatile capacity (memN/ram/size)
    decoders: tuple[EndpointDecoder, ...]  # in D order

    @property
    def used(self) -> int:
        return sum(d.dpa_size or 0 for d in self.decoders)

    @property
    def free_decoder(self) -> EndpointDecoder | None:
        """The decoder a new region takes: decoders are used in order (hdm.c
        cxl_dpa_alloc() needs the one after the last used)."""
        for d in self.decoders:
            if d.free:
                return d
        return None

    def label(self) -> str:
        serial = f"serial {self.serial:#x}" if self.serial is not None else "no readable serial"
        return f"{self.name} ({serial})"


@dataclass(frozen=True)
class HostBridge:
    name: str  # pci0000:BB
    uid: int | None
    port: str | None  # portP
    free_decoders: int  # switch decoders not decoding a region


@dataclass(frozen=True)
class Window:
    name: str  # decoder0.N
    start: int | None
    size: int | None
    cap_ram: bool
    interleave_ways: int | None
    interleave_granularity: int | None
    target_uids: tuple[int, ...]  # host bridge uids, in interleave order
    next_region: str | None  # what create_ram_region hands out next

    @property
    def end(self) -> int | None:
        if self.start is None or self.size is None:
            return None
        return self.start + self.size


@dataclass(frozen=True)
class Region:
    name: str  # regionR
    window: str  # decoder0.N it was made in
    mode: str | None
    size: int | None
    start: int | None  # resource
    interleave_ways: int | None
    interleave_granularity: int | None
    targets: tuple[str | None, ...]  # endpoint decoder per position; None when not set
    committed: bool | None
    bound: bool  # the cxl_region driver holds it
    dax_devices: tuple[str, ...]  # daxR.N below dax_regionR


@dataclass(frozen=True)
class CxlTopology:
    memdevs: tuple[Memdev, ...]
    windows: tuple[Window, ...]
    host_bridges: tuple[HostBridge, ...]
    regions: tuple[Region, ...]
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.memdevs or self.windows)

    def memdev_by_serial(self, serial: int) -> Memdev | None:
        return next((m for m in self.memdevs if m.serial == serial), None)

    def memdev_of_decoder(self, decoder: str) -> Memdev | None:
        return next((m for m in self.memdevs if any(d.name == decoder for d in m.decoders)), None)

    def host_bridge(self, name: str | None) -> HostBridge | None:
        return next((h for h in self.host_bridges if h.name == name), None)

    def window(self, name: str) -> Window | None:
        return next((w for w in self.windows if w.name == name), None)

    def region(self, name: str) -> Region | None:
        return next((r for r in self.regions if r.name == name), None)

    def regions_in(self, window: str) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.window == window)

    def region_memdevs(self, region: Region) -> tuple[Memdev | None, ...]:
        """The memdev at each interleave position (None where unset or unknown)."""
        return tuple(self.memdev_of_decoder(t) if t else None for t in region.targets)


def read_cxl_topology(sysfs: Sysfs) -> CxlTopology:
    """The cxl bus now; empty (no diagnostics) on a machine without one."""
    reader = AttrReader(sysfs)
    names = reader.listdir(CXL_DEVICES) if sysfs.exists(CXL_DEVICES) else []
    dirs: dict[str, str] = {}
    for name in names:
        real = sysfs.realpath(f"{CXL_DEVICES}/{name}")
        if real.startswith("../") or real == "..":
            reader.note(f"{CXL_DEVICES}/{name}", "leads outside the sysfs tree")
            continue
        dirs[name] = real
    endpoints: dict[str, str] = {}  # memdev dir -> endpoint dir
    ports: dict[str, str] = {}  # host bridge name -> port dir
    for name, path in dirs.items():
        if _ENDPOINT.match(name) or _PORT.match(name):
            up = sysfs.realpath(f"{path}/uport") if sysfs.exists(f"{path}/uport") else None
            if up is None:
                reader.note(path, "a cxl port without uport")
            elif _ENDPOINT.match(name):
                endpoints[up] = path
            elif HOST_BRIDGE_NAME.match(posixpath.basename(up)):
                ports[posixpath.basename(up)] = path
    memdevs = tuple(
        _memdev(reader, name, path, endpoints.get(path))
        for name, path in sorted(dirs.items(), key=lambda kv: _number(kv[0]))
        if CXL_MEMDEV_NAME.match(name)
    )
    windows = tuple(
        _window(reader, name, path)
        for name, path in sorted(dirs.items(), key=lambda kv: _number(kv[0]))
        if _ROOT_DECODER.match(name) and posixpath.basename(posixpath.dirname(path)) == "root0"
    )
    bridges = tuple(
        _host_bridge(reader, name, ports.get(name))
        for name in sorted({m.host_bridge for m in memdevs if m.host_bridge} | set(ports))
    )
    regions = tuple(
        _region(reader, name, path)
        for name, path in sorted(dirs.items(), key=lambda kv: _number(kv[0]))
        if CXL_REGION_NAME.match(name)
    )
    return CxlTopology(memdevs, windows, bridges, regions, tuple(reader.diagnostics))


def _number(name: str) -> tuple[str, int, int]:
    m = re.match(r"^([a-z_-]+)([0-9]+)(?:\.([0-9]+))?\Z", name)
    if m is None:
        return (name, 0, 0)
    return (m.group(1), int(m.group(2)), int(m.group(3) or 0))


def _memdev(reader: AttrReader, name: str, path: str, endpoint: str | None) -> Memdev:
    bridge = next((p for p in path.split("/")[1:] if HOST_BRIDGE_NAME.match(p)), None)
    uid = None
    if bridge is None:
        reader.note(path, "memdev below no PCI host bridge (pciDDDD:BB)")
    else:
        uid = read_unsigned(reader, host_bridge_uid_path(bridge), U32, required=False)
    decoders: list[EndpointDecoder] = []
    if endpoint is None:
        reader.note(path, "no endpoint port (cxl_mem has not probed it)")
    else:
        found = [
            (int(m.group(2)), entry)
            for entry in reader.listdir(endpoint)
            if (m := _DECODER.match(entry))
        ]
        for _, entry in sorted(found):
            rel = f"{endpoint}/{entry}"
            decoders.append(
                EndpointDecoder(
                    name=entry,
                    mode=reader.text(f"{rel}/mode"),
                    dpa_size=read_unsigned(reader, f"{rel}/dpa_size", U64, base=16),
                    region=reader.text(f"{rel}/region", allow_empty=True) or None,
                )
            )
    return Memdev(
        name=name,
        serial=read_unsigned(reader, f"{path}/serial", U64, base=16),
        host_bridge=bridge,
        host_bridge_uid=uid,
        ram_size=read_unsigned(reader, f"{path}/ram/size", U64, base=16, required=False),
        decoders=tuple(decoders),
    )


def _window(reader: AttrReader, name: str, path: str) -> Window:
    targets: list[int] = []
    listed = reader.text(f"{path}/target_list", allow_empty=True) or ""
    for item in filter(None, listed.split(",")):
        try:
            targets.append(int(item))
        except ValueError:
            reader.note(f"{path}/target_list", f"not a host bridge uid: {item[:20]!r}")
    offered = reader.text(f"{path}/create_ram_region", required=False, allow_empty=True)
    return Window(
        name=name,
        start=read_unsigned(reader, f"{path}/start", U64, base=16),
        size=read_unsigned(reader, f"{path}/size", U64, base=16),
        cap_ram=bool(reader.flag(f"{path}/cap_ram", required=False)),
        interleave_ways=read_unsigned(reader, f"{path}/interleave_ways", MAX_WAYS + 1),
        interleave_granularity=read_unsigned(reader, f"{path}/interleave_granularity", U32),
        target_uids=tuple(targets),
        next_region=offered if offered and CXL_REGION_NAME.match(offered) else None,
    )


def _host_bridge(reader: AttrReader, name: str, port: str | None) -> HostBridge:
    free = 0
    if port is not None:
        port_name = posixpath.basename(port)
        m = _PORT.match(port_name)
        for entry in reader.listdir(port):
            dm = _DECODER.match(entry)
            mine = m is not None and dm is not None and dm.group(1) == m.group(1)
            if mine and not reader.text(f"{port}/{entry}/region", allow_empty=True):
                free += 1
    uid = read_unsigned(reader, host_bridge_uid_path(name), U32, required=False)
    return HostBridge(name, uid, posixpath.basename(port) if port else None, free)


def _region(reader: AttrReader, name: str, path: str) -> Region:
    window = posixpath.basename(posixpath.dirname(path))
    ways = read_unsigned(reader, f"{path}/interleave_ways", MAX_WAYS + 1)
    positions = sorted(
        int(m.group(1)) for e in reader.listdir(path) if (m := CXL_TARGET_NAME.match(e))
    )
    count = ways if ways is not None else len(positions)
    targets = tuple(
        (reader.text(f"{path}/target{k}", allow_empty=True) or None) if k in positions else None
        for k in range(count)
    )
    rid = CXL_REGION_NAME.match(name)
    dax_region = f"{path}/dax_region{rid.group(1) if rid else ''}"
    dax = tuple(e for e in reader.listdir(dax_region) if DEVICE_NAME.match(e))
    return Region(
        name=name,
        window=window,
        mode=reader.text(f"{path}/mode", required=False),
        size=read_unsigned(reader, f"{path}/size", U64, base=16),
        start=read_unsigned(reader, f"{path}/resource", U64, base=16, required=False),
        interleave_ways=ways,
        interleave_granularity=read_unsigned(reader, f"{path}/interleave_granularity", U32),
        targets=targets,
        committed=reader.flag(f"{path}/commit", required=False),
        bound=reader.sysfs.exists(f"{path}/driver"),
        dax_devices=dax,
    )

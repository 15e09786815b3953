#!/usr/bin/env python3
"""Guest side of the lab's sysfs snapshots (runs inside the VM, Python 3.11+, stdlib only).

    python3 snapshot.py dax dax0.0 [dax1.0 ...]   # JSON on stdout
    python3 snapshot.py cxl                      # only the cxl bus objects

Records, for each device DAX device: its /sys/bus/dax link and real path, every attribute below
the device (mode, value or the errno of reading it), its driver, its dax_region, the memory blocks
covering its ranges, plus the global memory-hotplug state, the dax drivers, the NUMA nodes and
/proc/iomem. Values are kept as the kernel prints them (stripped of the trailing newline).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path

Entry = dict[str, object]
SKIP = frozenset({"power", "subsystem", "firmware_node", "uevent_seqnum"})


def read_value(path: Path) -> Entry:
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        return {"kind": "missing", "error": errno.errorcode.get(exc.errno or 0, str(exc))}
    out: Entry = {"mode": f"{stat.S_IMODE(mode):04o}"}
    if stat.S_ISLNK(mode):
        out["kind"] = "link"
        out["target"] = os.readlink(path)
        return out
    if stat.S_ISDIR(mode):
        out["kind"] = "dir"
        return out
    out["kind"] = "file"
    try:
        out["value"] = path.read_text(errors="replace").rstrip("\n")
    except OSError as exc:
        out["error"] = errno.errorcode.get(exc.errno or 0, str(exc))
    return out


def tree(root: Path, depth: int = 2) -> dict[str, Entry]:
    """Every entry below root (relative names), descending into real directories only."""
    result: dict[str, Entry] = {}

    def walk(folder: Path, prefix: str, level: int) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            if name in SKIP:
                continue
            path = folder / name
            entry = read_value(path)
            rel = prefix + name
            result[rel] = entry
            if entry.get("kind") == "dir" and level < depth:
                walk(path, rel + "/", level + 1)

    walk(root, "", 1)
    return result


def text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def ranges(dev: Path) -> list[tuple[int, int]]:
    found = []
    for mapping in sorted(dev.glob("mapping*")):
        start, end = text(str(mapping / "start")), text(str(mapping / "end"))
        if start and end:
            found.append((int(start, 16), int(end, 16)))
    return found


def memory_blocks(spans: list[tuple[int, int]]) -> dict[str, dict[str, Entry]]:
    size = int(text("/sys/devices/system/memory/block_size_bytes") or "0", 16)
    blocks: dict[str, dict[str, Entry]] = {}
    if not size:
        return blocks
    for start, end in spans:
        first = (start + size - 1) // size
        last = (end + 1) // size - 1
        for index in range(first, last + 1):
            path = Path(f"/sys/devices/system/memory/memory{index}")
            if path.exists():
                blocks[path.name] = tree(path, depth=1)
    return blocks


def device(name: str) -> Entry:
    link = Path("/sys/bus/dax/devices") / name
    if not link.exists():
        return {"present": False}
    real = link.resolve()
    driver = real / "driver"
    spans = ranges(real)
    return {
        "present": True,
        "bus_link": os.readlink(link),
        "realpath": str(real),
        "driver": os.path.basename(os.readlink(driver)) if driver.exists() else None,
        "attrs": tree(real, depth=2),
        "region": tree(real.parent / "dax_region", depth=1),
        "ranges": [[hex(s), hex(e)] for s, e in spans],
        "memory_blocks": memory_blocks(spans),
        "dev_node_exists": Path("/dev", name).exists(),
    }


def nodes() -> Entry:
    base = Path("/sys/devices/system/node")
    out: Entry = {
        n: text(str(base / n))
        for n in ("possible", "online", "has_memory", "has_normal_memory", "has_cpu")
    }
    meminfo: dict[str, str] = {}
    for node in sorted(base.glob("node[0-9]*")):
        lines = (text(str(node / "meminfo")) or "").splitlines()
        total = next((ln for ln in lines if "MemTotal" in ln), "")
        meminfo[node.name] = " ".join(total.split()[2:])
    out["meminfo_total"] = meminfo
    return out


def dax(names: list[str]) -> Entry:
    mem = Path("/sys/devices/system/memory")
    drivers = Path("/sys/bus/dax/drivers")
    params = Path("/sys/module/memory_hotplug/parameters")
    return {
        "kernel": os.uname().release,
        "cmdline": text("/proc/cmdline"),
        "memory": {n: text(str(mem / n)) for n in ("block_size_bytes", "auto_online_blocks")},
        "memory_hotplug_params": {p.name: text(str(p)) for p in sorted(params.glob("*"))},
        "dax_drivers": {d.name: tree(d, depth=1) for d in sorted(drivers.iterdir())}
        if drivers.is_dir()
        else {},
        "dax_bus_devices": sorted(os.listdir("/sys/bus/dax/devices"))
        if os.path.isdir("/sys/bus/dax/devices")
        else [],
        "devices": {name: device(name) for name in names},
        "nodes": nodes(),
        "iomem": (text("/proc/iomem") or "").splitlines(),
        "cxl": cxl(),
    }


def cxl() -> Entry:
    """Every object on the cxl bus (memdevs, ports, decoders, regions): real path and attributes.

    Host bridges appear through their firmware node's ``uid``, which root decoders' target_list
    names.
    """
    bus = Path("/sys/bus/cxl/devices")
    if not bus.is_dir():
        return {}
    out: dict[str, object] = {}
    for link in sorted(bus.iterdir()):
        real = link.resolve()
        attrs = {k: v for k, v in tree(real, depth=1).items() if v.get("kind") != "dir"}
        out[link.name] = {"realpath": str(real), "attrs": attrs}
    bridges: dict[str, object] = {}
    for uid in sorted(Path("/sys/devices").glob("pci0000:*/firmware_node/uid")):
        bridges[uid.parts[3]] = {"uid": text(str(uid)), "hid": text(str(uid.parent / "hid"))}
    out["_host_bridges"] = dict(bridges)
    return dict(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["cxl"]:
        doc: Entry = cxl()
    elif len(argv) >= 2 and argv[0] == "dax":
        doc = dax(argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

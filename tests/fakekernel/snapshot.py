"""The lab's sysfs snapshots, taken of a fake kernel, and their shape for comparing with the real.

:func:`dax_snapshot` is what ``tests/vm/guest/share/snapshot.py dax NAME...`` records in the VM
(the parts of it the fake has: devices with their attributes, dax region and memory blocks, the
memory-hotplug globals, the cxl bus), built the same way from a FakeKernel's tree: entries
named ``power``, ``subsystem``, ``firmware_node`` and ``uevent_seqnum`` are left out, links give
their target as written, files their value, and a file without read bits the EACCES that
reading it gives even root (kernfs_fop_open()).

:func:`cxl_shape` and :func:`dax_shape` reduce one stage (of a fake kernel, or of a snapshot in
``tests/vm/snapshots/cxl-observed-*.json``, laid out as tests/vm/sysfs_fixture.collect() lays
them out) to what a faithful fake must reproduce: object and attribute names, kinds, modes, link
targets, and the values that do not depend on what happened before (see ``_HISTORY``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.fakekernel.kernel import FakeKernel

Entry = dict[str, Any]
SKIP = frozenset({"power", "subsystem", "firmware_node", "uevent_seqnum"})
# Attributes whose values the fake does not take from the hardware it models: CDAT is a binary
# table QEMU builds.
_OPAQUE = frozenset({"CDAT"})
# On a decoder that decodes no region, these keep whatever the last use (or a refused
# create-region) left there: only their names, kinds and modes count.
_HISTORY = frozenset(
    {"dpa_resource", "dpa_size", "interleave_granularity", "interleave_ways", "mode"}
)


def read_value(path: Path) -> Entry:
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        return {"kind": "missing", "error": errno.errorcode.get(exc.errno or 0, str(exc))}
    out: Entry = {"mode": f"{stat.S_IMODE(mode):04o}"}
    if stat.S_ISLNK(mode):
        return {**out, "kind": "link", "target": os.readlink(path)}
    if stat.S_ISDIR(mode):
        return {**out, "kind": "dir"}
    out["kind"] = "file"
    if not mode & 0o444:
        out["error"] = "EACCES"  # sysfs: no read bits, no read, whoever asks
    else:
        out["value"] = path.read_text(errors="replace").rstrip("\n")
    return out


def tree(root: Path, depth: int = 2) -> dict[str, Entry]:
    result: dict[str, Entry] = {}

    def walk(folder: Path, prefix: str, level: int) -> None:
        for name in sorted(os.listdir(folder)):
            if name in SKIP:
                continue
            entry = read_value(folder / name)
            result[prefix + name] = entry
            if entry["kind"] == "dir" and level < depth:
                walk(folder / name, f"{prefix}{name}/", level + 1)

    if root.is_dir():
        walk(root, "", 1)
    return result


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cxl_snapshot(kernel: FakeKernel) -> dict[str, Any]:
    sys = kernel.sysfs_root
    bus = sys / "bus/cxl/devices"
    out: dict[str, Any] = {}
    for link in sorted(bus.iterdir()) if bus.is_dir() else []:
        real = link.resolve()
        attrs = {k: v for k, v in tree(real, depth=1).items() if v["kind"] != "dir"}
        out[link.name] = {
            "realpath": "/sys/" + str(real.relative_to(sys.resolve())),
            "attrs": attrs,
        }
    bridges = {}
    for uid in sorted((sys / "devices").glob("pci0000:*/firmware_node/uid")):
        bridges[uid.parts[-3]] = {"uid": _text(uid), "hid": _text(uid.parent / "hid")}
    if out:
        out["_host_bridges"] = bridges
    return out


def dax_snapshot(kernel: FakeKernel, names: list[str]) -> dict[str, Any]:
    sys = kernel.sysfs_root
    real_root = sys.resolve()
    devices = {}
    for name in names:
        link = sys / "bus/dax/devices" / name
        real = link.resolve()
        devices[name] = {
            "present": True,
            "bus_link": os.readlink(link),
            "realpath": "/sys/" + str(real.relative_to(real_root)),
            "driver": os.path.basename(os.readlink(real / "driver"))
            if (real / "driver").exists()
            else None,
            "attrs": tree(real, depth=2),
            "region": tree(real.parent / "dax_region", depth=1),
            "memory_blocks": {
                f"memory{b.index}": tree(sys / b.devpath, depth=1) for b in kernel.blocks_of(name)
            },
        }
    mem = sys / "devices/system/memory"
    return {
        "memory": {n: _text(mem / n) for n in ("block_size_bytes", "auto_online_blocks")},
        "devices": devices,
        "cxl": cxl_snapshot(kernel),
    }


# --- shapes ------------------------------------------------------------------------------------
def _describe(name: str, entry: Mapping[str, Any], values: bool) -> str:
    text = f"{entry['kind']} {entry.get('mode')}"
    if entry["kind"] == "link":
        return f"{text} -> {entry['target']}"
    if "error" in entry:
        return f"{text} ({entry['error']})"
    if values and name not in _OPAQUE and "value" in entry:
        return f"{text} = {entry['value']!r}"
    return text


def cxl_shape(cxl: Mapping[str, Any]) -> dict[str, Any]:
    """Every cxl bus object: its real path and attributes."""
    out: dict[str, Any] = {"_host_bridges": cxl.get("_host_bridges")}
    for name, obj in sorted(cxl.items()):
        if name.startswith("_"):
            continue
        attrs = obj["attrs"]
        idle = "region" in attrs and attrs["region"].get("value") == ""
        out[name] = {
            "realpath": obj["realpath"],
            "attrs": {
                a: _describe(a, e, not (idle and a in _HISTORY)) for a, e in sorted(attrs.items())
            },
        }
    return out


def dax_shape(stage: Mapping[str, Any]) -> dict[str, Any]:
    """Each device: paths, driver, attributes, its dax region, its memory blocks."""
    out: dict[str, Any] = {"memory": stage["memory"]}
    for name, dev in sorted(stage["devices"].items()):
        out[name] = {
            "bus_link": dev["bus_link"],
            "realpath": dev["realpath"],
            "driver": dev["driver"],
            "attrs": {a: _describe(a, e, True) for a, e in sorted(dev["attrs"].items())},
            "region": {a: _describe(a, e, True) for a, e in sorted(dev["region"].items())},
            "blocks": {
                b: {a: _describe(a, e, True) for a, e in sorted(attrs.items())}
                for b, attrs in sorted(dev["memory_blocks"].items())
            },
        }
    return out


_EVENT_KEYS = ("ACTION", "SUBSYSTEM", "DEVPATH", "DEVTYPE", "DRIVER", "MODALIAS", "DEVNAME")


def kernel_events(events: Sequence[Mapping[str, str]], subsystems: frozenset[str]) -> list[str]:
    """The kernel's uevents (not udev's re-sends) of these subsystems, one line each."""
    return [
        " ".join(f"{k}={e[k]}" for k in _EVENT_KEYS if k in e)
        for e in events
        if e.get("source", "KERNEL") == "KERNEL" and e.get("SUBSYSTEM") in subsystems
    ]


def number(name: str) -> int:
    """N of memN, portN, decoder0.N ... (the last number in the name)."""
    found = re.findall(r"[0-9]+", name)
    return int(found[-1]) if found else -1

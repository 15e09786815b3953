"""Reading what a scenario script left in ``$LAB_OUT`` (host side, for the ``test_scenario_*``).

Scripts write ``key=value`` lines to ``facts.txt`` (see ``lab_fact`` in guest/share/lib.sh),
JSON snapshots of sysfs (``lab_snapshot``) and the JSON of ``busctl --json=short``; these helpers
turn them into plain Python values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.vm.lab import BootResult, ScenarioResult


def facts(result: ScenarioResult | BootResult, name: str = "facts.txt") -> dict[str, str]:
    """``key=value`` lines of a results file of the main boot, or of one boot (the last value of
    a key wins)."""
    out: dict[str, str] = {}
    path = result.files.get(name)
    if path is None:
        return out
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def snapshot(result: ScenarioResult, name: str) -> dict[str, Any]:
    data = result.json(f"{name}.json")
    assert isinstance(data, dict), f"{name}.json is not a JSON object"
    return data


def device(snap: dict[str, Any], name: str) -> dict[str, Any]:
    entry = snap["devices"][name]
    assert isinstance(entry, dict)
    return entry


def blocks(snap: dict[str, Any], name: str) -> dict[str, tuple[str, str]]:
    """memoryN -> (state, valid_zones) of the device's memory blocks in a snapshot."""
    out: dict[str, tuple[str, str]] = {}
    for block, attrs in device(snap, name).get("memory_blocks", {}).items():
        out[block] = (attrs["state"].get("value", "?"), attrs["valid_zones"].get("value", "?"))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0].removeprefix("memory"))))


def attr(snap: dict[str, Any], name: str, attribute: str) -> str | None:
    entry = device(snap, name)["attrs"].get(attribute, {})
    value = entry.get("value")
    return value if isinstance(value, str) else None


def node_mem_kib(snap: dict[str, Any], node: int) -> int:
    """MemTotal of a NUMA node in KiB (0 when the node has none)."""
    text = snap["nodes"]["meminfo_total"].get(f"node{node}", "")
    match = re.search(r"(\d+) kB", text)
    return int(match.group(1)) if match else 0


def iomem_kmem_under(snap: dict[str, Any], name: str) -> bool:
    """Whether /proc/iomem has a "System RAM (kmem)" range nested under the device's range."""
    lines: list[str] = snap["iomem"]
    for i, line in enumerate(lines):
        if line.strip().endswith(f": {name}"):
            indent = len(line) - len(line.lstrip())
            for child in lines[i + 1 :]:
                if len(child) - len(child.lstrip()) <= indent:
                    break
                if "System RAM (kmem)" in child:
                    return True
    return False


def orphan_kmem_ranges(snap: dict[str, Any]) -> list[str]:
    """ "System RAM (kmem)" ranges not nested under a dax device (leaked by an early unbind)."""
    lines: list[str] = snap["iomem"]
    orphans = []
    for i, line in enumerate(lines):
        if "System RAM (kmem)" not in line:
            continue
        indent = len(line) - len(line.lstrip())
        parent = next((p for p in reversed(lines[:i]) if len(p) - len(p.lstrip()) < indent), "")
        if not re.search(r": dax\d+\.\d+$", parent.strip()):
            orphans.append(line.strip())
    return orphans


def dbus_objects(result: ScenarioResult, name: str) -> dict[str, dict[str, Any]]:
    """GetManagedObjects as saved by ``busctl --json=short call ...``: path -> device props."""
    data = result.json(name)
    assert isinstance(data, dict)
    (objects,) = data["data"]
    out: dict[str, dict[str, Any]] = {}
    for path, interfaces in objects.items():
        props = interfaces.get("org.daxd.Daxd1.Device")
        if props is not None:
            out[path] = {k: v["data"] for k, v in props.items()}
    return out


def calls(result: ScenarioResult, name: str = "calls.tsv") -> dict[str, tuple[int, str]]:
    """What ``lab_call NAME CMD...`` recorded: NAME -> (exit code, output)."""
    out: dict[str, tuple[int, str]] = {}
    for line in result.file(name).splitlines():
        key, rc, text = [*line.split("\t", 2), "", ""][:3]
        out[key] = (int(rc), text.strip())
    return out


def journal_lines(text: str, *needles: str) -> list[str]:
    """Lines containing every needle."""
    return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


def dump(value: object) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def dbus_value(result: ScenarioResult, name: str) -> Any:
    """The value of ``busctl --json=short get-property ...`` saved in a results file."""
    data = result.json(name)
    assert isinstance(data, dict)
    return data["data"]


def block_lines(text: str) -> dict[str, tuple[str, str]]:
    """What ``lab_blocks DAXDEV > FILE`` wrote: memoryN -> (state, valid zones); a block that
    was hot-removed meanwhile (no state to read) is ``gone``."""
    out = {}
    for line in text.splitlines():
        name, *rest = line.split()
        state, zones = (rest[0], rest[1:]) if rest else ("gone", [])
        out[name] = (state, " ".join(zones))
    return out

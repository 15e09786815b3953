"""Text tables of the `daxd` command (plan and apply text: daxd/apply/report.py).

Rendered from the JSON entries (daxd/apply/report.py), never from the executor's or planner's
objects: `daxd status` imports this module, and must not pull the policy language in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The NUMA node the memory joins when it is onlined as System RAM (sysfs target_node); not the
# device's numa_node (the online node nearest to it). docs/cli.md says more.
LIST_HEADER = [
    "DEVICE", "PROVIDER", "SIZE", "TARGET-NODE", "MODE", "ZONE", "MEMMAP", "BLOCKS", "RULE",
]  # fmt: skip


def human_size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{n} B"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def cxl_text(cxl: Mapping[str, Any]) -> str:
    """A CXL identity (the JSON documents' ``cxl`` object, or Device.Cxl) in one line:
    ``region0 decoder0.0 x1 serial 0x1000@hb12``: the region, its window, the interleave ways,
    then each memdev's serial and host bridge uid in interleave order (``?``: not shown)."""
    ways = cxl.get("interleave_ways")
    memdevs = []
    for m in cxl.get("memdevs") or []:
        serial = m.get("serial")
        uid = m.get("host_bridge_uid")
        bridge = f"hb{uid}" if uid is not None else m.get("host_bridge") or "?"
        memdevs.append(f"{'?' if serial is None else hex(serial)}@{bridge}")
    parts = [str(cxl.get("region")), str(cxl.get("window")), f"x{'?' if ways is None else ways}"]
    return " ".join([*parts, "serial", ",".join(memdevs) or "?"])


def list_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """`daxd list`: one row per entry of a "list" document, or "no DAX devices"; a CXL device's
    identity (cxl_text) on a line of its own below its row."""
    if not entries:
        return "no DAX devices"
    rows = [list(LIST_HEADER)]
    for e in entries:
        memmap = {None: "-", True: "yes", False: "no"}[e.get("memmap_on_memory")]
        blocks = e.get("blocks") or {}
        node = e.get("target_node")
        rows.append(
            [
                str(e["name"]),
                str(e.get("provider")),
                human_size(int(e.get("size") or 0)),
                "-" if node is None else str(node),
                str(e.get("mode")),
                e.get("zone") or "-",
                memmap,
                f"{blocks.get('online', 0)}/{blocks.get('total', 0)}",
                e.get("rule") or "-",
            ]
        )
    lines = table(rows).split("\n")
    out = lines[:1]
    for e, line in zip(entries, lines[1:], strict=True):
        out.append(line)
        if e.get("cxl"):
            out.append(f"  cxl: {cxl_text(e['cxl'])}")
    return "\n".join(out)

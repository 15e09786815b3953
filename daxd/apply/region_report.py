"""The policy's CXL regions in the JSON documents and the text of ``daxd plan`` / ``apply``.

JSON (a ``regions`` list next to ``devices``): per region ``name``, ``location``, ``verdict``
(plan) or ``outcome`` (apply), ``reason``, ``region``, ``window``, ``memdevs``, ``size``,
``devices``, ``steps`` (each ``action``, ``path``, ``value``, ``reason``; after an apply also
``ok``, ``error``, and ``undo`` for the writes that undid a failed build), ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from daxd.apply.cxl_regions import RegionResult, RegionStepResult
from daxd.kernel.cxl_topology import CxlTopology
from daxd.plan.cxl_regions import RegionPlan, RegionStep
from daxd.policy.regions import show_bytes


def _step(s: RegionStep) -> dict[str, Any]:
    return {"action": str(s.action), "path": s.path, "value": s.value, "reason": s.reason}


def _done(r: RegionStepResult, undo: bool) -> dict[str, Any]:
    return {**_step(r.step), "ok": r.ok, "error": r.error or None, "undo": undo}


def region_plan_json(p: RegionPlan) -> dict[str, Any]:
    return {
        "name": p.name,
        "location": p.location,
        "verdict": str(p.verdict),
        "reason": p.reason or None,
        "region": p.region,
        "window": p.window,
        "memdevs": list(p.memdevs),
        "size": p.size,
        "devices": list(p.devices),
        "steps": [_step(s) for s in p.steps],
    }


def region_result_json(p: RegionPlan, r: RegionResult | None) -> dict[str, Any]:
    """An apply's entry: ``outcome`` applied / failed when daxd wrote, else the verdict."""
    entry = region_plan_json(p)
    if r is None:
        entry.update(outcome=str(p.verdict), error=None)
        return entry
    entry.update(
        outcome="applied" if r.ok else "failed",
        error=r.error or None,
        devices=list(r.devices),
        steps=[_done(x, False) for x in r.results] + [_done(x, True) for x in r.undone],
        seconds=round(r.seconds, 3),
    )
    return entry


def _head(entry: Mapping[str, Any], word: str) -> list[str]:
    lines = [f"region {entry['name']}: {word} ({entry.get('location')})"]
    facts = []
    if entry.get("region"):
        facts.append(str(entry["region"]))
    if entry.get("window"):
        facts.append(f"in {entry['window']}")
    if entry.get("size"):
        facts.append(show_bytes(int(entry["size"])))
    if entry.get("memdevs"):
        facts.append("memdevs " + ", ".join(entry["memdevs"]))
    if entry.get("devices"):
        facts.append("dax " + ", ".join(entry["devices"]))
    if facts:
        lines.append("  " + "; ".join(facts))
    if entry.get("reason"):
        lines.append(f"  {entry['reason']}")
    return lines


def region_plan_text(entries: Sequence[Mapping[str, Any]], *, steps: bool = True) -> str:
    """`daxd plan` (``steps``) and `daxd list`: each region's verdict, facts and reason."""
    out: list[str] = []
    for e in entries:
        out += _head(e, str(e["verdict"]))
        out += [
            f"  {i}. write {s['value']!r} to {s['path']}  # {s['reason']}"
            for i, s in enumerate((e.get("steps") or []) if steps else [], 1)
        ]
    return "\n".join(out)


def region_apply_text(entries: Sequence[Mapping[str, Any]]) -> str:
    out: list[str] = []
    for e in entries:
        out += _head(e, str(e["outcome"]))
        for s in e.get("steps") or []:
            if "ok" not in s:
                continue
            status = "ok" if s["ok"] else f"FAILED: {s.get('error') or ''}"
            undo = " (undo)" if s.get("undo") else ""
            out.append(f"  write {s['value']!r} to {s['path']}{undo} {status}")
        if e.get("error"):
            out.append(f"  {e['error']}")
    return "\n".join(out)


def cxl_problems(topo: CxlTopology) -> list[str]:
    """What the cxl bus shows that is not daxd's to fix, in words: capacity in no region, a
    committed region with no dax device (its memory stranded), a memdev no window reaches."""
    out = []
    reached = {u for w in topo.windows if w.cap_ram for u in w.target_uids}
    for md in topo.memdevs:
        free = (md.ram_size or 0) - md.used
        if md.host_bridge_uid is not None and topo.windows and md.host_bridge_uid not in reached:
            out.append(
                f"{md.label()}: no window that can hold RAM reaches its host bridge "
                f"{md.host_bridge} (uid {md.host_bridge_uid}): its capacity cannot be mapped"
            )
        elif md.ram_size and free > 0 and not md.used:
            out.append(f"{md.label()}: {show_bytes(free)} of RAM capacity in no region")
    for r in topo.regions:
        if r.committed and not r.dax_devices:
            why = "not enabled (bound)" if not r.bound else "enabled"
            out.append(
                f"{r.name} in {r.window} is committed but has no dax device ({why}): its memory "
                "is decoded but reachable by nothing"
            )
    return out


def cxl_overview(topo: CxlTopology) -> dict[str, Any]:
    """The cxl bus for `daxd list --json`: memdevs, regions, problems."""
    return {
        "memdevs": [
            {
                "name": m.name,
                "serial": m.serial,
                "host_bridge": m.host_bridge,
                "host_bridge_uid": m.host_bridge_uid,
                "ram_size": m.ram_size,
                "used": m.used,
                "regions": sorted({d.region for d in m.decoders if d.region}),
            }
            for m in topo.memdevs
        ],
        "regions": [
            {
                "name": r.name,
                "window": r.window,
                "mode": r.mode,
                "size": r.size,
                "interleave_ways": r.interleave_ways,
                "interleave_granularity": r.interleave_granularity,
                "serials": [m.serial if m else None for m in topo.region_memdevs(r)],
                "committed": r.committed,
                "enabled": r.bound,
                "devices": list(r.dax_devices),
            }
            for r in topo.regions
        ],
        "problems": cxl_problems(topo),
    }

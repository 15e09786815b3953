"""Layouts in `daxd plan` and `daxd apply`: JSON entries and the text shown before the devices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from daxd.apply.carving import LayoutOutcome
from daxd.plan.carving import RegionLayout


def layout_plan_json(planned: RegionLayout) -> dict[str, Any]:
    plan = planned.plan
    return {
        "region": plan.region,
        "layout": plan.layout,
        "location": plan.location,
        "verdict": str(plan.verdict),
        "reason": plan.reason or None,
        "sizes": list(plan.sizes),
        "devices": {name: i + 1 for name, i in plan.assignments},
        "steps": [
            {
                "action": str(s.action),
                "device": s.device,
                "path": s.path,
                "value": s.value,
                "reason": s.reason,
            }
            for s in plan.steps
        ],
        "notes": list(plan.notes),
    }


def layout_result_json(outcome: LayoutOutcome) -> dict[str, Any]:
    entry = layout_plan_json(outcome.planned)
    result = outcome.result
    if outcome.held:
        entry |= {"outcome": "held", "error": outcome.held}
    elif result is None:
        entry |= {"outcome": "in-sync" if entry["verdict"] == "in-sync" else "refused"}
        entry["error"] = entry["reason"]
    else:
        entry |= {
            "outcome": str(result.outcome),
            "error": result.error or None,
            "devices": {name: i + 1 for name, i in result.assignments.items()},
            "results": [
                {
                    "action": str(r.step.action),
                    "path": r.step.path,
                    "value": r.step.value,
                    "ok": r.ok,
                    "error": r.error or None,
                    "errno": r.errno or None,
                    "rollback": r.rollback,
                }
                for r in result.results
            ],
        }
    return entry


def layout_text(entries: Sequence[Mapping[str, Any]], *, steps: bool = True) -> str:
    lines = []
    for e in entries:
        head = f"dax region {e['region']}: layout {e['layout']!r} ({e['location']}): "
        outcome = e.get("outcome", e["verdict"])
        why = e.get("error") or e.get("reason")
        lines.append(head + str(outcome) + (f": {why}" if why else ""))
        if e["devices"]:
            devices = ", ".join(f"{n} (device {i})" for n, i in e["devices"].items())
            lines.append(f"  devices: {devices}")
        lines += [f"  note: {n}" for n in e["notes"]]
        if steps and "results" not in e:
            lines += [
                f"  {s['action']}: write {s['value']!r} to {s['path']}  # {s['reason']}"
                for s in e["steps"]
            ]
        for r in e.get("results", ()):
            mark = "ok" if r["ok"] else f"FAILED: {r['error']}"
            undo = " (undo)" if r["rollback"] else ""
            lines.append(f"  {r['action']}{undo}: {r['value']!r} > {r['path']}: {mark}")
    return "\n".join(lines) + "\n" if lines else ""

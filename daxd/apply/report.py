"""The JSON documents of `daxd list`, `plan` and `apply` (and of the daemon's Plan and Apply).

Below both the command and the service, so that each renders the same document. The documents
carry ``"format": 1``; fields are only ever added within a format version (docs/cli.md lists
them). Nothing here imports the policy language: the command's client path uses this module.

The text `daxd plan` and `daxd apply` print is rendered from these documents too (below), so
the command prints the same for the daemon's answer as for what it did itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from daxd.kernel.model import DaxDevice, HotplugSettings, MemoryBlock
from daxd.kernel.view import DeviceView, cxl_record, view

if TYPE_CHECKING:
    from daxd.apply.executor import DeviceResult, StepResult
    from daxd.plan.steps import DevicePlan, Step

JSON_FORMAT = 1


def view_json(v: DeviceView) -> dict[str, Any]:
    return {
        "mode": v.mode,
        "driver": v.driver or None,
        "zone": v.zone or None,
        "memmap_on_memory": v.memmap_on_memory,
        "memmap_on_memory_attribute": v.memmap_on_memory_attribute,
        "blocks": {"online": v.blocks_online, "total": v.blocks_total},
    }


def device_json(d: DaxDevice, v: DeviceView) -> dict[str, Any]:
    return {
        "name": d.name,
        "region": d.region_id,
        "provider": str(d.provider),
        "size": d.size,
        "numa_node": d.numa_node,
        "target_node": d.target_node,
        "resource": f"0x{d.resource:x}" if d.resource is not None else None,
        "ranges": [{"start": f"0x{r.start:x}", "end": f"0x{r.end:x}"} for r in d.ranges],
        "namespace": d.namespace,
        "uuid": d.uuid,
        "cxl": cxl_record(d.cxl),
        **view_json(v),
    }


def step_json(s: Step) -> dict[str, Any]:
    return {
        "action": str(s.action),
        "path": s.path,
        "value": s.value,
        "block": s.block,
        "driver": s.driver,
        "reason": s.reason,
    }


def plan_json(p: DevicePlan) -> dict[str, Any]:
    desired = None
    if p.desired is not None:
        desired = {
            "mode": p.desired.mode,
            "zone": p.desired.zone,
            "memmap_on_memory": p.desired.memmap_on_memory,
            "online": p.desired.online,
        }
    return {
        "verdict": str(p.verdict),
        "rule": p.rule,
        "rule_location": p.rule_location,
        "reason": p.reason or None,
        "desired": desired,
        "steps": [step_json(s) for s in p.steps],
        "notes": list(p.notes),
    }


def result_step_json(r: StepResult) -> dict[str, Any]:
    return {
        **step_json(r.step),
        "ok": r.ok,
        "error": r.error or None,
        "errno": r.errno or None,
        "rollback": r.rollback,
    }


def document(
    kind: str,
    hotplug: HotplugSettings,
    devices: list[dict[str, Any]],
    *,
    legacy_device_model: bool = False,
    diagnostics: Sequence[object] = (),
    regions: Sequence[Mapping[str, Any]] | None = None,
    cxl: Mapping[str, Any] | None = None,
) -> str:
    """``regions``: the policy's CXL regions (daxd/apply/region_report.py); only in documents of
    a policy that has some. ``cxl``: the cxl bus (`daxd list` on a machine that has one)."""
    hp = hotplug
    doc = {
        "format": JSON_FORMAT,
        "kind": kind,
        "hotplug": {
            "block_size": hp.block_size,
            "auto_online_blocks": hp.auto_online_blocks,
            "memmap_on_memory": hp.memmap_on_memory,
            "online_policy": hp.online_policy,
        },
        "legacy_device_model": legacy_device_model,
        "devices": devices,
        "diagnostics": [str(d) for d in diagnostics],
    }
    if regions is not None:
        doc["regions"] = list(regions)
    if cxl is not None:
        doc["cxl"] = dict(cxl)
    return json.dumps(doc, indent=2)


def list_entry(
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    rule: str | None,
    hotplug: HotplugSettings | None,
) -> dict[str, Any]:
    """``hotplug``: read with the device; what memmap_on_memory in effect depends on."""
    return {**device_json(device, view(device, blocks, hotplug)), "rule": rule}


def plan_entry(
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    p: DevicePlan,
    hotplug: HotplugSettings | None,
) -> dict[str, Any]:
    return {**list_entry(device, blocks, p.rule, hotplug), **plan_json(p)}


def result_entry(
    device: DaxDevice | None,
    blocks: tuple[MemoryBlock, ...],
    r: DeviceResult,
    hotplug: HotplugSettings | None,
) -> dict[str, Any]:
    """``device``/``blocks``: the device as read before the apply (None: it was not there)."""
    entry: dict[str, Any] = {"name": r.device}
    if device is not None:
        entry = list_entry(device, blocks, r.plan.rule if r.plan else None, hotplug)
    entry.update(
        {
            "outcome": str(r.outcome),
            "error": r.error or None,
            "plan": plan_json(r.plan) if r.plan else None,
            "steps": [result_step_json(s) for s in r.results],
            "final": view_json(r.final) if r.final else None,
        }
    )
    return entry


# --- Text ----------------------------------------------------------------------------------------
# What `daxd plan` and `daxd apply` print, rendered from the entries above, so that the command
# prints the same whether it acted itself or the daemon did and answered with the document.


def plan_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """`daxd plan`: each entry of a "plan" document, or "no DAX devices"."""
    return "\n".join(plan_entry_text(e) for e in entries) if entries else "no DAX devices"


def apply_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """`daxd apply`: each entry of an "apply" document, or "no DAX devices"."""
    return "\n".join(result_entry_text(e) for e in entries) if entries else "no DAX devices"


def plan_entry_text(entry: Mapping[str, Any]) -> str:
    """One device's plan: the verdict, the rule, the reason, the steps folded, the notes."""
    head = f"{entry['name']}: {entry['verdict']}"
    if entry.get("rule"):
        head += f" (rule {entry['rule']!r} at {entry.get('rule_location')})"
    lines = [head]
    if entry.get("reason"):
        lines.append(f"  {entry['reason']}")
    steps = entry.get("steps") or []
    lines += [f"  {i}. {ln}" for i, ln in enumerate(block_runs([(s, "") for s in steps]), 1)]
    lines += [f"  {n}" for n in entry.get("notes") or []]
    return "\n".join(lines)


def result_entry_text(entry: Mapping[str, Any]) -> str:
    """One device's apply: the outcome, every write made (folded), the error, what is there now."""
    head = f"{entry['name']}: {entry['outcome']}"
    plan = entry.get("plan")
    if plan and plan.get("rule"):
        head += f" (rule {plan['rule']!r})"
    lines = [head]
    done = [
        (
            s,
            (" (undo)" if s.get("rollback") else "")
            + (" ok" if s.get("ok") else f" FAILED: {s.get('error') or ''}"),
        )
        for s in entry.get("steps") or []
    ]
    lines += [f"  {ln}" for ln in block_runs(done)]
    if entry.get("error"):
        lines.append(f"  {entry['error']}")
    final = entry.get("final")
    if final is not None:
        blocks = final.get("blocks") or {}
        lines.append(
            f"  now: {final.get('mode')}, zone {final.get('zone') or '-'}, "
            f"{blocks.get('online', 0)}/{blocks.get('total', 0)} blocks online"
        )
    return "\n".join(lines)


def block_runs(items: Sequence[tuple[Mapping[str, Any], str]]) -> list[str]:
    """Lines for steps (``step_json`` entries), with blocks that get the same treatment one
    after the other folded into one line.

    daxd does a device's blocks out of address order (planner.zone_walk_order), so a line names
    the set: ``memory32..memory40 (9 blocks)`` when it has no gaps, else its bounds and count.

    ``items`` pairs each step with a suffix (e.g. its outcome); a block's consecutive steps form
    its treatment.
    """
    lines: list[str] = []
    run: list[int] = []
    seen: set[int] = set()
    run_key: tuple[tuple[str, str, str], ...] | None = None
    i = 0

    def flush() -> None:
        if run and run_key is not None:
            ops = ", ".join(f"{value}{suffix}" for value, suffix, _ in run_key)
            lines.append(f"{_span(run)}: {ops}  # {run_key[0][2]}")
        run.clear()
        seen.clear()

    while i < len(items):
        step, suffix = items[i]
        block = step.get("block")
        if block is None:
            flush()
            run_key = None
            lines.append(f"write {step['value']!r} to {step['path']}  # {step['reason']}{suffix}")
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0].get("block") == block:
            j += 1
        key = tuple((str(s["value"]), suf, str(s["reason"])) for s, suf in items[i:j])
        if key != run_key or block in seen:
            flush()
            run_key = key
        run.append(block)
        seen.add(block)
        i = j
    flush()
    return lines


def _span(blocks: list[int]) -> str:
    if len(blocks) == 1:
        return f"memory{blocks[0]}"
    low, high = min(blocks), max(blocks)
    if high - low + 1 == len(blocks):
        return f"memory{low}..memory{high} ({len(blocks)} blocks)"
    return f"{len(blocks)} blocks between memory{low} and memory{high}"

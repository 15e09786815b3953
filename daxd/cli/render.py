"""Text and JSON output of the `daxd` command.

The JSON documents carry ``"format": 1``; fields are only ever added within a format version
(docs/cli.md lists them).
"""

from __future__ import annotations

import json
from typing import Any

from daxd.apply.executor import DeviceResult, StepResult
from daxd.kernel.model import DaxDevice, KernelState
from daxd.kernel.view import DeviceView, view
from daxd.plan.steps import DevicePlan, Step

JSON_FORMAT = 1


def human_size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{n} B"


def view_json(v: DeviceView) -> dict[str, Any]:
    return {
        "mode": v.mode,
        "driver": v.driver or None,
        "zone": v.zone or None,
        "memmap_on_memory": v.memmap_on_memory,
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
        **view_json(v),
    }


def step_json(s: Step) -> dict[str, Any]:
    return {
        "action": str(s.action),
        "path": s.path,
        "value": s.value,
        "block": s.block,
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


def document(kind: str, state: KernelState, devices: list[dict[str, Any]]) -> str:
    hp = state.hotplug
    doc = {
        "format": JSON_FORMAT,
        "kind": kind,
        "hotplug": {
            "block_size": hp.block_size,
            "auto_online_blocks": hp.auto_online_blocks,
            "memmap_on_memory": hp.memmap_on_memory,
            "online_policy": hp.online_policy,
        },
        "legacy_device_model": state.legacy_device_model,
        "devices": devices,
        "diagnostics": [str(d) for d in state.diagnostics],
    }
    return json.dumps(doc, indent=2)


def list_entry(state: KernelState, name: str, rule: str | None) -> dict[str, Any]:
    d = state.devices[name]
    return {**device_json(d, view(d, state.blocks_of(name))), "rule": rule}


def plan_entry(state: KernelState, p: DevicePlan) -> dict[str, Any]:
    return {**list_entry(state, p.device, p.rule), **plan_json(p)}


def result_entry(state: KernelState, r: DeviceResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": r.device}
    if r.device in state.devices:
        entry = list_entry(state, r.device, r.plan.rule if r.plan else None)
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


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def list_text(state: KernelState, rules: dict[str, str | None]) -> str:
    rows = [["DEVICE", "PROVIDER", "SIZE", "NODE", "MODE", "ZONE", "MEMMAP", "BLOCKS", "RULE"]]
    for name, rule in rules.items():
        d = state.devices[name]
        v = view(d, state.blocks_of(name))
        memmap = {None: "-", True: "yes", False: "no"}[v.memmap_on_memory]
        rows.append(
            [
                name,
                v.provider,
                human_size(v.size),
                "-" if v.target_node is None else str(v.target_node),
                v.mode,
                v.zone or "-",
                memmap,
                f"{v.blocks_online}/{v.blocks_total}",
                rule or "-",
            ]
        )
    return table(rows)


def block_runs(items: list[tuple[Step, str]]) -> list[str]:
    """Lines for steps, with blocks that get the same treatment one after the other folded into
    one line.

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
        if step.block is None:
            flush()
            run_key = None
            lines.append(f"{step.describe()}{suffix}")
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0].block == step.block:
            j += 1
        key = tuple((s.value, suf, s.reason) for s, suf in items[i:j])
        if key != run_key or step.block in seen:
            flush()
            run_key = key
        run.append(step.block)
        seen.add(step.block)
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


def plan_text(p: DevicePlan) -> str:
    head = f"{p.device}: {p.verdict}"
    if p.rule:
        head += f" (rule {p.rule!r} at {p.rule_location})"
    lines = [head]
    if p.reason:
        lines.append(f"  {p.reason}")
    lines += [f"  {i}. {ln}" for i, ln in enumerate(block_runs([(s, "") for s in p.steps]), 1)]
    lines += [f"  {n}" for n in p.notes]
    return "\n".join(lines)


def result_text(r: DeviceResult) -> str:
    head = f"{r.device}: {r.outcome}"
    if r.plan and r.plan.rule:
        head += f" (rule {r.plan.rule!r})"
    lines = [head]
    done = [
        (s.step, (" (undo)" if s.rollback else "") + (" ok" if s.ok else f" FAILED: {s.error}"))
        for s in r.results
    ]
    lines += [f"  {ln}" for ln in block_runs(done)]
    if r.error:
        lines.append(f"  {r.error}")
    if r.final is not None:
        f = r.final
        lines.append(
            f"  now: {f.mode}, zone {f.zone or '-'}, "
            f"{f.blocks_online}/{f.blocks_total} blocks online"
        )
    return "\n".join(lines)

"""The JSON documents of `daxd list`, `plan` and `apply` (and of the daemon's Plan and Apply).

Below both the command and the service, so that each renders the same document. The documents
carry ``"format": 1``; fields are only ever added within a format version (docs/cli.md lists
them). Nothing here imports the policy language: the command's client path uses this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daxd.kernel.model import DaxDevice, HotplugSettings, MemoryBlock
from daxd.kernel.view import DeviceView, view

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


def document(
    kind: str,
    hotplug: HotplugSettings,
    devices: list[dict[str, Any]],
    *,
    legacy_device_model: bool = False,
    diagnostics: Sequence[object] = (),
) -> str:
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
    return json.dumps(doc, indent=2)


def list_entry(
    device: DaxDevice, blocks: tuple[MemoryBlock, ...], rule: str | None
) -> dict[str, Any]:
    return {**device_json(device, view(device, blocks)), "rule": rule}


def plan_entry(device: DaxDevice, blocks: tuple[MemoryBlock, ...], p: DevicePlan) -> dict[str, Any]:
    return {**list_entry(device, blocks, p.rule), **plan_json(p)}


def result_entry(
    device: DaxDevice | None, blocks: tuple[MemoryBlock, ...], r: DeviceResult
) -> dict[str, Any]:
    """``device``/``blocks``: the device as read before the apply (None: it was not there)."""
    entry: dict[str, Any] = {"name": r.device}
    if device is not None:
        entry = list_entry(device, blocks, r.plan.rule if r.plan else None)
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

"""Real-kernel sysfs fixtures recorded by the lab (``tests/vm/snapshots/*.json``).

A scenario script calls ``lab_snapshot STAGE daxX.Y ...`` (guest/share/snapshot.py) after each
step and ``lab_try_write PATH VALUE`` for each write whose answer matters; :func:`collect` merges
the stage snapshots and the write answers into one JSON document. :func:`shape` reduces it to what
must not change between runs (attribute names, kinds and modes, drivers, memory block states,
write answers), and :func:`save_or_compare` writes the fixture (first run, or with
``DAXD_LAB_UPDATE_SNAPSHOTS=1``) or asserts that the new run has the same shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.vm.lab import ScenarioResult

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshots"


def collect(result: ScenarioResult, **extra: object) -> dict[str, object]:
    stages: dict[str, object] = {}
    for name in sorted(result.files):
        if name[0].isdigit() and name.endswith(".json"):
            stages[name.removesuffix(".json")] = result.json(name)
    writes = []
    if "writes.tsv" in result.files:
        for line in result.file("writes.tsv").splitlines():
            stage, path, value, answer = line.split("\t")
            writes.append({"stage": stage, "path": path, "value": value, "answer": answer})
    first = next(iter(stages.values()))
    assert isinstance(first, dict)
    doc: dict[str, object] = {
        "about": "Real-kernel observations recorded by tests/vm (see docs/lab.md)",
        "kernel": first["kernel"],
        "cmdline": first["cmdline"],
    }
    doc.update(extra)
    doc["stages"] = stages
    doc["writes"] = writes
    return doc


def device(snapshot: dict[str, object], stage: str, name: str) -> dict[str, object]:
    stages = snapshot["stages"]
    assert isinstance(stages, dict)
    devices = stages[stage]["devices"]
    assert isinstance(devices, dict)
    dev = devices[name]
    assert isinstance(dev, dict)
    return dev


def shape(snapshot: dict[str, object]) -> dict[str, object]:
    """What must stay the same between runs and kernels of the same series (no values)."""
    stages = snapshot["stages"]
    assert isinstance(stages, dict)
    out: dict[str, object] = {}
    for stage, snap in sorted(stages.items()):
        devices = snap["devices"]
        assert isinstance(devices, dict)
        for name, dev in sorted(devices.items()):
            attrs = dev.get("attrs", {})
            blocks = dev.get("memory_blocks", {})
            out[f"{stage} {name}"] = {
                "driver": dev.get("driver"),
                "attrs": {k: f"{v['kind']} {v.get('mode')}" for k, v in sorted(attrs.items())},
                "blocks": {
                    b: {k: battrs[k].get("value") for k in ("state", "valid_zones") if k in battrs}
                    for b, battrs in sorted(blocks.items())
                },
            }
    writes = snapshot["writes"]
    assert isinstance(writes, list)
    out["writes"] = [f"{w['stage']} {w['value']} > {w['path']}: {w['answer']}" for w in writes]
    return out


def save_or_compare(snapshot: dict[str, object], name: str, result: ScenarioResult) -> Path:
    """Keep the new snapshot in the run folder; write or check tests/vm/snapshots/NAME."""
    text = json.dumps(snapshot, indent=1, sort_keys=True) + "\n"
    fresh = result.run_dir / name
    fresh.write_text(text)
    fixture = SNAPSHOT_DIR / name
    if not fixture.exists() or os.environ.get("DAXD_LAB_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT_DIR.mkdir(exist_ok=True)
        fixture.write_text(text)
        return fixture
    expected = shape(json.loads(fixture.read_text()))
    assert shape(snapshot) == expected, (
        f"the real kernel no longer matches {fixture} (new one: {fresh}); if that is expected, "
        "rerun with DAXD_LAB_UPDATE_SNAPSHOTS=1 and review the diff"
    )
    return fixture

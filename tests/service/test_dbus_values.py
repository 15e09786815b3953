"""The records of the D-Bus API: JSON entries as typed a{sv}, and back, key for key."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from daxd.kernel.model import HotplugSettings, OnlineType
from daxd.service.dbus_values import (
    APPLY_ENTRY,
    PLAN,
    RESULT_STEP,
    VIEW,
    apply_entry_from_dbus,
    from_dbus,
    hotplug_from_dbus,
    hotplug_record,
    to_dbus,
)
from tests.cli.helpers import daxd
from tests.fakekernel import FakeKernel
from tests.plan.helpers import DEVDAX, device_block_indices, walk_order, write_policy

RAM = "rules:\n  - name: ram\n    mode: system-ram\n    zone: movable\n"
RAM += "    allow_pmem_data_loss: true\n"


def test_types_by_key() -> None:
    record = {
        "name": "dax0.0",
        "size": 1 << 40,
        "region": 3,
        "numa_node": -1,
        "target_node": 2,
        "errno": 16,
        "ok": True,
        "timeout": 1.5,
        "error": None,
        "blocks": {"online": 4, "total": 8},
        "steps": [],
        "ranges": [{"start": "0x0", "end": "0xfff"}],
        "notes": [],
        "diagnostics": ["a: b"],
    }
    assert to_dbus(record) == {
        "name": Variant("s", "dax0.0"),
        "size": Variant("t", 1 << 40),
        "region": Variant("u", 3),
        "numa_node": Variant("i", -1),
        "target_node": Variant("i", 2),
        "errno": Variant("x", 16),
        "ok": Variant("b", True),
        "timeout": Variant("d", 1.5),
        "blocks": Variant("a{sv}", {"online": Variant("u", 4), "total": Variant("u", 8)}),
        "steps": Variant("aa{sv}", []),
        "ranges": Variant("aa{sv}", [{"start": Variant("s", "0x0"), "end": Variant("s", "0xfff")}]),
        "notes": Variant("as", []),
        "diagnostics": Variant("as", ["a: b"]),
    }


@pytest.mark.parametrize(
    "bad",
    [{"size": -1}, {"block": 2**32}, {"numa_node": 2**31}, {"x": [1, 2]}, {"x": ["a", {}]}],
)
def test_what_has_no_place_in_a_record_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"x|size|block|numa_node"):
        to_dbus(bad)


def round_trip(entry: dict[str, Any]) -> dict[str, Any]:
    return apply_entry_from_dbus(to_dbus(entry))


def entries(capsys: pytest.CaptureFixture[str], kernel: FakeKernel, policy: Path) -> list[Any]:
    ran = daxd(capsys, kernel, policy, "apply", "--json")
    found: list[Any] = ran.json()["devices"]
    assert found
    return found


def test_apply_entries_come_back_as_they_were(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    """Applied, failed (with errno and the undo) and refused: the same JSON, key order too."""
    fake_kernel.add_pmem_device()  # refused: no consent
    fake_kernel.add_hmem_device()  # devdax: fails half-way, rolled back
    fake_kernel.add_cxl_device()  # applied
    fake_kernel.block_offline_fails(
        walk_order(device_block_indices(fake_kernel, "dax1.0"))[2], errno.EBUSY
    )
    policy = write_policy(
        tmp_path,
        "rules:\n"
        "  - name: pmem\n    match: {provider: pmem}\n    mode: system-ram\n"
        "  - name: hmem\n    match: {provider: hmem}\n    mode: devdax\n"
        "  - name: cxl\n    match: {provider: cxl}\n    mode: devdax\n",
    )
    found = entries(capsys, fake_kernel, policy)
    assert {e["outcome"] for e in found} == {"refused", "failed", "applied"}
    failed = next(e for e in found if e["outcome"] == "failed")
    assert any(s["errno"] for s in failed["steps"])
    assert any(s["rollback"] for s in failed["steps"])
    for entry in found:
        assert json.dumps(round_trip(entry)) == json.dumps(entry)


def test_the_shapes_are_those_of_the_entries(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    """daxd/apply/report.py and dbus_values.APPLY_ENTRY name the same keys in the same order."""
    (entry,) = entries(capsys, pmem_kernel, write_policy(tmp_path, RAM))
    assert entry["outcome"] == "applied"
    assert tuple(entry) == APPLY_ENTRY.keys
    assert tuple(entry["plan"]) == PLAN.keys
    assert tuple(entry["final"]) == VIEW.keys
    assert entry["steps"]
    assert all(tuple(s) == RESULT_STEP.keys for s in entry["steps"])
    assert json.dumps(round_trip(entry)) == json.dumps(entry)
    wire = to_dbus(entry)
    assert entry["zone"] is None
    assert "zone" not in wire
    assert wire["steps"].signature == "aa{sv}"
    assert "block" not in wire["steps"].value[0]  # the unbind step has no block


def test_gone_and_newer_keys() -> None:
    gone: dict[str, Any] = {"name": "dax3.0", "outcome": "gone", "error": None, "steps": []}
    assert round_trip(gone) == {
        "name": "dax3.0",
        "outcome": "gone",
        "error": None,
        "plan": None,
        "steps": [],
        "final": None,
    }
    newer = {**to_dbus({"name": "dax0.0", "outcome": "gone"}), "later": Variant("u", 3)}
    assert list(apply_entry_from_dbus(newer))[-1] == "later"
    assert from_dbus({"a": Variant("a{sv}", {"b": Variant("as", ["c"])})}) == {"a": {"b": ["c"]}}


def test_hotplug_both_ways() -> None:
    settings = HotplugSettings(128 << 20, OnlineType.ONLINE_MOVABLE, True, "auto-movable", True)
    record = hotplug_record(settings)
    assert record == {
        "block-size": 128 << 20,
        "auto-online-blocks": "online_movable",
        "memmap-on-memory": True,
        "online-policy": "auto-movable",
        "hotremove": True,
    }
    wire = to_dbus(record)
    assert wire["block-size"].signature == "t"
    assert hotplug_from_dbus(wire) == settings
    bare = HotplugSettings(None, None, None, None, False)
    assert to_dbus(hotplug_record(bare)) == {"hotremove": Variant("b", False)}
    assert hotplug_from_dbus(to_dbus(hotplug_record(bare))) == bare
    assert hotplug_from_dbus({}) == bare


def test_a_devdax_rule_round_trips_too(
    capsys: pytest.CaptureFixture[str], hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    (entry,) = entries(capsys, hmem_kernel, write_policy(tmp_path, DEVDAX))
    assert entry["outcome"] == "applied"
    assert json.dumps(round_trip(entry)) == json.dumps(entry)

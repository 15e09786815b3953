"""A CXL device's identity wherever a device is described: `daxd list` (text and JSON), plan and
apply JSON, the apply record on D-Bus (typed, and back), `daxd status`'s text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from daxd.cli.render import cxl_text
from daxd.cli.status import status_json, status_text
from daxd.service.dbus_values import APPLY_ENTRY, CXL, apply_entry_from_dbus, to_dbus
from tests.cli.helpers import Ran, daxd, devices
from tests.fakekernel import FakeKernel, MiB
from tests.plan.helpers import write_policy

A, B = 0x1000, 0x1001
POLICY = """\
rules:
  - name: interleaved
    match: {interleave_ways: 2}
    mode: system-ram
  - name: by-serial
    match: {serial: "0x1001"}
    mode: devdax
"""
ONE: dict[str, Any] = {
    "region": "region2",
    "uuid": None,
    "mode": "ram",
    "interleave_ways": 1,
    "interleave_granularity": 256,
    "window": "decoder0.1",
    "window_start": "0x210000000",
    "memdevs": [
        {
            "position": 0,
            "memdev": "mem0",
            "serial": B,
            "host_bridge": "pci0000:34",
            "host_bridge_uid": 52,
        }
    ],
}
BOTH: dict[str, Any] = {
    "region": "region3",
    "uuid": None,
    "mode": "ram",
    "interleave_ways": 2,
    "interleave_granularity": 8192,
    "window": "decoder0.2",
    "window_start": "0x310000000",
    "memdevs": [
        {
            "position": 0,
            "memdev": "mem1",
            "serial": A,
            "host_bridge": "pci0000:0c",
            "host_bridge_uid": 12,
        },
        {
            "position": 1,
            "memdev": "mem0",
            "serial": B,
            "host_bridge": "pci0000:34",
            "host_bridge_uid": 52,
        },
    ],
}


@pytest.fixture
def lab(fake_kernel: FakeKernel) -> FakeKernel:
    """A pmem device (dax0.0, region 0), then the lab's machine: host bridges 52 and 12, mem0
    serial B below 52, mem1 serial A below 12, a window for each (offering region1..3) and a
    2-way one over both. QEMU gives a host bridge one decoder: a test makes one region."""
    fake_kernel.add_pmem_device()  # dax0.0, region 0
    for uid in (52, 12):
        fake_kernel.add_cxl_host_bridge(uid)
    fake_kernel.add_cxl_memdev(B, 52)
    fake_kernel.add_cxl_memdev(A, 12)
    fake_kernel.add_cxl_window([12], start=0x1_1000_0000)
    fake_kernel.add_cxl_window([52], start=0x2_1000_0000)
    fake_kernel.add_cxl_window([12, 52], start=0x3_1000_0000, granularity=8192)
    return fake_kernel


def listed(capsys: pytest.CaptureFixture[str], kernel: FakeKernel, policy: Path) -> Ran:
    ran = daxd(capsys, kernel, policy, "list", "--json")
    assert ran.code == 0
    return ran


def test_list_json_has_a_cxl_object_null_for_others(
    capsys: pytest.CaptureFixture[str], lab: FakeKernel, tmp_path: Path
) -> None:
    lab.add_cxl_device(size=256 * MiB, serials=[B], window="decoder0.1")
    found = devices(listed(capsys, lab, write_policy(tmp_path, POLICY)).json())
    assert found["dax0.0"]["cxl"] is None
    assert found["dax2.0"]["cxl"] == ONE
    assert list(found["dax2.0"]["cxl"]) == list(CXL.keys)
    assert list(found["dax2.0"]["cxl"]["memdevs"][0]) == list(CXL.nested["memdevs"].keys)
    assert found["dax2.0"]["rule"] == "by-serial"
    keys = list(found["dax2.0"])
    assert keys.index("cxl") == keys.index("uuid") + 1


def test_list_json_of_an_interleave(
    capsys: pytest.CaptureFixture[str], lab: FakeKernel, tmp_path: Path
) -> None:
    lab.add_cxl_device(size=512 * MiB, serials=[A, B], window="decoder0.2")
    found = devices(listed(capsys, lab, write_policy(tmp_path, POLICY)).json())
    assert found["dax3.0"]["cxl"] == BOTH
    assert found["dax3.0"]["rule"] == "interleaved"


def test_list_text_shows_the_identity_below_the_row(
    capsys: pytest.CaptureFixture[str], lab: FakeKernel, tmp_path: Path
) -> None:
    lab.add_cxl_device(size=512 * MiB, serials=[A, B], window="decoder0.2")
    ran = daxd(capsys, lab, write_policy(tmp_path, POLICY), "list")
    lines = ran.out.splitlines()
    assert lines[1].split()[0] == "dax0.0"
    assert lines[2].split()[:2] == ["dax3.0", "cxl"]
    assert lines[3] == "  cxl: region3 decoder0.2 x2 serial 0x1000@hb12,0x1001@hb52"
    assert len(lines) == 4  # nothing below the pmem device


@pytest.mark.parametrize(
    ("record", "text"),
    [
        (ONE, "region2 decoder0.1 x1 serial 0x1001@hb52"),
        (BOTH, "region3 decoder0.2 x2 serial 0x1000@hb12,0x1001@hb52"),
        (
            {**ONE, "interleave_ways": None, "memdevs": [{"position": 0}]},
            "region2 decoder0.1 x? serial ?@?",
        ),
        (
            {**ONE, "memdevs": [{**ONE["memdevs"][0], "host_bridge_uid": None}]},
            "region2 decoder0.1 x1 serial 0x1001@pci0000:34",
        ),
        ({**ONE, "memdevs": []}, "region2 decoder0.1 x1 serial ?"),
    ],
)
def test_the_one_line_form(record: dict[str, Any], text: str) -> None:
    assert cxl_text(record) == text


def test_plan_and_apply_json_carry_it_and_the_dbus_record_too(
    capsys: pytest.CaptureFixture[str], lab: FakeKernel, tmp_path: Path
) -> None:
    lab.add_cxl_device(size=256 * MiB, serials=[B], window="decoder0.1")
    policy = write_policy(tmp_path, POLICY)
    plan = devices(daxd(capsys, lab, policy, "plan", "--json").json())
    assert plan["dax2.0"]["cxl"] == ONE
    assert plan["dax0.0"]["cxl"] is None
    ran = daxd(capsys, lab, policy, "apply", "--json", "dax2.0")
    assert ran.code == 0, ran.err
    (entry,) = ran.json()["devices"]
    assert (entry["outcome"], entry["cxl"]) == ("applied", ONE)
    assert tuple(entry) == APPLY_ENTRY.keys
    wire = to_dbus(entry)
    cxl = wire["cxl"]
    assert cxl.signature == "a{sv}"
    assert cxl.value["interleave_ways"] == Variant("u", 1)
    assert cxl.value["window_start"] == Variant("s", "0x210000000")
    assert "uuid" not in cxl.value  # null: left out
    (memdev,) = cxl.value["memdevs"].value
    assert memdev == {
        "position": Variant("u", 0),
        "memdev": Variant("s", "mem0"),
        "serial": Variant("t", B),
        "host_bridge": Variant("s", "pci0000:34"),
        "host_bridge_uid": Variant("u", 52),
    }
    assert json.dumps(apply_entry_from_dbus(wire)) == json.dumps(entry)


def test_a_record_without_memdevs_keeps_its_list_type() -> None:
    wire = to_dbus({"cxl": {**ONE, "memdevs": []}})
    assert wire["cxl"].value["memdevs"] == Variant("aa{sv}", [])


def test_status_text_names_the_identity() -> None:
    manager = {"Version": "0.1.0", "Summary": "2 device(s)", "PolicyPath": "/etc/daxd/p.yaml"}
    base = {
        "Provider": "cxl", "Size": 256 << 20, "Mode": "devdax", "Zone": "none",
        "BlocksOnline": 0, "BlocksTotal": 0, "State": "applied", "Rule": "by-serial",
    }  # fmt: skip
    text = status_text(
        manager, [{**base, "Name": "dax0.0", "Cxl": {}}, {**base, "Name": "dax2.0", "Cxl": ONE}]
    )
    assert "dax2.0: cxl: region2 decoder0.1 x1 serial 0x1001@hb52" in text.splitlines()
    assert "dax0.0: cxl" not in text


def test_status_shows_each_region_before_the_devices_and_lists_them_in_json() -> None:
    manager = {"Version": "0.1.0", "Summary": "1 device(s)", "PolicyPath": "/etc/daxd/p.yaml"}
    dev = {
        "Name": "dax2.0", "Provider": "cxl", "Size": 512 << 20, "Mode": "system-ram",
        "Zone": "movable", "BlocksOnline": 4, "BlocksTotal": 4, "State": "applied", "Cxl": {},
    }  # fmt: skip
    pair = {
        "Name": "pair", "State": "present", "Region": "region2", "Reason": "region2 exists",
        "LastError": "", "Size": 512 << 20,
    }  # fmt: skip
    late = {"Name": "late", "State": "waiting", "Region": "", "Reason": "waiting for serial 0x2000"}
    broken = {"Name": "b", "State": "failed", "Region": "region3", "Reason": "create region3",
              "LastError": "commit: EBUSY"}  # fmt: skip
    lines = status_text(manager, [dev], [pair, late, broken]).splitlines()
    regions = [ln for ln in lines if ln.startswith("region ")]
    assert regions == [
        "region pair: present (region2): region2 exists",
        "region late: waiting: waiting for serial 0x2000",
        "region b: failed (region3): create region3; error: commit: EBUSY",
    ]
    assert lines.index(regions[-1]) < next(i for i, ln in enumerate(lines) if "DEVICE" in ln)
    assert not [ln for ln in status_text(manager, [dev]).splitlines() if ln.startswith("region")]
    doc = json.loads(status_json(manager, [dev], [pair]))
    assert doc["regions"] == [pair]
    assert doc["devices"] == [dev]
    assert json.loads(status_json(manager, [dev]))["regions"] == []

"""The policy's CXL regions through the command: `daxd plan` shows the writes, `daxd apply`
builds the region and applies the rules to the dax device it brings in the same run, a second
apply writes nothing, `state: absent` takes the memory offline and tears the region down, and
`daxd list` shows regions and capacity in no region."""

from __future__ import annotations

from pathlib import Path

import pytest

from daxd.cli import exitcodes
from daxd.kernel.cxl_topology import read_cxl_topology
from tests.apply.test_cxl_region_apply import A, B, machine
from tests.cli.helpers import daxd, devices
from tests.fakekernel import FakeKernel
from tests.plan.helpers import write_policy

POLICY = """\
regions:
  - name: pair
    memdevs: [0x1001, 0x1000]
rules:
  - name: pair-as-devdax
    match: {interleave_ways: 2}
    mode: devdax
"""


def test_plan_shows_the_region_and_its_writes(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    ran = daxd(capsys, fake_kernel, write_policy(tmp_path, POLICY), "plan", "--json")
    assert ran.code == exitcodes.OK, ran.err
    (region,) = ran.json()["regions"]
    assert (region["name"], region["verdict"], region["region"], region["window"]) == (
        "pair",
        "create",
        "region2",
        "decoder0.2",
    )
    assert region["memdevs"] == ["mem1 (serial 0x1000)", "mem0 (serial 0x1001)"]
    assert region["steps"][0] == {
        "action": "create-region",
        "path": "bus/cxl/devices/decoder0.2/create_ram_region",
        "value": "region2",
        "reason": "a RAM region in decoder0.2",
    }
    assert fake_kernel.writes == []  # a plan writes nothing
    text = daxd(capsys, fake_kernel, write_policy(tmp_path, POLICY), "plan").out
    assert text.startswith("region pair: create (")
    assert "write 'region2' to bus/cxl/devices/decoder0.2/create_ram_region" in text


def test_apply_builds_the_region_then_applies_the_rules(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    policy = write_policy(tmp_path, POLICY)
    ran = daxd(capsys, fake_kernel, policy, "apply", "--json")
    assert ran.code == exitcodes.OK, ran.out + ran.err
    doc = ran.json()
    (region,) = doc["regions"]
    assert region["outcome"] == "applied"
    assert region["devices"] == ["dax2.0"]
    assert all(s["ok"] for s in region["steps"])
    dev = devices(doc)["dax2.0"]
    assert dev["outcome"] == "applied"
    assert fake_kernel.devices["dax2.0"].driver == "device_dax"  # from kmem, by the rule
    writes = len(fake_kernel.writes)
    again = daxd(capsys, fake_kernel, policy, "apply", "--json")
    assert again.code == exitcodes.OK
    assert again.json()["regions"][0]["outcome"] == "in-sync"
    assert len(fake_kernel.writes) == writes


def test_a_missing_memdev_is_reported_not_built(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    policy = write_policy(tmp_path, POLICY.replace("0x1000]", "0x2000]"))
    ran = daxd(capsys, fake_kernel, policy, "apply")
    assert ran.code == exitcodes.REFUSED
    assert "region pair: waiting (" in ran.out
    assert "waiting for serial 0x2000: not on the cxl bus" in ran.out
    assert fake_kernel.writes == []


def test_absent_takes_the_memory_offline_then_the_region_down(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel).add_cxl_device(size=512 << 20, serials=[A, B], window="decoder0.2")
    assert any(b.online for b in fake_kernel.blocks_of("dax2.0"))
    policy = write_policy(tmp_path, POLICY.replace("0x1000]", "0x1000]\n    state: absent"))
    ran = daxd(capsys, fake_kernel, policy, "apply", "--json")
    assert ran.code == exitcodes.OK, ran.out + ran.err
    doc = ran.json()
    assert devices(doc)["dax2.0"]["plan"]["rule"] == "region pair (state: absent)"
    (region,) = doc["regions"]
    assert region["outcome"] == "applied"
    assert region["verdict"] == "destroy"
    assert read_cxl_topology(fake_kernel.sysfs).regions == ()
    assert fake_kernel.devices == {}
    assert fake_kernel.leaks == []


def test_list_shows_regions_and_capacity_in_no_region(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    ran = daxd(capsys, fake_kernel, write_policy(tmp_path, POLICY), "list")
    assert ran.code == exitcodes.OK
    assert "region pair: create (" in ran.out
    assert "cxl: mem1 (serial 0x1000): 256M of RAM capacity in no region" in ran.out
    doc = daxd(capsys, fake_kernel, write_policy(tmp_path, POLICY), "list", "--json").json()
    assert [m["serial"] for m in doc["cxl"]["memdevs"]] == [B, A]
    assert doc["cxl"]["regions"] == []
    assert len(doc["cxl"]["problems"]) == 2

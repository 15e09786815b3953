"""The acceptance check, through the command only.

"daxd plan/apply against the fake kernel convert a devdax device to system-ram movable with
memmap_on_memory and back, fix a wrong-zone auto-online, refuse pmem without consent."
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import daxd, devices
from tests.fakekernel import FakeKernel
from tests.plan.helpers import write_policy

TO_RAM = """\
version: 1
rules:
  - name: pmem-as-ram
    match: {device: dax0.0}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
    allow_pmem_data_loss: true
  - name: pmem-no-consent
    match: {provider: pmem}
    mode: system-ram
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
"""
BACK = TO_RAM.replace(
    """    mode: system-ram
    zone: movable
    memmap_on_memory: true
    allow_pmem_data_loss: true
""",
    "    mode: devdax\n",
    1,
)


def test_acceptance(
    capsys: pytest.CaptureFixture[str], fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")  # memory_hotplug.memmap_on_memory=1
    kernel.add_pmem_device()  # dax0.0: devdax, consent given
    kernel.add_pmem_device()  # dax1.0: devdax, no consent
    kernel.add_hmem_device()  # dax2.0: kmem took it at boot, auto-onlined into Normal
    policy = write_policy(tmp_path, TO_RAM)
    assert daxd(capsys, kernel, policy, "check").code == 0

    # plan: says what it would do, and does nothing.
    ran = daxd(capsys, kernel, policy, "plan", "--json")
    assert ran.code == 0
    plan = devices(ran.json())
    assert plan["dax0.0"]["verdict"] == "change"
    assert [s["action"] for s in plan["dax0.0"]["steps"]] == [
        "unbind",
        "remove-id",
        "set-memmap-on-memory",
        "set-auto-online",  # the kernel would online them in Normal (auto_online_blocks=online)
        "new-id",
        "restore-auto-online",
        "remove-id",  # bound: kmem keeps no id for it
    ]
    assert plan["dax1.0"]["verdict"] == "refused"
    assert plan["dax1.0"]["steps"] == []
    assert "allow_pmem_data_loss" in plan["dax1.0"]["reason"]
    assert plan["dax2.0"]["verdict"] == "change"
    assert {s["action"] for s in plan["dax2.0"]["steps"]} == {"offline-block", "online-block"}
    assert kernel.writes == []

    # apply: dax0.0 becomes movable RAM with memmap_on_memory, dax2.0 moves to Movable, dax1.0 is
    # refused (exit 4: nothing failed, a rule was not applied because it would be unsafe).
    ran = daxd(capsys, kernel, policy, "apply", "--json")
    assert ran.code == 4
    applied = devices(ran.json())
    assert {n: d["outcome"] for n, d in applied.items()} == {
        "dax0.0": "applied",
        "dax1.0": "refused",
        "dax2.0": "applied",
    }
    assert applied["dax1.0"]["steps"] == []

    listed = devices(daxd(capsys, kernel, policy, "list", "--json").json())
    ram = listed["dax0.0"]
    assert (ram["mode"], ram["driver"], ram["zone"], ram["memmap_on_memory"]) == (
        "system-ram",
        "kmem",
        "movable",
        True,
    )
    assert ram["blocks"] == {"online": 7, "total": 7}
    assert (listed["dax1.0"]["mode"], listed["dax1.0"]["blocks"]["total"]) == ("devdax", 0)
    hmem = listed["dax2.0"]
    assert (hmem["mode"], hmem["zone"], hmem["blocks"]) == (
        "system-ram",
        "movable",
        {"online": 16, "total": 16},
    )
    # ... and sysfs itself agrees.
    assert kernel.sysfs.read("bus/dax/devices/dax0.0/memmap_on_memory") == "1"
    for i in range(33, 40):
        assert kernel.sysfs.read(f"devices/system/memory/memory{i}/valid_zones") == "Movable"

    # The plan is now in sync for what could be done; the refusal stands.
    plan = devices(daxd(capsys, kernel, policy, "plan", "--json").json())
    assert {n: d["verdict"] for n, d in plan.items()} == {
        "dax0.0": "in-sync",
        "dax1.0": "refused",
        "dax2.0": "in-sync",
    }

    # And back: dax0.0 is a character device again, its memory hot-removed.
    back = write_policy(tmp_path, BACK, "back.yaml")
    ran = daxd(capsys, kernel, back, "apply", "dax0.0")
    assert ran.code == 0
    assert ran.out.splitlines()[0] == "dax0.0: applied (rule 'pmem-as-ram')"
    listed = devices(daxd(capsys, kernel, back, "list", "--json").json())
    assert (listed["dax0.0"]["mode"], listed["dax0.0"]["blocks"]) == (
        "devdax",
        {"online": 0, "total": 0},
    )
    assert not any(kernel.sysfs.exists(f"devices/system/memory/memory{i}") for i in range(33, 40))
    assert listed["dax2.0"]["zone"] == "movable"  # untouched
    assert daxd(capsys, kernel, back, "plan", "--json").json()["devices"][0]["verdict"] == "in-sync"

    assert kernel.leaks == []
    assert kernel.sigbus == []
    assert kernel.untimed_blocking_writes == []

"""The `daxd` command against the fake kernel: exit codes, text and JSON output (docs/cli.md)."""

from __future__ import annotations

import errno
import re
import stat
from pathlib import Path

import pytest

from daxd.cli.main import main
from tests.cli.helpers import daxd, devices, kernel_root
from tests.fakekernel import FakeKernel
from tests.plan.helpers import (
    DEVDAX,
    PMEM_RAM_MEMMAP,
    RAM_MOVABLE,
    blocks,
    device_block_indices,
    driver,
    walk_order,
    write_policy,
)

PMEM_RAM = "rules:\n  - name: pmem-ram\n    mode: system-ram\n    allow_pmem_data_loss: true\n"
CXL_RAM = "rules:\n  - name: cxl-ram\n    match: {provider: cxl}\n    mode: system-ram\n"
NO_CONSENT = "rules:\n  - name: pmem-ram\n    mode: system-ram\n"
BROKEN = """\
version: 1
rules:
  - name: cxl
    match: {provider: cxl}
    mode: system-ram
    zon: normal
  - mode: system-ram
    online: yes
"""
LIST_FIELDS = {
    "name",
    "region",
    "provider",
    "size",
    "numa_node",
    "target_node",
    "resource",
    "ranges",
    "namespace",
    "uuid",
    "mode",
    "driver",
    "zone",
    "memmap_on_memory",
    "memmap_on_memory_attribute",
    "blocks",
    "rule",
}
PLAN_FIELDS = {"verdict", "rule_location", "reason", "desired", "steps", "notes"}
APPLY_FIELDS = {"outcome", "error", "plan", "steps", "final"}


# --- check ---------------------------------------------------------------------------------------
def test_check_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_policy(tmp_path, PMEM_RAM_MEMMAP)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"{path}: valid, 1 rule(s)\n"


def test_check_defaults_to_the_policy_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_policy(tmp_path, DEVDAX + "  - mode: ignore\n")
    assert main(["--policy", str(path), "check"]) == 0
    assert "valid, 2 rule(s)" in capsys.readouterr().out


def test_check_broken_lists_every_error_with_a_caret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_policy(tmp_path, BROKEN)
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    located = [
        i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(str(path))}:\d+:\d+: ", ln)
    ]
    assert [lines[i].split(": ", 1)[0] for i in located] == [f"{path}:6:5", f"{path}:8:13"]
    assert "did you mean 'zone'?" in lines[located[0]]
    assert "'online' must be true or false" in lines[located[1]]
    # Each is followed by the line as written and a caret under the column.
    for i in located:
        col = int(lines[i].split(":")[2])
        source, caret = lines[i + 1], lines[i + 2]
        assert caret == " " * (col - 1) + "^"
        assert source in BROKEN.splitlines()
    assert lines[located[0] + 1] == "    zon: normal"


def test_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"{path}: no such file"
    assert "Traceback" not in captured.err


def test_check_reads_drop_ins(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_policy(tmp_path, DEVDAX)
    (tmp_path / "policy.d").mkdir()
    bad = write_policy(tmp_path / "policy.d", "rules:\n  - mode: sometimes\n", "10-x.yaml")
    assert main(["check", str(path)]) == 1
    assert f"{bad}:2:11: " in capsys.readouterr().err


# --- list -------------------------------------------------------------------------------------
def test_list_text(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, CXL_RAM)
    ran = daxd(capsys, mixed_kernel, policy, "list")
    assert ran.code == 0
    # Columns are padded to the widest cell; compare with single spaces.
    rows = [" ".join(ln.split()) for ln in ran.out.splitlines()]
    assert rows[0] == "DEVICE PROVIDER SIZE TARGET-NODE MODE ZONE MEMMAP BLOCKS RULE"
    assert ran.out.splitlines()[0].startswith("DEVICE  PROVIDER  SIZE")
    # A CXL device's identity on a line of its own below its row (tests/cli/test_cxl_output.py)
    assert rows[4] == rows[6] == "cxl: region2 decoder0.0 x1 serial 0x1000@hb12"
    by_name = {r.split()[0]: r for r in rows[1:] if not r.startswith("cxl: ")}
    assert by_name["dax0.0"] == "dax0.0 pmem 1006 MiB 1 devdax - no 0/0 -"
    assert by_name["dax1.0"] == "dax1.0 hmem 2 GiB 1 system-ram normal no 16/16 -"
    # memmap_on_memory reads 1 on CXL, but not in effect: memory_hotplug.memmap_on_memory is N
    assert by_name["dax2.0"] == "dax2.0 cxl 4 GiB 2 system-ram normal no 32/32 cxl-ram"
    assert by_name["dax2.1"] == "dax2.1 cxl 0 B 2 unbound - no 0/0 cxl-ram"
    assert list(by_name) == ["dax0.0", "dax1.0", "dax2.0", "dax2.1"]


def test_list_json(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, CXL_RAM)
    ran = daxd(capsys, mixed_kernel, policy, "list", "--json")
    assert ran.code == 0
    doc = ran.json()
    assert doc["format"] == 1
    assert doc["kind"] == "list"
    assert doc["hotplug"] == {
        "block_size": 128 << 20,
        "auto_online_blocks": "online",
        "memmap_on_memory": False,
        "online_policy": "contig-zones",
    }
    assert doc["legacy_device_model"] is False
    found = devices(doc)
    assert list(found) == ["dax0.0", "dax1.0", "dax2.0", "dax2.1"]
    for entry in found.values():
        assert set(entry) >= LIST_FIELDS
    pmem, hmem, cxl, seed = found.values()
    assert (pmem["provider"], pmem["mode"], pmem["driver"], pmem["zone"]) == (
        "pmem",
        "devdax",
        "device_dax",
        None,
    )
    assert pmem["memmap_on_memory"] is False
    assert pmem["blocks"] == {"online": 0, "total": 0}
    assert pmem["size"] == 1054867456
    assert pmem["namespace"] == "namespace0.0"
    assert pmem["rule"] is None
    assert pmem["ranges"] == [
        {"start": pmem["resource"], "end": hex(int(pmem["resource"], 16) + 1054867456 - 1)}
    ]
    assert (hmem["provider"], hmem["mode"], hmem["zone"]) == ("hmem", "system-ram", "normal")
    assert hmem["blocks"] == {"online": 16, "total": 16}
    assert (cxl["provider"], cxl["rule"]) == ("cxl", "cxl-ram")
    # The attribute reads 1 (cxl.c), but the global parameter is N: not in effect.
    assert (cxl["memmap_on_memory"], cxl["memmap_on_memory_attribute"]) == (False, True)
    assert (pmem["memmap_on_memory"], pmem["memmap_on_memory_attribute"]) == (False, False)
    assert cxl["target_node"] == 2
    assert (seed["size"], seed["mode"], seed["driver"]) == (0, "unbound", None)


def test_list_with_an_invalid_policy_still_lists(
    capsys: pytest.CaptureFixture[str], hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, BROKEN)
    ran = daxd(capsys, hmem_kernel, policy, "list")
    assert ran.code == 0
    assert ran.err.startswith(f"daxd: warning: policy not used: {policy}:6:5: unknown key")
    assert "Traceback" not in ran.err
    row = ran.out.splitlines()[1].split()
    assert row[0] == "dax0.0"
    assert row[-1] == "-"
    ran = daxd(capsys, hmem_kernel, policy, "list", "--json")
    assert ran.code == 0
    assert devices(ran.json())["dax0.0"]["rule"] is None


def test_list_without_devices(
    capsys: pytest.CaptureFixture[str], fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    ran = daxd(capsys, fake_kernel, write_policy(tmp_path, DEVDAX), "list")
    assert (ran.code, ran.out) == (0, "no DAX devices\n")


# --- plan ---------------------------------------------------------------------------------------
def test_plan_json_steps_and_verdicts(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path,
        "rules:\n"
        "  - name: no-consent\n    match: {provider: pmem}\n    mode: system-ram\n"
        "  - name: hmem-movable\n    match: {provider: hmem}\n    mode: system-ram\n"
        "  - name: cxl-auto\n    match: {provider: cxl}\n    mode: system-ram\n    zone: auto\n",
    )
    ran = daxd(capsys, mixed_kernel, policy, "plan", "--json")
    assert ran.code == 0
    doc = ran.json()
    assert (doc["format"], doc["kind"]) == (1, "plan")
    found = devices(doc)
    for entry in found.values():
        assert set(entry) >= LIST_FIELDS | PLAN_FIELDS
    pmem, hmem, cxl, seed = (found[n] for n in ("dax0.0", "dax1.0", "dax2.0", "dax2.1"))
    assert (pmem["verdict"], pmem["steps"], pmem["rule"]) == ("refused", [], "no-consent")
    assert "allow_pmem_data_loss" in pmem["reason"]
    assert pmem["rule_location"] == f"{policy}:2"
    assert hmem["verdict"] == "change"
    assert hmem["desired"] == {
        "mode": "system-ram",
        "zone": "movable",
        "memmap_on_memory": None,
        "online": True,
    }
    indices = device_block_indices(mixed_kernel, "dax1.0")
    first = walk_order(indices)[0]
    assert hmem["steps"][:2] == [
        {
            "action": "offline-block",
            "path": f"devices/system/memory/memory{first}/state",
            "value": "offline",
            "block": first,
            "driver": None,
            "reason": "online in normal, the rule wants movable",
        },
        {
            "action": "online-block",
            "path": f"devices/system/memory/memory{first}/state",
            "value": "online_movable",
            "block": first,
            "driver": None,
            "reason": "online in normal, the rule wants movable",
        },
    ]
    assert len(hmem["steps"]) == 2 * len(indices)
    assert (cxl["verdict"], cxl["steps"], cxl["reason"]) == (
        "in-sync",
        [],
        "system-ram as the rule wants",
    )
    assert seed["verdict"] == "unmanaged"
    assert mixed_kernel.writes == []


def test_plan_text_for_chosen_devices(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, RAM_MOVABLE)
    ran = daxd(capsys, mixed_kernel, policy, "plan", "dax1.0")
    assert ran.code == 0
    lines = ran.out.splitlines()
    assert lines[0] == f"dax1.0: change (rule 'ram' at {policy}:2)"
    assert lines[1] == (
        "  1. memory40..memory55 (16 blocks): offline, online_movable  "
        "# online in normal, the rule wants movable"
    )
    assert "dax0.0" not in ran.out
    assert mixed_kernel.writes == []


def test_plan_with_an_invalid_policy_is_exit_1(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, BROKEN), "plan")
    assert ran.code == 1
    assert ran.out == ""
    assert f"{tmp_path / 'policy.yaml'}:6:5:" in ran.err


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_unknown_device_is_exit_2(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path, command: str
) -> None:
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), command, "dax0.0", "dax9.9")
    assert ran.code == 2
    assert ran.err == "daxd: no such DAX device: dax9.9\n"
    assert pmem_kernel.writes == []
    assert driver(pmem_kernel) == "device_dax"


# --- apply ------------------------------------------------------------------------------------
def test_apply_exit_0_when_applied(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply")
    assert ran.code == 0
    assert ran.out.splitlines()[0] == "dax0.0: applied (rule 'pmem-ram')"
    assert ran.out.splitlines()[-1] == "  now: system-ram, zone movable, 7/7 blocks online"
    assert driver(pmem_kernel) == "kmem"
    # Again: nothing to do, still 0.
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply")
    assert ran.code == 0
    assert ran.out.startswith("dax0.0: in-sync")


def test_apply_exit_4_when_refused(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, NO_CONSENT), "apply")
    assert ran.code == 4
    assert ran.out.splitlines()[0] == "dax0.0: refused (rule 'pmem-ram')"
    assert "allow_pmem_data_loss" in ran.out
    assert pmem_kernel.writes == []


def test_apply_exit_3_when_a_step_fails(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    stuck = device_block_indices(mixed_kernel, "dax1.0")[3]
    mixed_kernel.block_offline_fails(stuck, errno.EBUSY)
    # dax0.0 is refused (no consent) and dax1.0 fails: failure wins, 3.
    ran = daxd(
        capsys, mixed_kernel, write_policy(tmp_path, RAM_MOVABLE), "apply", "--offline-timeout", "2"
    )
    assert ran.code == 3
    assert "dax0.0: refused (rule 'ram')" in ran.out
    assert "dax1.0: failed (rule 'ram')" in ran.out
    path = f"devices/system/memory/memory{stuck}/state"
    assert (
        f"memory{stuck}: offline FAILED: writing 'offline' to {path} failed with EBUSY" in ran.out
    )
    assert "dax2.0: applied (rule 'ram')" in ran.out
    assert mixed_kernel.leaks == []


def test_apply_json(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply", "--json")
    assert ran.code == 0
    doc = ran.json()
    assert (doc["format"], doc["kind"]) == (1, "apply")
    (entry,) = doc["devices"]
    assert set(entry) >= LIST_FIELDS | APPLY_FIELDS
    assert entry["name"] == "dax0.0"
    assert (entry["outcome"], entry["error"]) == ("applied", None)
    assert entry["plan"]["verdict"] == "change"
    bind = ["unbind", "remove-id", "set-auto-online", "new-id", "restore-auto-online"]
    bind.append("remove-id")  # kmem's id out again once bound
    assert [s["action"] for s in entry["plan"]["steps"]] == bind
    # bound with auto-onlining off: each block onlined once, straight into Movable
    assert [s["action"] for s in entry["steps"]] == bind + ["online-block"] * 7
    fields = {"action", "path", "value", "block", "driver", "reason"}
    fields |= {"ok", "error", "errno", "rollback"}
    drivers = ["device_dax", "device_dax", None, "kmem", None, "kmem", *[None] * 7]
    assert [s["driver"] for s in entry["steps"]] == drivers
    for s in entry["steps"]:
        assert set(s) == fields
        assert (s["ok"], s["error"], s["errno"], s["rollback"]) == (True, None, None, False)
    assert entry["final"] == {
        "mode": "system-ram",
        "driver": "kmem",
        "zone": "movable",
        "memmap_on_memory": False,
        "memmap_on_memory_attribute": False,
        "blocks": {"online": 7, "total": 7},
    }
    # The device fields describe what was there before.
    assert (entry["mode"], entry["driver"]) == ("devdax", "device_dax")


def test_apply_json_failure_names_the_errno_and_the_undo(
    capsys: pytest.CaptureFixture[str], hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    order = walk_order(device_block_indices(hmem_kernel))
    hmem_kernel.block_offline_fails(order[2], errno.EBUSY)
    ran = daxd(capsys, hmem_kernel, write_policy(tmp_path, DEVDAX), "apply", "--json")
    assert ran.code == 3
    (entry,) = ran.json()["devices"]
    assert entry["outcome"] == "failed"
    assert "EBUSY" in entry["error"]
    steps = entry["steps"]
    assert [(s["block"], s["ok"], s["errno"], s["rollback"]) for s in steps] == [
        (order[0], True, None, False),
        (order[1], True, None, False),
        (order[2], False, "EBUSY", False),
        (order[1], True, None, True),
        (order[0], True, None, True),
    ]
    assert entry["final"]["mode"] == "system-ram"
    assert entry["final"]["blocks"] == {"online": 16, "total": 16}
    assert driver(hmem_kernel) == "kmem"
    assert {b.state for b in blocks(hmem_kernel)} == {"online"}


def test_apply_names_the_process_using_the_device(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    pmem_kernel.open_device(3131, "redis-server", "dax0.0", mapped=True)
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply")
    assert ran.code == 3
    assert "redis-server (pid 3131)" in ran.out
    assert pmem_kernel.sigbus == []
    assert driver(pmem_kernel) == "device_dax"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be between 0 and 86400 seconds: '0'"),
        ("-1", "must be between 0 and 86400 seconds: '-1'"),
        ("nan", "must be between 0 and 86400 seconds: 'nan'"),
        ("soon", "not a number: 'soon'"),
    ],
)
def test_bad_offline_timeout_is_exit_2(
    capsys: pytest.CaptureFixture[str],
    pmem_kernel: FakeKernel,
    tmp_path: Path,
    value: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit) as info:
        daxd(
            capsys,
            pmem_kernel,
            write_policy(tmp_path, PMEM_RAM),
            "apply",
            f"--offline-timeout={value}",
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"daxd apply: error: argument --offline-timeout: {message}" in err
    assert pmem_kernel.writes == []


# --- migrate-device-model ---------------------------------------------------------------------
def test_migrate_device_model_installs_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "etc/modprobe.d/daxd-device-model.conf"
    assert main(["migrate-device-model", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"installed {target}")
    text = target.read_text()
    assert "blacklist dax_pmem_compat\n" in text
    assert "alias nd:t5* dax_pmem\n" in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert main(["migrate-device-model", "--root", str(tmp_path)]) == 0
    assert "already installed" in capsys.readouterr().out
    assert target.read_text() == text
    assert sorted(p.name for p in target.parent.iterdir()) == ["daxd-device-model.conf"]


def test_migrate_device_model_respects_daxctl(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "etc/modprobe.d"
    folder.mkdir(parents=True)
    (folder / "daxctl.conf").write_text("blacklist dax_pmem_compat\nalias nd:t5* dax_pmem\n")
    assert main(["migrate-device-model", "--root", str(tmp_path)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not (folder / "daxd-device-model.conf").exists()


def test_apply_text_says_how_far_it_got_and_what_was_undone(
    capsys: pytest.CaptureFixture[str], hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    # 16 blocks, offlined second, last..third, first: 10 go before the 7th from the bottom
    first = device_block_indices(hmem_kernel)[0]
    stuck = first + 6
    hmem_kernel.block_offline_fails(stuck, errno.EBUSY)
    ran = daxd(capsys, hmem_kernel, write_policy(tmp_path, DEVDAX), "apply")
    assert ran.code == 3
    lines = ran.out.splitlines()
    assert lines[0] == "dax0.0: failed (rule 'keep-devdax')"
    done = f"10 blocks between memory{first + 1} and memory{first + 15}"
    assert lines[1].startswith(f"  {done}: offline ok  # ")
    assert lines[2].startswith(f"  memory{stuck}: offline FAILED: writing 'offline' to ")
    # The undo, in the reverse order, one line for all of it.
    assert lines[3] == (
        f"  {done}: online_kernel (undo) ok  # undo: the conversion failed, give the memory back"
    )
    assert lines[4].startswith(f"  writing 'offline' to devices/system/memory/memory{stuck}/state")
    assert lines[5] == "  now: system-ram, zone normal, 16/16 blocks online"
    assert len(lines) == 6


def test_apply_puts_back_auto_online_from_the_runtime_dir(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    auto = "devices/system/memory/auto_online_blocks"
    record = kernel_root(pmem_kernel) / "run" / "daxd" / "auto_online_blocks.switched"
    pmem_kernel.sysfs.write(auto, "offline")
    record.parent.mkdir(parents=True)
    record.write_text("online offline 999999999\n")
    policy = write_policy(tmp_path, DEVDAX)
    ran = daxd(capsys, pmem_kernel, policy, "apply")  # --root-dir: its run/daxd
    assert ran.code == 0
    assert "daxd: put auto_online_blocks back to online" in ran.err
    assert pmem_kernel.sysfs.read(auto) == "online"
    assert not record.exists()
    # A bare --sysfs tree (a dump) has no runtime folder: nothing is looked at.
    pmem_kernel.sysfs.write(auto, "offline")
    record.write_text("online offline 999999999\n")
    argv = ["--sysfs", str(pmem_kernel.sysfs_root), "--policy", str(policy), "apply"]
    assert main(argv, sysfs=pmem_kernel.sysfs) == 0
    assert pmem_kernel.sysfs.read(auto) == "offline"
    assert record.exists()

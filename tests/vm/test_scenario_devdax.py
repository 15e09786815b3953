"""Scenario 6: system-ram back to devdax, with memory the kernel will not give back.

One boot from the disk with daxd installed, two NVDIMMs, both turned into system RAM by daxd
(dax0.0 in ZONE_NORMAL, dax1.0 in ZONE_MOVABLE). Two honest ways to make a block impossible to
offline (tests/vm/guest/share/pin.py):

- **EBUSY**: a process bound to dax0.0's node (MPOL_BIND) touches 512 MiB of address space
  sparsely, so the kernel allocates page tables there. Page tables are unmovable kernel memory,
  and only dax0.0's ZONE_NORMAL blocks can hold them. A reload with a devdax policy: dax1.0
  becomes devdax; dax0.0 fails on the block with EBUSY, kmem stays bound with every block online
  (no leak), and daxd says so (State=failed, LastError naming the block and EBUSY).
- **a block that keeps the kernel busy**: a page of dax1.0's last block (daxd stopped, dax1.0
  made system RAM again with ``daxd apply``) is vmsplice()d into a pipe nobody reads. Migrating it
  fails forever, so offlining that block loops in the kernel. ``daxd apply --offline-timeout 5``
  interrupts it, puts the blocks it had offlined back online (movable), keeps kmem bound and
  exits 3; once the pipe is gone, ``daxd apply`` makes dax1.0 devdax and /dev/dax1.0 works.

/proc/iomem never shows a "System RAM (kmem)" range without its dax device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.vm import facts as f
from tests.vm.lab import Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

DEVDAX_IO = r"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 2 * 1024 * 1024, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:8] = b"daxd-lab"
assert m[:8] == b"daxd-lab"
print("ok")
"""

SCRIPT = r"""
set -euo pipefail
lab_wait_booted
lab_policy <<'EOF'
version: 1
rules:
  - name: first-as-normal-ram
    match: {device: dax0.0}
    mode: system-ram
    zone: normal
    allow_pmem_data_loss: true
  - name: second-as-movable-ram
    match: {device: dax1.0}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
EOF
lab_devdax namespace0.0 > /dev/null
lab_devdax namespace1.0 > /dev/null
lab_wait_until 120 lab_state_is dax0.0 applied
lab_wait_until 60 lab_state_is dax1.0 applied
lab_snapshot ram dax0.0 dax1.0

# --- EBUSY: page tables in dax0.0's Normal blocks, then a reload that wants devdax --------------
node=$(cat /sys/bus/dax/devices/dax0.0/target_node)
python3 "$LAB_IN/pin.py" pagetables "$node" 256 > /run/pin-pagetables.txt &
pinner=$!
lab_wait_until 60 test -s /run/pin-pagetables.txt
lab_fact pagetables.pinned "$(cat /run/pin-pagetables.txt)"
lab_fact pagetables.node "$(grep ' PageTables:' /sys/devices/system/node/node$node/meminfo)"
lab_policy <<'EOF'
version: 1
rules:
  - name: all-devdax
    match: {provider: pmem}
    mode: devdax
EOF
lab_journal_mark reload
lab_call reload systemctl reload daxd.service
for dev in dax0.0 dax1.0; do
    for prop in State LastError Mode Driver BlocksOnline BlocksTotal; do
        lab_fact "ebusy.$dev.$prop" "$(lab_prop $dev $prop)"
    done
done
lab_snapshot after-reload dax0.0 dax1.0
lab_fact ebusy.dax1.0.io "$(python3 /lab/in/files/devdax_io.py /dev/dax1.0 2>&1)"
lab_journal_since reload > "$LAB_OUT/reload-journal.txt"
kill $pinner; wait $pinner || true
# Without the page tables the block may still hold kernel memory (slab pages the process's
# objects shared): recorded, not asserted.
lab_call reconcile-after-pinner busctl call org.daxd.Daxd1 /org/daxd/Daxd1 \
    org.daxd.Daxd1.Manager Reconcile 'a{sv}' 0
lab_fact unpinned.dax0.0.State "$(lab_prop dax0.0 State)"
lab_fact unpinned.dax0.0.LastError "$(lab_prop dax0.0 LastError)"
lab_fact unpinned.dax0.0.driver "$(lab_driver dax0.0)"

# --- a block that never finishes offlining, with `daxd apply --offline-timeout` ---------------
systemctl stop daxd.service
systemctl mask --runtime daxd.service
lab_policy <<'EOF'
version: 1
rules:
  - name: second-as-movable-ram
    match: {device: dax1.0}
    mode: system-ram
    allow_pmem_data_loss: true
EOF
lab_call apply-ram daxd apply dax1.0
lab_wait_until 30 lab_all_movable dax1.0
mapfile -t blocks < <(lab_blocks dax1.0 | cut -d' ' -f1)
lab_fact timeout.blocks "${blocks[*]}"
node=$(cat /sys/bus/dax/devices/dax1.0/target_node)
python3 "$LAB_IN/pin.py" vmsplice "$node" "${blocks[-1]}" > /run/pin-vmsplice.txt &
pinner=$!
lab_wait_until 120 test -s /run/pin-vmsplice.txt
lab_fact timeout.pinned "$(cat /run/pin-vmsplice.txt)"
lab_policy <<'EOF'
version: 1
rules:
  - name: second-as-devdax
    match: {device: dax1.0}
    mode: devdax
EOF
start=$SECONDS
rc=0; daxd apply --json --offline-timeout 5 dax1.0 > "$LAB_OUT/apply-timeout.json" || rc=$?
lab_fact timeout.rc $rc
lab_fact timeout.seconds $((SECONDS - start))
lab_snapshot after-timeout dax0.0 dax1.0
kill $pinner; wait $pinner || true
rc=0; daxd apply --json dax1.0 > "$LAB_OUT/apply-final.json" || rc=$?
lab_fact final.rc $rc
lab_fact final.dax1.0.io "$(python3 /lab/in/files/devdax_io.py /dev/dax1.0 2>&1)"
lab_snapshot end dax0.0 dax1.0
journalctl -k -b --no-pager | grep -E "hotremoved|could not reserve" > "$LAB_OUT/leaks.txt" || true
journalctl -b -u daxd.service --no-pager -o short-monotonic > "$LAB_OUT/daxd-journal.txt"
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s6-back-to-devdax",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,
            files={"devdax_io.py": DEVDAX_IO},
        )
    ).check()


def _no_leak(snap: dict[str, Any], kmem_bound: dict[str, bool]) -> None:
    assert f.orphan_kmem_ranges(snap) == []
    for name, bound in kmem_bound.items():
        assert (f.device(snap, name)["driver"] == "kmem") is bound
        assert f.iomem_kmem_under(snap, name) is bound


def test_unmovable_block_fails_honestly_without_a_leak(run: ScenarioResult) -> None:
    facts = f.facts(run)
    ram = f.snapshot(run, "ram")
    assert set(f.blocks(ram, "dax0.0").values()) == {("online", "Normal")}
    assert set(f.blocks(ram, "dax1.0").values()) == {("online", "Movable")}
    assert facts["pagetables.pinned"].startswith("pinned memory")
    assert f.calls(run)["reload"][0] == 0  # the policy is valid; a device failing is no error
    # dax1.0 (movable) went back to devdax and works
    assert facts["ebusy.dax1.0.Driver"] == "device_dax"
    assert facts["ebusy.dax1.0.State"] == "applied"
    assert facts["ebusy.dax1.0.io"] == "ok"
    # dax0.0 could not: reported, kmem kept with all its memory online
    error = facts["ebusy.dax0.0.LastError"]
    assert facts["ebusy.dax0.0.State"] == "failed"
    assert "EBUSY" in error, error
    after = f.snapshot(run, "after-reload")
    blocks = f.blocks(after, "dax0.0")
    assert any(f"{b}/state" in error for b in blocks), error
    assert set(blocks.values()) == {("online", "Normal")}, blocks
    assert facts["ebusy.dax0.0.Driver"] == "kmem"
    assert facts["ebusy.dax0.0.Mode"] == "system-ram"
    assert facts["ebusy.dax0.0.BlocksOnline"] == facts["ebusy.dax0.0.BlocksTotal"] == "3"
    _no_leak(after, {"dax0.0": True, "dax1.0": False})
    journal = run.file("reload-journal.txt")
    assert f.journal_lines(journal, "dax0.0: offline-block", "FAILED", "EBUSY")
    assert not f.journal_lines(journal, "dax0.0: unbind")
    print(
        "scenario 6: after the page-table process exited, Reconcile left dax0.0 "
        f"{facts['unpinned.dax0.0.driver']} ({facts['unpinned.dax0.0.State']}: "
        f"{facts['unpinned.dax0.0.LastError'] or 'no error'})"
    )
    assert run.file("leaks.txt") == ""


def test_offline_timeout_rolls_back_and_the_device_binds_later(run: ScenarioResult) -> None:
    facts = f.facts(run)
    blocks = facts["timeout.blocks"].split()
    assert facts["timeout.pinned"] == f"pinned {blocks[-1]}"
    assert facts["timeout.rc"] == "3"  # exit code 3: a device could not be brought to its rule
    assert int(facts["timeout.seconds"]) < 60
    doc = run.json("apply-timeout.json")
    assert isinstance(doc, dict)
    (dev,) = doc["devices"]
    assert dev["outcome"] == "failed"
    steps = dev["steps"]
    failed = [s for s in steps if not s["ok"]]
    assert [(s["action"], s["block"], s["errno"]) for s in failed] == [
        ("offline-block", int(blocks[-1].removeprefix("memory")), "ETIMEDOUT")
    ], steps
    offlined = [s["block"] for s in steps if s["action"] == "offline-block" and s["ok"]]
    undone = [s["block"] for s in steps if s["rollback"] and s["ok"]]
    assert sorted(undone) == sorted(offlined), steps  # every block taken offline came back
    assert not [s for s in steps if s["action"] == "unbind"]
    after = f.snapshot(run, "after-timeout")
    assert set(f.blocks(after, "dax1.0").values()) == {("online", "Movable")}
    _no_leak(after, {"dax1.0": True})
    # The pipe gone, the same command succeeds and the device is usable again.
    assert facts["final.rc"] == "0"
    assert facts["final.dax1.0.io"] == "ok"
    end = f.snapshot(run, "end")
    _no_leak(end, {"dax1.0": False})
    assert f.device(end, "dax1.0")["driver"] == "device_dax"
    assert run.file("leaks.txt") == ""

"""Scenario 5: changes made behind daxd's back are seen, reported and, where that only adds, undone.

One boot from the disk with daxd installed, two NVDIMMs; the policy wants dax0.0 as movable
system RAM and dax1.0 as devdax. Then an operator

1. offlines a block of dax0.0 by hand: daxd logs "changed outside daxd" and onlines it again,
   movable;
2. moves a block of dax0.0 to ZONE_NORMAL by hand (offline, online_kernel): moved back;
3. runs ``daxctl reconfigure-device -m system-ram dax1.0``: refused by daxctl on Debian's
   ``auto_online_blocks=online`` (exit 240), so with ``auto_online_blocks=offline`` (daxctl then
   onlines the memory itself, movable): undoing that would take memory offline, so daxd only
   reports it (State=drifted, LastError, journal) and leaves it until an explicit Reconcile,
   which brings dax1.0 back to devdax;
4. runs ``daxctl reconfigure-device -f -m devdax dax0.0``: putting it back is binding only, so
   daxd does (dax0.0 movable RAM again).

No range leaks on the way (/proc/iomem).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import facts as f
from tests.vm.lab import Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

SCRIPT = r"""
set -euo pipefail
lab_wait_booted
MEM=/sys/devices/system/memory
lab_policy <<'EOF'
version: 1
rules:
  - name: first-as-ram
    match: {device: dax0.0}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
  - name: second-as-devdax
    match: {device: dax1.0}
    mode: devdax
EOF
lab_devdax namespace0.0 > /dev/null
lab_devdax namespace1.0 > /dev/null
lab_wait_until 120 lab_state_is dax0.0 applied
lab_wait_until 60 lab_state_is dax1.0 applied
lab_wait_until 30 lab_all_movable dax0.0
mapfile -t blocks < <(lab_blocks dax0.0 | cut -d' ' -f1)
lab_fact blocks "${blocks[*]}"

# 1. a block offlined by hand
lab_journal_mark offline
echo offline > "$MEM/${blocks[1]}/state"
lab_wait_until 30 lab_all_movable dax0.0 && lab_fact offline.restored yes
lab_wait_until 10 lab_state_is dax0.0 applied
lab_journal_since offline > "$LAB_OUT/offline-journal.txt"

# 2. a block moved to ZONE_NORMAL by hand
lab_journal_mark normal
echo offline > "$MEM/${blocks[2]}/state"
echo online_kernel > "$MEM/${blocks[2]}/state"
lab_fact normal.zone_by_hand "$(cat "$MEM/${blocks[2]}/valid_zones")"
lab_wait_until 30 lab_all_movable dax0.0 && lab_fact normal.restored yes
lab_wait_until 10 lab_state_is dax0.0 applied
lab_journal_since normal > "$LAB_OUT/normal-journal.txt"

# 3. daxctl turns dax1.0 (policy: devdax) into system-ram
lab_journal_mark daxctl
lab_call daxctl-ram-debian daxctl reconfigure-device -m system-ram dax1.0
echo offline > $MEM/auto_online_blocks
lab_call daxctl-ram daxctl reconfigure-device -m system-ram dax1.0
echo online > $MEM/auto_online_blocks
lab_wait_until 30 lab_state_is dax1.0 drifted
sleep 3  # daxd leaves it alone: no restoring write follows
lab_fact daxctl.driver "$(lab_driver dax1.0)"
lab_blocks dax1.0 > "$LAB_OUT/dax1.0-after-daxctl.txt"
lab_fact daxctl.State "$(lab_prop dax1.0 State)"
lab_fact daxctl.LastError "$(lab_prop dax1.0 LastError)"
lab_fact daxctl.Mode "$(lab_prop dax1.0 Mode)"
lab_journal_since daxctl > "$LAB_OUT/daxctl-journal.txt"
lab_call reconcile busctl call org.daxd.Daxd1 /org/daxd/Daxd1 org.daxd.Daxd1.Manager Reconcile \
    'a{sv}' 0
lab_fact reconcile.driver "$(lab_driver dax1.0)"
lab_fact reconcile.State "$(lab_prop dax1.0 State)"

# 4. daxctl turns dax0.0 (policy: system-ram) back into devdax
lab_journal_mark devdax
lab_call daxctl-devdax daxctl reconfigure-device -f -m devdax dax0.0
lab_wait_until 60 lab_all_movable dax0.0 && lab_fact devdax.restored yes
lab_wait_until 10 lab_state_is dax0.0 applied
lab_fact devdax.driver "$(lab_driver dax0.0)"
lab_journal_since devdax > "$LAB_OUT/devdax-journal.txt"

lab_fact restarts "$(systemctl show -p NRestarts --value daxd.service)"
lab_snapshot end dax0.0 dax1.0
journalctl -k -b --no-pager | grep -E "hotremoved|could not reserve" > "$LAB_OUT/leaks.txt" || true
journalctl -b -u daxd.service --no-pager -o short-monotonic > "$LAB_OUT/daxd-journal.txt"
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s5-drift",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,
        )
    ).check()


def test_drift_is_reported_and_restored_where_the_policy_allows(run: ScenarioResult) -> None:
    facts = f.facts(run)
    calls = f.calls(run)
    blocks = facts["blocks"].split()
    # 1. offlined by hand -> online movable again
    assert facts["offline.restored"] == "yes"
    journal = run.file("offline-journal.txt")
    assert f.journal_lines(journal, "dax0.0: changed outside daxd", "blocks_online 3 -> 2")
    assert f.journal_lines(journal, f"{blocks[1]}/state: ok")
    assert f.journal_lines(journal, "dax0.0: restored to rule 'first-as-ram'")
    # 2. moved to Normal by hand -> movable again
    assert facts["normal.zone_by_hand"] == "Normal"
    assert facts["normal.restored"] == "yes"
    journal = run.file("normal-journal.txt")
    assert f.journal_lines(journal, "dax0.0: changed outside daxd")
    assert f.journal_lines(
        journal, f"online-block 'online_movable' > devices/system/memory/{blocks[2]}"
    )
    # 3. daxctl made dax1.0 system RAM: reported, left alone, restored on Reconcile
    rc, text = calls["daxctl-ram-debian"]
    assert rc != 0, text
    assert "auto-online" in text, text
    assert calls["daxctl-ram"][0] == 0, calls["daxctl-ram"]
    assert facts["daxctl.driver"] == "kmem"
    assert facts["daxctl.Mode"] == "system-ram"
    assert facts["daxctl.State"] == "drifted"
    assert "changed outside daxd" in facts["daxctl.LastError"]
    after = run.file("dax1.0-after-daxctl.txt").split()
    assert after[1::3] == ["online"] * 3, after  # daxd took nothing offline
    journal = run.file("daxctl-journal.txt")
    assert f.journal_lines(journal, "dax1.0: changed outside daxd", "mode 'devdax' -> 'system-ram'")
    assert not f.journal_lines(journal, "dax1.0: offline-block")
    assert calls["reconcile"][0] == 0, calls["reconcile"]
    assert facts["reconcile.driver"] == "device_dax"
    assert facts["reconcile.State"] == "applied"
    # 4. daxctl made dax0.0 devdax: binding it again only adds, so daxd does
    assert calls["daxctl-devdax"][0] == 0, calls["daxctl-devdax"]
    assert facts["devdax.restored"] == "yes"
    assert facts["devdax.driver"] == "kmem"
    journal = run.file("devdax-journal.txt")
    assert f.journal_lines(journal, "dax0.0: changed outside daxd", "mode 'system-ram' -> 'devdax'")
    assert f.journal_lines(journal, "dax0.0: restored to rule 'first-as-ram'")
    # Nothing leaked, nothing restarted.
    assert facts["restarts"] == "0"
    assert run.file("leaks.txt") == ""
    end = f.snapshot(run, "end")
    assert f.orphan_kmem_ranges(end) == []
    assert f.iomem_kmem_under(end, "dax0.0")
    assert not f.iomem_kmem_under(end, "dax1.0")

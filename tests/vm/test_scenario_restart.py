"""Scenario 9: daxd killed in the middle of an apply, and a hung daxd caught by the watchdog.

One boot from the disk with daxd installed, one NVDIMM made movable system RAM by daxd.

- **kill -9 mid-apply**: a page of the device's last block, the second daxd offlines
  (planner.zone_walk_order: second, last..third, first), is held by a pipe
  (tests/vm/guest/share/pin.py vmsplice), so when a reload asks for devdax, daxd offlines the
  second block and then sits in the kernel offlining the last one. It is killed there with SIGKILL
  (and the pipe released). systemd restarts it (Restart=on-failure) at once — not after the
  watchdog or reload timeout — and the new daxd converges: the device is devdax, nothing leaked.
- **watchdog**: with a drop-in lowering WatchdogSec to 10 s, daxd is frozen with SIGSTOP; systemd
  reports the watchdog timeout, kills it (SIGABRT), restarts it, and it converges again.
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
lab_policy <<'EOF'
version: 1
rules:
  - name: pmem-as-ram
    match: {provider: pmem}
    mode: system-ram
    allow_pmem_data_loss: true
EOF
lab_devdax namespace0.0 > /dev/null
lab_wait_until 120 lab_state_is dax0.0 applied
lab_wait_until 30 lab_all_movable dax0.0
mapfile -t blocks < <(lab_blocks dax0.0 | cut -d' ' -f1)
lab_fact blocks "${blocks[*]}"

# --- kill -9 in the middle of an apply -------------------------------------------------------
node=$(cat /sys/bus/dax/devices/dax0.0/target_node)
# daxd offlines the blocks second, last..third, first: pin the last, wait for the second
python3 "$LAB_IN/pin.py" vmsplice "$node" "${blocks[-1]}" > /run/pin.txt &
pinner=$!
lab_wait_until 120 test -s /run/pin.txt
lab_fact kill.pinned "$(cat /run/pin.txt)"
lab_policy <<'EOF'
version: 1
rules:
  - name: pmem-as-devdax
    match: {provider: pmem}
    mode: devdax
EOF
pid=$(systemctl show -p MainPID --value daxd.service)
lab_journal_mark kill
systemctl reload --no-block daxd.service
offlined_before_pinned() {
    lab_journal_since kill | grep -q "${blocks[1]}/state: ok"
}
lab_wait_until 60 offlined_before_pinned
# state only: valid_zones of blocks that are not online is not read (docs/lab.md item 10)
states() { for b in "${blocks[@]}"; do echo "$b $(cat /sys/devices/system/memory/$b/state)"; done; }
going_offline() { states | grep -q " going-offline$"; }
lab_wait_until 30 going_offline  # daxd is in the kernel, offlining the pinned block
states > "$LAB_OUT/mid-apply-blocks.txt"
kill -KILL "$pid"
killed=$EPOCHREALTIME
kill $pinner; wait $pinner || true
new_pid() {
    local p; p=$(systemctl show -p MainPID --value daxd.service)
    [ "$p" != 0 ] && [ "$p" != "$pid" ]
}
lab_wait_until 150 new_pid
lab_fact kill.restarted_after_s "$(python3 -c "print($EPOCHREALTIME - $killed)")"
lab_wait_until 120 lab_state_is dax0.0 applied
lab_fact kill.driver "$(lab_driver dax0.0)"
lab_fact kill.restarts "$(systemctl show -p NRestarts --value daxd.service)"
lab_snapshot after-kill dax0.0
sleep 1
journalctl -b --no-pager -o short-monotonic --after-cursor="$(cat /run/daxd-lab/kill.cursor)" \
    -u daxd.service > "$LAB_OUT/kill-journal.txt"

# --- the watchdog ----------------------------------------------------------------------------
mkdir -p /run/systemd/system/daxd.service.d
printf '[Service]\nWatchdogSec=10s\n' > /run/systemd/system/daxd.service.d/watchdog.conf
systemctl daemon-reload
systemctl restart daxd.service
lab_wait_until 60 lab_state_is dax0.0 applied
before=$(systemctl show -p NRestarts --value daxd.service)
pid=$(systemctl show -p MainPID --value daxd.service)
lab_journal_mark watchdog
kill -STOP "$pid"
stopped=$EPOCHREALTIME
restarted() { [ "$(systemctl show -p NRestarts --value daxd.service)" -gt "$before" ]; }
lab_wait_until 90 restarted
lab_fact wd.restart_after_s "$(python3 -c "print($EPOCHREALTIME - $stopped)")"
lab_wait_until 90 new_pid
lab_wait_until 120 lab_state_is dax0.0 applied
lab_fact wd.active "$(systemctl is-active daxd.service)"
lab_fact wd.driver "$(lab_driver dax0.0)"
sleep 1
journalctl -b --no-pager -o short-monotonic \
    --after-cursor="$(cat /run/daxd-lab/watchdog.cursor)" -u daxd.service \
    > "$LAB_OUT/watchdog-journal.txt"
rm /run/systemd/system/daxd.service.d/watchdog.conf
systemctl daemon-reload
lab_snapshot end dax0.0
journalctl -k -b --no-pager | grep -E "hotremoved|could not reserve" > "$LAB_OUT/leaks.txt" || true
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s9-kill-watchdog",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,
        )
    ).check()


def test_killed_mid_apply_restarts_and_converges(run: ScenarioResult) -> None:
    facts = f.facts(run)
    blocks = facts["blocks"].split()
    assert len(blocks) >= 3, blocks
    pinned = blocks[-1]  # the second daxd offlines
    assert facts["kill.pinned"] == f"pinned {pinned}"
    # Killed mid-apply: the second block offline, the pinned one on its way ("going-offline"
    # while the kernel tries to migrate its pages), the others still online, kmem bound.
    mid = dict(line.split()[:2] for line in run.file("mid-apply-blocks.txt").splitlines())
    assert mid[blocks[1]] == "offline", mid
    assert mid[pinned] == "going-offline", mid
    assert [mid[b] for b in (blocks[0], *blocks[2:-1])] == ["online"] * (len(blocks) - 2), mid
    journal = run.file("kill-journal.txt")
    assert f.journal_lines(journal, "Main process exited, code=killed, status=9/KILL")
    assert f.journal_lines(journal, "Scheduled restart job")
    assert not f.journal_lines(journal, "Watchdog timeout"), journal
    # systemd restarted it at once (RestartSec=2s), not after a timeout.
    restart = float(facts["kill.restarted_after_s"])
    print(f"scenario 9: daxd back {restart:.1f} s after SIGKILL in the middle of offlining")
    assert restart < 30
    assert int(facts["kill.restarts"]) >= 1
    assert facts["kill.driver"] == "device_dax"
    after = f.snapshot(run, "after-kill")
    assert f.orphan_kmem_ranges(after) == []
    assert not f.iomem_kmem_under(after, "dax0.0")
    assert run.file("leaks.txt") == ""


def test_watchdog_restarts_a_hung_daxd(run: ScenarioResult) -> None:
    facts = f.facts(run)
    journal = run.file("watchdog-journal.txt")
    assert f.journal_lines(journal, "Watchdog timeout (limit 10s)!"), journal
    assert f.journal_lines(journal, "Failed with result 'watchdog'"), journal
    assert f.journal_lines(journal, "Scheduled restart job"), journal
    print(f"scenario 9: watchdog restart {float(facts['wd.restart_after_s']):.1f} s after SIGSTOP")
    assert facts["wd.active"] == "active"
    assert facts["wd.driver"] == "device_dax"
    assert f.orphan_kmem_ranges(f.snapshot(run, "end")) == []

"""CXL regions from the policy on the real kernel: built by daxd, not by ``cxl create-region``.

Three host bridges with a 256 MiB type-3 device each (serials 0x1000, 0x1001, 0x1002); window
decoder0.0 over the first, decoder0.1 a 2-way interleave over the other two. The policy:
region ``single`` (0x1000) and region ``pair`` (written 0x1002, 0x1001: not the target_list
order), a movable rule for the first, devdax for the interleave.

**Setup boot** (daxd installed, not enabled: udev starts it when the memdevs appear):

a. ``systemctl restart daxd`` returns at READY with both regions built, the rules applied to
   their dax devices (movable RAM; a /dev/dax that maps), and ``cxl list`` agreeing;
b. ``daxd apply`` (daemon stopped) finds both in sync and writes nothing to the cxl bus;
c. a region left committed but not enabled (what a kill between the commit and the bind leaves;
   made with ``cxl disable-region`` while daxd is stopped) is enabled by the next daxd;
d. ``state: absent`` for both and a reload: single's RAM offlined by daxd first, both regions
   torn down, no ``System RAM (kmem)`` left; ``present`` again and both are rebuilt;
e. killed for real between the commit and the bind (held there by a lab-only audit hook):
   the next daxd enables the region and puts ``auto_online_blocks`` back;
f. a memdev whose PCI function comes back to cxl_pci after daxd started: READY waits for it,
   the region is built on its arrival;
g. for the next boot the policy gets a region over a memdev that does not exist.

**Main boot**: nothing but daxd builds regions. A unit ordered ``After=daxd.service`` finds both
regions built and the memory where the rules want it; daxd waited for the missing memdev for
``region_wait`` and said so; memN names are what this boot gave, the serials what matched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.vm import facts as f
from tests.vm.lab import (
    CxlHostBridge,
    CxlMemdev,
    CxlTopology,
    CxlWindow,
    Lab,
    Scenario,
    ScenarioResult,
)
from tests.vm.pause import INSTALL_PAUSE, PAUSE

pytestmark = pytest.mark.vm

SERIALS = (0x1000, 0x1001, 0x1002)
TOPOLOGY = CxlTopology(
    host_bridges=tuple(CxlHostBridge((CxlMemdev(256, serial=s),)) for s in SERIALS),
    windows=(CxlWindow((0,)), CxlWindow((1, 2))),
)

POLICY = """\
version: 1
regions:
  - name: single
    memdevs: [0x1000]
  - name: pair
    memdevs: [0x1002, 0x1001]
rules:
  - name: single-movable
    match: {serial: 0x1000}
    mode: system-ram
    zone: movable
  - name: pair-devdax
    match: {interleave_ways: 2}
    mode: devdax
"""

PROBE = r"""#!/bin/bash
# What a unit ordered After=daxd.service finds when it starts.
out=/var/lib/daxd-probe
mkdir -p "$out"
{
    echo "daxd_active=$(systemctl is-active daxd.service)"
    echo "regions=$(ls /sys/bus/cxl/devices | grep '^region' | xargs)"
    for d in /sys/bus/dax/devices/dax*; do
        n=$(basename "$d")
        drv=none; [ -e "$d/driver" ] && drv=$(basename "$(readlink -f "$d/driver")")
        echo "$n.driver=$drv"
    done
    for m in /sys/bus/cxl/devices/mem*; do echo "$(basename "$m").serial=$(cat "$m/serial")"; done
} > "$out/state.tmp"
daxd list --json > "$out/list.json" 2>/dev/null || true
mv "$out/state.tmp" "$out/state.txt"
"""

PROBE_UNIT = """\
[Unit]
Description=daxd lab probe: the CXL regions a unit ordered after daxd.service finds
After=daxd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/daxd-probe/probe

[Install]
WantedBy=multi-user.target
"""


SETUP = (
    INSTALL_PAUSE
    + r"""
set -euo pipefail
lab_wait_booted
lab_cxl_wait 3
region_of() { jq -r --arg n "$1" '.regions[] | select(.name == $n) | .region' "$2"; }
dax_of() { jq -r --arg n "$1" '.regions[] | select(.name == $n) | .devices[0]' "$2"; }
for s in 0x1000 0x1001 0x1002; do lab_fact "s.memdev.$s" "$(lab_cxl_memdev "$s")"; done
lab_fact s.daxd_by_udev "$(systemctl is-active daxd.service)"
lab_fact s.regions_before "$(ls /sys/bus/cxl/devices | grep -c '^region' || true)"
cat > /etc/daxd/policy.yaml < /lab/in/files/policy.yaml
daxd check /etc/daxd/policy.yaml

# --- a. built at the start, before READY --------------------------------------------------
lab_journal_mark build
udevadm monitor -k -s memory > "$LAB_OUT/a-memory-events.txt" &
monitor=$!
started=$EPOCHREALTIME
systemctl restart daxd.service  # returns at READY
lab_fact a.ready_s "$(python3 -c "print(round($EPOCHREALTIME - $started, 2))")"
sleep 1
kill "$monitor"
daxd list --json > "$LAB_OUT/a-list.json"
rs=$(region_of single "$LAB_OUT/a-list.json"); ds=$(dax_of single "$LAB_OUT/a-list.json")
rp=$(region_of pair "$LAB_OUT/a-list.json"); dp=$(dax_of pair "$LAB_OUT/a-list.json")
lab_fact a.single.region "$rs"; lab_fact a.single.dax "$ds"
lab_fact a.pair.region "$rp"; lab_fact a.pair.dax "$dp"
lab_blocks "$ds" > "$LAB_OUT/a-single-blocks.txt"
lab_fact a.pair.driver "$(lab_driver "$dp")"
lab_fact a.pair.mmap "$(lab_mmap_check "$dp")"
cxl list -R > "$LAB_OUT/a-cxl-regions.json"
lab_journal_since build > "$LAB_OUT/a-journal.txt"

# --- b. a second apply writes nothing ------------------------------------------------------
systemctl stop daxd.service
daxd apply --json > "$LAB_OUT/b-apply.json"

# --- c. committed but not enabled (killed between the commit and the bind) ----------------
for b in $(lab_blocks "$ds" | awk '$2 == "online" {print $1}'); do
    echo offline > "/sys/devices/system/memory/$b/state"
done
cxl disable-region "$rs"
lab_fact c.commit "$(cat /sys/bus/cxl/devices/$rs/commit)"
lab_fact c.enabled_before "$(test -e /sys/bus/cxl/devices/$rs/driver && echo yes || echo no)"
lab_fact c.dax_before "$(test -e /sys/bus/dax/devices/$ds && echo yes || echo no)"
lab_journal_mark enable
systemctl start daxd.service
lab_fact c.enabled "$(test -e /sys/bus/cxl/devices/$rs/driver && echo yes || echo no)"
lab_blocks "$ds" > "$LAB_OUT/c-single-blocks.txt"
lab_journal_since enable > "$LAB_OUT/c-journal.txt"

# --- d. absent: offline, torn down; present again: rebuilt ---------------------------------
# Both: single's memory is online RAM (daxd offlines it first), pair's a /dev/dax.
single_start=$(cat "/sys/bus/cxl/devices/$rs/resource")
pair_start=$(cat "/sys/bus/cxl/devices/$rp/resource")
lab_fact d.single_start "$single_start"
lab_fact d.pair_start "$pair_start"
python3 - <<'PY'
p = "/etc/daxd/policy.yaml"
s = open(p).read()
for m in ("[0x1000]", "[0x1002, 0x1001]"):
    s = s.replace(f"memdevs: {m}", f"memdevs: {m}\n    state: absent")
open(p, "w").write(s)
PY
lab_journal_mark absent
systemctl reload daxd.service
gone() { ! test -e "/sys/bus/cxl/devices/$rp" && ! test -e "/sys/bus/cxl/devices/$rs"; }
lab_wait_until 60 gone
lab_fact d.dax_gone "$(test -e /sys/bus/dax/devices/$dp || test -e /sys/bus/dax/devices/$ds \
    && echo no || echo yes)"
grep -i "kmem" /proc/iomem > "$LAB_OUT/d-iomem-kmem.txt" || true
lab_journal_since absent > "$LAB_OUT/d-journal.txt"
cat > /etc/daxd/policy.yaml < /lab/in/files/policy.yaml
systemctl reload daxd.service
back() {
    daxd list --json | jq -e '[.regions[] | select(.verdict == "in-sync")] | length == 2' \
        > /dev/null
}
lab_wait_until 60 back
daxd list --json > "$LAB_OUT/d-list.json"
lab_fact d.pair.driver "$(lab_driver "$(dax_of pair "$LAB_OUT/d-list.json")")"
lab_blocks "$(dax_of single "$LAB_OUT/d-list.json")" > "$LAB_OUT/d-single-blocks.txt"

# --- e. kill -9 between the commit and the bind, for real ----------------------------------
# A lab-only Python audit hook (files/pause.py) holds daxd where it opens cxl_region/bind; it is
# killed there, then started again the normal way.
set_single() {  # present | absent
    python3 - "$1" <<'PY2'
import sys
p = "/etc/daxd/policy.yaml"
s = open(p).read().replace("memdevs: [0x1000]\n    state: absent\n", "memdevs: [0x1000]\n")
if sys.argv[1] == "absent":
    s = s.replace("memdevs: [0x1000]\n", "memdevs: [0x1000]\n    state: absent\n")
open(p, "w").write(s)
PY2
}
single_gone() { ! test -e "/sys/bus/cxl/devices/$(region_of single "$LAB_OUT/d-list.json")"; }
set_single absent
systemctl reload daxd.service
lab_wait_until 60 single_gone
lab_pause_at /sys/bus/cxl/drivers/cxl_region/bind
lab_fact e.auto_online_before "$(cat /sys/devices/system/memory/auto_online_blocks)"
set_single present
lab_journal_mark kill
systemctl restart --no-block daxd.service
lab_wait_until 60 test -e /run/daxd/lab-paused
fr=$(cat /run/daxd/lab-paused)
lab_fact e.region "$fr"
lab_fact e.commit_at_kill "$(cat "/sys/bus/cxl/devices/$fr/commit")"
lab_fact e.enabled_at_kill "$(test -e "/sys/bus/cxl/devices/$fr/driver" && echo yes || echo no)"
lab_fact e.auto_online_at_kill "$(cat /sys/devices/system/memory/auto_online_blocks)"
lab_fact e.records_at_kill "$(cd /run/daxd && find . -type f ! -name lab-paused | sort | xargs)"
lab_pause_off
systemctl kill -s KILL daxd.service
sleep 1
systemctl start daxd.service  # joins the automatic restart, returns at READY
lab_fact e.enabled "$(test -e "/sys/bus/cxl/devices/$fr/driver" && echo yes || echo no)"
lab_fact e.auto_online_after "$(cat /sys/devices/system/memory/auto_online_blocks)"
lab_fact e.records_after "$(cd /run/daxd && find . -type f ! -name lock | sort | xargs)"
daxd list --json > "$LAB_OUT/e-list.json"
lab_blocks "$(dax_of single "$LAB_OUT/e-list.json")" > "$LAB_OUT/e-single-blocks.txt"
lab_journal_since kill > "$LAB_OUT/e-journal.txt"

# --- f. a memdev that comes after daxd started ---------------------------------------------
# Its PCI function unbound from cxl_pci (memN gone from the cxl bus) while the region is torn
# down; daxd started with the region present waits, and builds it when the function comes back.
set_single absent
systemctl reload daxd.service
single_gone() { ! test -e "/sys/bus/cxl/devices/$(region_of single "$LAB_OUT/e-list.json")"; }
lab_wait_until 60 single_gone
systemctl stop daxd.service
mem=$(lab_cxl_memdev 0x1000)
pci=$(basename "$(dirname "$(readlink -f "/sys/bus/cxl/devices/$mem")")")
lab_fact f.pci "$pci"
echo "$pci" > /sys/bus/pci/drivers/cxl_pci/unbind
lab_fact f.memdev_gone "$(lab_cxl_memdev 0x1000 2>/dev/null || echo yes)"
set_single present
lab_journal_mark late
systemctl start --no-block daxd.service
sleep 5
lab_fact f.state_waiting "$(systemctl is-active daxd.service || true)"
bound_at=$EPOCHREALTIME
echo "$pci" > /sys/bus/pci/drivers/cxl_pci/bind
lab_wait_until 60 systemctl is-active -q daxd.service
lab_fact f.ready_after_bind_s "$(python3 -c "print(round($EPOCHREALTIME - $bound_at, 2))")"
lab_fact f.memdev "$(lab_cxl_memdev 0x1000)"
daxd list --json > "$LAB_OUT/f-list.json"
lab_blocks "$(dax_of single "$LAB_OUT/f-list.json")" > "$LAB_OUT/f-single-blocks.txt"
lab_journal_since late > "$LAB_OUT/f-journal.txt"

# --- g. the next boot: one more region, over a memdev that is not there -------------------
python3 - <<'PY'
p = "/etc/daxd/policy.yaml"
s = open(p).read()
extra = "  - name: not-fitted\n    memdevs: [0x2000]\n    size: 256M\n"
s = s.replace("rules:\n", extra + "rules:\n", 1)
open(p, "w").write(s)
PY
daxd check /etc/daxd/policy.yaml
install -D -m 0755 /lab/in/files/probe /usr/local/lib/daxd-probe/probe
install -m 0644 /lab/in/files/daxd-probe.service /etc/systemd/system/daxd-probe.service
systemctl daemon-reload
# Enabled, so that it is in the boot's first transaction and the probe's After= orders it (udev
# starting it when the memdevs appear is checked in this boot: s.daxd_by_udev).
systemctl enable daxd.service daxd-probe.service
journalctl -b --no-pager -o short-monotonic -u daxd.service > "$LAB_OUT/setup-journal.txt"
"""
)

MAIN = r"""
set -euo pipefail
lab_wait_until 240 test -s /var/lib/daxd-probe/state.txt
cp /var/lib/daxd-probe/state.txt "$LAB_OUT/probe.txt"
cp /var/lib/daxd-probe/list.json "$LAB_OUT/probe-list.json"
lab_fact daxd_ready_usec "$(systemctl show -p ActiveEnterTimestampMonotonic --value daxd.service)"
lab_fact daxd_start_usec \
    "$(systemctl show -p ExecMainStartTimestampMonotonic --value daxd.service)"
lab_fact probe_start_usec \
    "$(systemctl show -p ExecMainStartTimestampMonotonic --value daxd-probe.service)"
for s in 0x1000 0x1001 0x1002; do lab_fact "m.memdev.$s" "$(lab_cxl_memdev "$s")"; done
journalctl -b --no-pager -o short-monotonic -u daxd.service > "$LAB_OUT/daxd-journal.txt"
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="cxl-regions",
            setup_script=SETUP,
            script=MAIN,
            cxl=TOPOLOGY,
            base_disk=installed_disk,
            timeout=900,
            files={
                "policy.yaml": POLICY,
                "probe": PROBE,
                "daxd-probe.service": PROBE_UNIT,
                "pause.py": PAUSE,
            },
        )
    ).check()


def _setup(run: ScenarioResult) -> dict[str, str]:
    return f.facts(run.boots[0])


def _setup_file(run: ScenarioResult, name: str) -> str:
    return run.boots[0].files[name].read_text()


def _regions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in doc["regions"]}


def test_a_regions_built_before_ready_and_the_rules_applied(run: ScenarioResult) -> None:
    facts = _setup(run)
    assert facts["s.regions_before"] == "0"  # no firmware regions: only daxd makes them
    # 90-daxd.rules: a CXL memdev starts it (still starting, under TCG, when the script looks)
    assert facts["s.daxd_by_udev"] in ("active", "activating"), facts["s.daxd_by_udev"]
    doc = json.loads(_setup_file(run, "a-list.json"))
    regions = _regions(doc)
    assert regions["single"]["verdict"] == "in-sync", regions
    assert regions["pair"]["verdict"] == "in-sync", regions
    assert regions["single"]["window"] == "decoder0.0"
    assert regions["pair"]["window"] == "decoder0.1"
    # the interleave in target_list order, whatever order the policy named them in
    serials = [m.split("serial ")[1].rstrip(")") for m in regions["pair"]["memdevs"]]
    assert serials == ["0x1001", "0x1002"]
    single = f.block_lines(_setup_file(run, "a-single-blocks.txt"))
    assert single
    assert all(v == ("online", "Movable") for v in single.values()), single
    # The kernel did not online the new memory itself (into Normal, to be offlined again):
    # auto-onlining was off for the bind, daxd onlined it where the rule says.
    events = _setup_file(run, "a-memory-events.txt")
    assert [ln for ln in events.splitlines() if "online" in ln.split()], events[:2000]
    assert not [ln for ln in events.splitlines() if "offline" in ln.split()], events[:3000]
    assert facts["a.pair.driver"] == "device_dax"
    assert facts["a.pair.mmap"] == "ok"
    cxl = {r["region"]: r for r in json.loads(_setup_file(run, "a-cxl-regions.json"))}
    assert cxl[facts["a.pair.region"]]["interleave_ways"] == 2
    assert cxl[facts["a.single.region"]]["size"] == 256 << 20
    journal = _setup_file(run, "a-journal.txt")
    assert "region single" in journal
    assert "create region" in journal
    assert ": done (" in journal
    assert "Traceback" not in journal
    print(f"regions: READY {facts['a.ready_s']} s after systemctl restart, both built")


def test_b_a_second_apply_writes_nothing(run: ScenarioResult) -> None:
    doc = json.loads(_setup_file(run, "b-apply.json"))
    for region in doc["regions"]:
        assert region["outcome"] == "in-sync", region
        assert not any("ok" in s for s in region["steps"]), region


def test_c_committed_but_not_enabled_is_enabled(run: ScenarioResult) -> None:
    facts = _setup(run)
    assert (facts["c.commit"], facts["c.enabled_before"], facts["c.dax_before"]) == (
        "1",
        "no",
        "no",
    )
    assert facts["c.enabled"] == "yes"
    blocks = f.block_lines(_setup_file(run, "c-single-blocks.txt"))
    assert blocks
    assert all(v == ("online", "Movable") for v in blocks.values()), blocks
    assert "committed but not enabled" in _setup_file(run, "c-journal.txt")


def test_d_absent_tears_down_after_offlining_and_present_rebuilds(run: ScenarioResult) -> None:
    facts = _setup(run)
    assert facts["d.dax_gone"] == "yes"
    kmem = _setup_file(run, "d-iomem-kmem.txt").lower()
    for key in ("d.single_start", "d.pair_start"):
        assert f"{int(facts[key], 16):x}" not in kmem, kmem  # nothing left with kmem
    journal = _setup_file(run, "d-journal.txt")
    assert "offline-block" in journal, journal  # single's memory, before its teardown
    assert journal.count("tear down") == 2, journal
    assert "FAILED" not in journal, journal
    assert "Traceback" not in journal, journal
    assert facts["d.pair.driver"] == "device_dax"
    single = f.block_lines(_setup_file(run, "d-single-blocks.txt"))
    assert single
    assert all(v == ("online", "Movable") for v in single.values()), single


def test_e_killed_between_commit_and_bind_converges(run: ScenarioResult) -> None:
    facts = _setup(run)
    # where it was killed: committed, not enabled, auto-onlining switched off for the bind
    assert (facts["e.commit_at_kill"], facts["e.enabled_at_kill"]) == ("1", "no"), facts
    assert facts["e.auto_online_at_kill"] == "offline", facts
    assert "auto_online_blocks.switched" in facts["e.records_at_kill"], facts
    assert "cxl-regions" in facts["e.records_at_kill"], facts
    # the next daxd enabled that region, put the kernel's setting back, forgot its records
    assert facts["e.enabled"] == "yes"
    assert facts["e.auto_online_after"] == facts["e.auto_online_before"], facts
    assert facts["e.records_after"] == "", facts
    regions = _regions(json.loads(_setup_file(run, "e-list.json")))
    assert regions["single"]["region"] == facts["e.region"]
    assert regions["single"]["verdict"] == "in-sync", regions
    blocks = f.block_lines(_setup_file(run, "e-single-blocks.txt"))
    assert blocks
    assert all(v == ("online", "Movable") for v in blocks.values()), blocks
    journal = _setup_file(run, "e-journal.txt")
    assert "committed but not enabled" in journal, journal
    assert "Traceback" not in journal, journal


def test_f_a_memdev_that_comes_late_is_waited_for(run: ScenarioResult) -> None:
    facts = _setup(run)
    assert facts["f.memdev_gone"] == "yes", facts
    assert facts["f.state_waiting"] == "activating", facts  # no READY while it waits
    assert float(facts["f.ready_after_bind_s"]) < 30, facts  # the event, not region_wait
    regions = _regions(json.loads(_setup_file(run, "f-list.json")))
    assert regions["single"]["verdict"] == "in-sync", regions
    assert facts["f.memdev"] in regions["single"]["memdevs"][0], regions
    blocks = f.block_lines(_setup_file(run, "f-single-blocks.txt"))
    assert blocks
    assert all(v == ("online", "Movable") for v in blocks.values()), blocks
    journal = _setup_file(run, "f-journal.txt")
    assert "READY without it" not in journal, journal
    assert "Traceback" not in journal, journal
    print(f"late memdev: READY {facts['f.ready_after_bind_s']} s after cxl_pci bound it")


def test_main_boot_regions_exist_when_units_after_daxd_start(run: ScenarioResult) -> None:
    facts = f.facts(run)
    probe = dict(line.split("=", 1) for line in run.file("probe.txt").splitlines())
    assert probe["daxd_active"] == "active"
    assert len(probe["regions"].split()) == 2, probe
    assert int(facts["probe_start_usec"]) >= int(facts["daxd_ready_usec"])
    regions = _regions(json.loads(run.file("probe-list.json")))
    assert regions["single"]["verdict"] == "in-sync"
    assert regions["pair"]["verdict"] == "in-sync"
    single = regions["single"]["devices"][0]
    pair = regions["pair"]["devices"][0]
    assert probe[f"{pair}.driver"] == "device_dax"
    assert probe[f"{single}.driver"] == "kmem"
    assert regions["not-fitted"]["verdict"] == "waiting"
    setup = _setup(run)
    renamed = [
        s
        for s in ("0x1000", "0x1001", "0x1002")
        if setup[f"s.memdev.{s}"] != facts[f"m.memdev.{s}"]
    ]
    print(f"memN names that changed between the boots: {renamed or 'none'}")


def test_main_boot_missing_memdev_waited_for_then_reported(run: ScenarioResult) -> None:
    facts = f.facts(run)
    journal = run.file("daxd-journal.txt")
    assert "waiting for serial 0x2000: not on the cxl bus after 30 s; READY without it" in journal
    waited = (int(facts["daxd_ready_usec"]) - int(facts["daxd_start_usec"])) / 1e6
    assert waited >= 30, waited
    assert "Traceback" not in journal

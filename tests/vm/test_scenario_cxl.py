"""CXL memory on the real kernel: volatile type-3 devices under QEMU 10, regions made at runtime.

Two boots share the checks (a boot under TCG costs 1-2 minutes):

**Runtime boot** (Debian's defaults: ``auto_online_blocks=online``,
``memory_hotplug.memmap_on_memory=N``), two host bridges with one 256 MiB device each (serials
0x1000 and 0x1001), a window per host bridge and a 2-way interleaved window over both. With
daxd running, in this order:

a. region A (serial 0x1000): the kernel binds kmem and onlines its blocks in ZONE_NORMAL before
   daxd hears of the device; a movable rule ends with every block Movable, or with the blocks the
   kernel already used reported by name and errno;
c. region B (serial 0x1001) under a devdax rule: from kmem to a /dev/daxN.0 that maps, writes
   and reads back; the two regions sit on two host bridges and are told apart by serial number
   (d, first half);
e. memmap_on_memory as it is: the attribute reads 1, the global parameter is N, daxd reports
   false everywhere, and a rule asking for it gets one verdict and reason for a kmem-bound and a
   devdax-bound device alike;
c. region B back to system-ram;
f. daxd stopped, region B torn down and made again: its new device binds kmem as the kernel
   would without daxd (no new_id left behind);
h. both regions offlined by policy and destroyed while daxd runs: objects gone, no traceback,
   nothing leaked;
d. a 2-way interleaved region over both devices is one device, matched by ``interleave_ways``;
i. kill -9 of daxd in the middle of its conversion to devdax (held by a lab hook where it opens
   kmem/unbind, every block offline): the restarted daxd converges.

**Offline boot** (``memhp_default_state=offline memory_hotplug.memmap_on_memory=1``):

b. a region made while daxd is stopped: kmem bound, blocks offline; daxd starts and is READY
   only once they are Movable, never having been in Normal;
e. memmap_on_memory in effect is reported true;
g. auto-onlining switched on and a 1 GiB region made while daxd runs: the kernel is still adding
   and onlining blocks (memmap on the device makes that slow) when daxd hears of the device;
   daxd plans once it has settled: no FAILED line, and one outcome line per device and pass.
"""

from __future__ import annotations

import json
import re
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

SERIAL_A, SERIAL_B = 0x1000, 0x1001

TWO_BRIDGES = CxlTopology(
    host_bridges=(
        CxlHostBridge((CxlMemdev(256, serial=SERIAL_A),)),
        CxlHostBridge((CxlMemdev(256, serial=SERIAL_B),)),
    ),
    # decoder0.0 -> host bridge 0, decoder0.1 -> host bridge 1, decoder0.2 interleaves both
    windows=(CxlWindow((0,)), CxlWindow((1,)), CxlWindow((0, 1))),
)

COMMON = (
    INSTALL_PAUSE
    + r"""
set -euo pipefail
lab_wait_booted
lab_cxl_wait 2
lab_fact auto_online_blocks "$(cat /sys/devices/system/memory/auto_online_blocks)"
lab_fact memmap_param "$(cat /sys/module/memory_hotplug/parameters/memmap_on_memory)"
props() {  # DAXDEV PREFIX: the device's D-Bus properties as facts
    local p
    for p in State LastError Zone BlocksOnline BlocksTotal BlocksMovable Rule Driver \
        MemmapOnMemory NumaNode; do
        lab_fact "$2.$p" "$(lab_prop "$1" "$p")"
    done
}
settled() { local s; s=$(lab_prop "$1" State); [ "$s" = applied ] || [ "$s" = failed ] \
    || [ "$s" = refused ]; }
"""
)

RUNTIME_SCRIPT = (
    COMMON
    + r"""
lab_policy <<'EOF'
version: 1
rules:
  - name: cxl-interleaved
    match: {interleave_ways: 2}
    mode: system-ram
    zone: movable
  - name: cxl-a-movable
    match: {serial: 0x1000}
    mode: system-ram
    zone: movable
  - name: cxl-b-devdax
    match: {serial: 0x1001}
    mode: devdax
EOF
cp /etc/daxd/policy.yaml /run/policy-start.yaml
systemctl restart daxd.service
lab_journal_mark start

# --- a. region A, onlined into Normal by the kernel; a movable rule -------------------------
ra=$(lab_cxl_create_region 0 0x1000)
da=$(lab_cxl_region_dax "$ra")
lab_fact a.region "$ra"
lab_fact a.dax "$da"
created=$EPOCHREALTIME
lab_wait_until 120 settled "$da"
lab_fact a.settled_s "$(python3 -c "print(round($EPOCHREALTIME - $created, 2))")"
lab_blocks "$da" > "$LAB_OUT/a-blocks.txt"
props "$da" a
lab_fact a.memmap_attr "$(cat /sys/bus/dax/devices/$da/memmap_on_memory)"
lab_fact a.start "$(cat /sys/bus/dax/devices/$da/mapping0/start)"

# --- c. region B on the other host bridge, devdax by serial number ---------------------------
rb=$(lab_cxl_create_region 1 0x1001)
db=$(lab_cxl_region_dax "$rb")
lab_fact b.region "$rb"
lab_fact b.dax "$db"
lab_wait_until 120 settled "$db"
props "$db" b
lab_fact b.driver "$(lab_driver "$db")"
lab_fact b.mmap "$(lab_mmap_check "$db")"
lab_snapshot 1-two-regions "$da" "$db"
daxd list --json > "$LAB_OUT/list-two.json"
daxd list > "$LAB_OUT/list-two.txt"
busctl --json=short get-property org.daxd.Daxd1 "/org/daxd/Daxd1/devices/${da//./_}" \
    org.daxd.Daxd1.Device Cxl > "$LAB_OUT/a-cxl-property.json" || true

# --- e. a rule asking for memmap_on_memory where the kernel cannot --------------------------
lab_policy <<'EOF'
version: 1
rules:
  - name: cxl-memmap
    match: {provider: cxl}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
EOF
daxd plan --json > "$LAB_OUT/e-plan.json" || true
lab_call e.apply daxd apply --json
daxd apply --json > "$LAB_OUT/e-apply.json" 2>/dev/null || true
props "$da" e.a
props "$db" e.b
lab_fact e.a.driver "$(lab_driver "$da")"
lab_fact e.b.driver "$(lab_driver "$db")"

# --- c. region B back to system-ram ----------------------------------------------------------
lab_policy < /run/policy-start.yaml
sed -i 's/mode: devdax/mode: system-ram/' /etc/daxd/policy.yaml
lab_call c.back daxd apply
props "$db" c.back
lab_fact c.back.driver "$(lab_driver "$db")"
lab_blocks "$db" > "$LAB_OUT/b-back-blocks.txt"

# --- f. no new_id left behind: a fresh region binds as without daxd --------------------------
systemctl stop daxd.service
lab_call f.destroy lab_cxl_destroy_region "$rb"
udevadm settle
# Blocks left offline: onlined into Normal with nobody to move them, they soon hold kernel
# allocations and could not be offlined for the teardown in h.
echo offline > /sys/devices/system/memory/auto_online_blocks
rf=$(lab_cxl_create_region 1 0x1001)
df=$(lab_cxl_region_dax "$rf")
udevadm settle
lab_wait_until 30 test -e "/sys/bus/dax/devices/$df/driver"
lab_fact f.region "$rf"
lab_fact f.dax "$df"
lab_fact f.driver "$(lab_driver "$df")"
systemctl start daxd.service
lab_wait_until 120 settled "$df"
echo online > /sys/devices/system/memory/auto_online_blocks

# --- h. both regions offlined by policy, then destroyed while daxd runs ----------------------
lab_policy <<'EOF'
version: 1
rules:
  - name: cxl-interleaved
    match: {interleave_ways: 2}
    mode: system-ram
    zone: movable
  - name: cxl-offline
    match: {provider: cxl}
    mode: system-ram
    online: false
EOF
lab_call h.offline daxd apply
lab_fact h.a.online "$(lab_prop "$da" BlocksOnline)"
lab_fact h.f.online "$(lab_prop "$df" BlocksOnline)"
lab_journal_mark teardown
# Only memory that is offline: --force under online memory leaks the range, and Linux 6.12
# then oopses (seen in the lab).
offline_now() { [ "$(lab_prop "$1" BlocksOnline)" = 0 ]; }
offline_now "$da" && lab_call h.destroy.a cxl destroy-region -f "$ra"
offline_now "$df" && lab_call h.destroy.f cxl destroy-region -f "$rf"
udevadm settle
gone() { ! busctl --json=short tree org.daxd.Daxd1 | grep -q "${1//./_}"; }
lab_wait_until 30 gone "$da"
lab_wait_until 30 gone "$df"
lab_fact h.dax_bus "$(ls /sys/bus/dax/devices | tr '\n' ' ')"
lab_snapshot 2-after-teardown "$da" "$df"
lab_fact h.daxd "$(systemctl is-active daxd.service)"
lab_journal_since teardown > "$LAB_OUT/teardown-journal.txt"

# --- d. a 2-way interleaved region is one device ---------------------------------------------
ri=$(lab_cxl_create_region 2 0x1000 0x1001)
di=$(lab_cxl_region_dax "$ri")
lab_fact i.region "$ri"
lab_fact i.dax "$di"
lab_wait_until 120 settled "$di"
props "$di" i
lab_fact i.size "$(cat /sys/bus/dax/devices/$di/size)"
lab_blocks "$di" > "$LAB_OUT/interleave-blocks.txt"
lab_snapshot 2-interleave "$di"
daxd list --json > "$LAB_OUT/list-interleave.json"

# --- i. kill -9 in the middle of the conversion to devdax ------------------------------------
mapfile -t blocks < <(lab_blocks "$di" | cut -d' ' -f1)
cat > /etc/daxd/policy.yaml <<'EOF'
version: 1
rules:
  - name: cxl-interleaved
    match: {interleave_ways: 2}
    mode: devdax
EOF
# Held where it opens kmem/unbind (every block offline, kmem still bound) and killed there.
lab_pause_at /sys/bus/dax/drivers/kmem/unbind
lab_journal_mark kill
systemctl restart --no-block daxd.service
lab_wait_until 120 test -e /run/daxd/lab-paused
pid=$(systemctl show -p MainPID --value daxd.service)
for b in "${blocks[@]}"; do
    echo "$b $(cat /sys/devices/system/memory/$b/state)"
done > "$LAB_OUT/kill-mid-blocks.txt"
lab_fact kill.driver_mid "$(lab_driver "$di")"
lab_pause_off
kill -KILL "$pid"
new_pid() {
    local p; p=$(systemctl show -p MainPID --value daxd.service)
    [ "$p" != 0 ] && [ "$p" != "$pid" ]
}
lab_wait_until 150 new_pid
lab_wait_until 120 lab_state_is "$di" applied
lab_fact kill.driver "$(lab_driver "$di")"
lab_fact kill.mmap "$(lab_mmap_check "$di")"
lab_snapshot 3-after-kill "$di"
sleep 1
journalctl -b --no-pager -o short-monotonic -u daxd.service > "$LAB_OUT/daxd-journal.txt"
"""
)

OFFLINE_SCRIPT = (
    COMMON
    + r"""
lab_policy <<'EOF'
version: 1
rules:
  - name: cxl-movable
    match: {provider: cxl}
    mode: system-ram
    zone: movable
EOF
# --- b. a region present before daxd starts, blocks left offline by the kernel ----------------
systemctl stop daxd.service
udevadm monitor -k -s memory > "$LAB_OUT/memory-events.txt" &
monitor=$!
ra=$(lab_cxl_create_region 0 0x1000)
da=$(lab_cxl_region_dax "$ra")
lab_fact b.dax "$da"
udevadm settle
lab_fact b.driver_before "$(lab_driver "$da")"
lab_blocks "$da" > "$LAB_OUT/b-blocks-before.txt"
lab_journal_mark start
systemctl start daxd.service  # returns at READY
lab_blocks "$da" > "$LAB_OUT/b-blocks-at-ready.txt"
sleep 1
kill "$monitor"
props "$da" b
lab_fact b.memmap_attr "$(cat /sys/bus/dax/devices/$da/memmap_on_memory)"
daxd list --json > "$LAB_OUT/list-offline.json"

# --- g. a device the kernel is still adding -------------------------------------------------
echo online > /sys/devices/system/memory/auto_online_blocks
lab_journal_mark g
rg=$(lab_cxl_create_region 1 0x1001)
dg=$(lab_cxl_region_dax "$rg")
lab_fact g.dax "$dg"
lab_wait_until 180 settled "$dg"
sleep 6  # a pass for drift after the quiet period
props "$dg" g
lab_blocks "$dg" > "$LAB_OUT/g-blocks.txt"
lab_call g.apply daxd apply
sleep 1
lab_journal_since g > "$LAB_OUT/g-journal.txt"
journalctl -b --no-pager -o short-monotonic -u daxd.service > "$LAB_OUT/daxd-journal.txt"
"""
)


@pytest.fixture(scope="module")
def runtime(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="cxl-runtime",
            script=RUNTIME_SCRIPT,
            cxl=TWO_BRIDGES,
            base_disk=installed_disk,
            files={"pause.py": PAUSE},
            timeout=900,
        )
    ).check()


@pytest.fixture(scope="module")
def offline(lab: Lab, installed_disk: Path) -> ScenarioResult:
    topology = CxlTopology(
        host_bridges=(
            CxlHostBridge((CxlMemdev(256, serial=SERIAL_A),)),
            CxlHostBridge((CxlMemdev(1024, serial=SERIAL_B),)),
        ),
        windows=(CxlWindow((0,)), CxlWindow((1,))),
    )
    return lab.run(
        Scenario(
            name="cxl-offline",
            script=OFFLINE_SCRIPT,
            cxl=topology,
            kernel_args=["memhp_default_state=offline", "memory_hotplug.memmap_on_memory=1"],
            base_disk=installed_disk,
            timeout=900,
        )
    ).check()


def _no_traceback(run: ScenarioResult) -> None:
    journal = run.file("daxd-journal.txt")
    assert "Traceback" not in journal, journal[-3000:]


# -- runtime boot ------------------------------------------------------------------------------


def test_a_movable_rule_moves_kernel_onlined_blocks(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    assert facts["auto_online_blocks"] == "online"
    blocks = f.block_lines(runtime.file("a-blocks.txt"))
    assert blocks, "region A has no memory blocks"
    assert {state for state, _ in blocks.values()} == {"online"}, blocks  # nothing lost
    stuck = [b for b, (_, zones) in blocks.items() if zones != "Movable"]
    if not stuck:
        assert facts["a.State"] == "applied", facts["a.LastError"]
        assert facts["a.Zone"] == "movable"
    else:
        assert facts["a.State"] == "failed"
        assert any(b in facts["a.LastError"] for b in stuck), facts["a.LastError"]
        assert "EBUSY" in facts["a.LastError"]
    assert facts["a.Rule"] == "cxl-a-movable"
    print(f"CXL a: settled {facts['a.settled_s']} s after create-region; stuck: {stuck or 'none'}")


def test_c_devdax_rule_gives_a_device_that_maps(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    assert facts["b.Rule"] == "cxl-b-devdax"
    assert facts["b.State"] == "applied", facts["b.LastError"]
    assert facts["b.driver"] == "device_dax"
    assert facts["b.mmap"] == "ok"
    assert facts["c.back.driver"] == "kmem"
    assert facts["c.back.State"] == "applied", facts["c.back.LastError"]
    back = f.block_lines(runtime.file("b-back-blocks.txt"))
    assert back
    assert all(v == ("online", "Movable") for v in back.values()), back


def test_d_regions_are_told_apart_by_stable_identity(runtime: ScenarioResult) -> None:
    listing = json.loads(runtime.file("list-two.json"))
    devices = {d["name"]: d for d in listing["devices"]}
    facts = f.facts(runtime)
    a, b = devices[facts["a.dax"]], devices[facts["b.dax"]]
    assert [m["serial"] for m in a["cxl"]["memdevs"]] == [SERIAL_A]
    assert [m["serial"] for m in b["cxl"]["memdevs"]] == [SERIAL_B]
    assert a["cxl"]["memdevs"][0]["host_bridge"] != b["cxl"]["memdevs"][0]["host_bridge"]
    assert a["cxl"]["interleave_ways"] == b["cxl"]["interleave_ways"] == 1
    assert facts["i.Rule"] == "cxl-interleaved"
    assert facts["i.State"] == "applied", facts["i.LastError"]
    assert int(facts["i.size"]) == 512 << 20
    interleaved = json.loads(runtime.file("list-interleave.json"))
    (one,) = [d for d in interleaved["devices"] if d["name"] == facts["i.dax"]]
    assert sorted(m["serial"] for m in one["cxl"]["memdevs"]) == [SERIAL_A, SERIAL_B]
    assert one["cxl"]["interleave_ways"] == 2
    blocks = f.block_lines(runtime.file("interleave-blocks.txt"))
    assert len(blocks) == 4, blocks
    assert all(v == ("online", "Movable") for v in blocks.values()), blocks


def test_e_memmap_reported_as_in_effect_with_one_outcome(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    assert facts["memmap_param"] == "N"
    assert facts["a.memmap_attr"] == "1"
    assert facts["a.MemmapOnMemory"] == "false"
    listing = json.loads(runtime.file("list-two.json"))
    for device in listing["devices"]:
        assert device["memmap_on_memory"] is False, device
    plan = json.loads(runtime.file("e-plan.json"))
    outcomes = {
        (p.get("verdict"), p.get("reason"))
        for p in plan["devices"]
        if p["name"] in (facts["a.dax"], facts["b.dax"])
    }
    # One reason; the verdict is "change" for the device that has the rest of the rule to do
    # (devdax -> system-ram) and "refused" for the one that has only the unmet part.
    ((reason,),) = {(r,) for _, r in outcomes}
    assert "memmap_on_memory" in (reason or ""), outcomes
    assert {v for v, _ in outcomes} <= {"change", "refused"}, outcomes
    assert facts["e.a.State"] == facts["e.b.State"], facts
    assert facts["e.a.LastError"] == facts["e.b.LastError"], facts


def test_f_no_kernel_default_left_changed(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    assert facts["f.driver"] == "kmem", "a fresh CXL region did not bind as the kernel would"


def test_h_teardown_while_daxd_runs(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    assert facts["h.a.online"] == facts["h.f.online"] == "0"
    assert f.calls(runtime)["h.destroy.a"][0] == 0
    assert f.calls(runtime)["h.destroy.f"][0] == 0
    after = f.snapshot(runtime, "2-after-teardown")
    assert not after["devices"][facts["a.dax"]]["present"]
    assert not any("System RAM (kmem)" in line for line in after["iomem"]), after["iomem"]
    assert facts["h.daxd"] == "active"
    assert facts["a.dax"] not in facts["h.dax_bus"].split()
    teardown = runtime.file("teardown-journal.txt")
    assert "Traceback" not in teardown, teardown
    assert "FAILED" not in teardown, teardown


def test_i_kill_mid_conversion_converges(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    mid = f.block_lines(runtime.file("kill-mid-blocks.txt"))
    # Killed mid-way, where it was about to unbind kmem: every block offline, kmem bound.
    assert mid
    assert all(state == "offline" for state, _ in mid.values()), mid
    assert facts["kill.driver_mid"] == "kmem", facts
    assert facts["kill.driver"] == "device_dax"
    assert facts["kill.mmap"] == "ok"
    _no_traceback(runtime)


def test_runtime_journal_has_an_outcome_line_per_device(runtime: ScenarioResult) -> None:
    facts = f.facts(runtime)
    journal = runtime.file("daxd-journal.txt")
    assert re.search(rf"{re.escape(facts['a.dax'])}: .*cxl-a-movable", journal), journal[-2000:]


# -- offline boot ------------------------------------------------------------------------------


def test_b_blocks_go_straight_to_movable_before_ready(offline: ScenarioResult) -> None:
    facts = f.facts(offline)
    assert facts["auto_online_blocks"] == "offline"
    assert facts["b.driver_before"] == "kmem"
    before = f.block_lines(offline.file("b-blocks-before.txt"))
    assert before
    assert all(state == "offline" for state, _ in before.values()), before
    at_ready = f.block_lines(offline.file("b-blocks-at-ready.txt"))
    assert at_ready.keys() == before.keys()
    assert all(v == ("online", "Movable") for v in at_ready.values()), at_ready
    # Never through Normal: getting out of Normal needs an offline, and there was none.
    events = offline.file("memory-events.txt")
    offlined = [b for b in before if re.search(rf"offline\s+\S*/{b}\b", events)]
    assert not offlined, events


def test_e_memmap_in_effect_is_reported(offline: ScenarioResult) -> None:
    facts = f.facts(offline)
    assert facts["memmap_param"] == "Y"
    assert facts["b.memmap_attr"] == "1"
    assert facts["b.MemmapOnMemory"] == "true"
    listing: dict[str, Any] = json.loads(offline.file("list-offline.json"))
    (dev,) = [d for d in listing["devices"] if d["name"] == facts["b.dax"]]
    assert dev["memmap_on_memory"] is True


def test_g_device_still_being_added_is_planned_once_settled(offline: ScenarioResult) -> None:
    facts = f.facts(offline)
    journal = offline.file("g-journal.txt")
    assert facts["g.State"] == "applied", facts["g.LastError"]
    blocks = f.block_lines(offline.file("g-blocks.txt"))
    assert len(blocks) == 8, blocks
    assert all(v == ("online", "Movable") for v in blocks.values()), blocks
    assert "FAILED" not in journal, journal
    for dax in (facts["b.dax"], facts["g.dax"]):
        assert re.search(rf"{re.escape(dax)}: .*cxl-movable", journal), (dax, journal)
    _no_traceback(offline)

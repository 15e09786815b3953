"""Scenario 1 (and 10): daxd in a real boot with devdax namespaces already there.

Boot 1 (setup) creates two devdax namespaces, installs daxd with ``make install``, writes a
policy that wants them as movable system RAM with memmap_on_memory, and enables a probe unit that
a device pulls in and that is ordered ``After=daxd.service``. daxd.service itself is *not*
enabled: 90-daxd.rules must pull it in when the dax devices appear at coldplug.

Boot 2 (main, ``memory_hotplug.memmap_on_memory=1``, Debian's ``auto_online_blocks=online``) is
an ordinary boot. The probe records what a unit ordered after daxd finds when it starts: daxd
READY, every block of dax0.0 online in ZONE_MOVABLE, memmap_on_memory 1, the memory on the
device's NUMA node. The same boot then records ``systemd-analyze security daxd.service``
(scenario 10) and the sandboxed unit's sysfs writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.vm import facts as f
from tests.vm.lab import Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

PROBE = r"""#!/bin/bash
# What a unit ordered After=daxd.service finds when it starts.
out=/var/lib/daxd-probe
mkdir -p "$out"
{
    echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
    echo "daxd_active=$(systemctl is-active daxd.service)"
    echo "daxd_substate=$(systemctl show -p SubState --value daxd.service)"
    echo "daxd_status=$(systemctl show -p StatusText --value daxd.service)"
} > "$out/state.tmp"
python3 /usr/local/lib/daxd-probe/snapshot.py dax dax0.0 dax1.0 > "$out/at-start.json"
mv "$out/state.tmp" "$out/state.txt"
"""

PROBE_UNIT = """[Unit]
Description=daxd lab probe: the memory state a unit ordered after daxd.service finds
After=daxd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/daxd-probe/probe

[Install]
WantedBy=dev-dax0.0.device
"""

SETUP = r"""
set -euo pipefail
# The test is that udev starts daxd; `make install` must not have enabled it.
lab_fact daxd_enabled_in_setup "$(systemctl is-enabled daxd.service || true)"
systemctl mask --runtime daxd.service  # not in this boot (/run is gone at the next)
lab_devdax namespace0.0 > /dev/null
lab_devdax namespace1.0 > /dev/null
lab_policy <<'EOF'
version: 1
rules:
  - name: pmem-as-movable-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
    allow_pmem_data_loss: true
EOF
install -D -m 0755 /lab/in/files/probe /usr/local/lib/daxd-probe/probe
install -D -m 0644 "$LAB_IN/snapshot.py" /usr/local/lib/daxd-probe/snapshot.py
install -m 0644 /lab/in/files/daxd-probe.service /etc/systemd/system/daxd-probe.service
systemctl daemon-reload
systemctl enable daxd-probe.service
"""

MAIN = r"""
set -euo pipefail
lab_wait_booted
lab_wait_until 240 test -s /var/lib/daxd-probe/state.txt
cp /var/lib/daxd-probe/state.txt "$LAB_OUT/probe.txt"
cp /var/lib/daxd-probe/at-start.json "$LAB_OUT/at-start.json"
lab_fact daxd_enabled "$(systemctl is-enabled daxd.service || true)"
# Who started daxd: no unit wants it (systemd 257 does not list the SYSTEMD_WANTS= of a device
# as a dependency), and the rule asks for it on an "add" of the device (udevadm test: dry run).
lab_fact device_wants "$(systemctl show -p Wants --value dev-dax0.0.device)"
lab_fact daxd_wanted_by "$(systemctl show -p WantedBy,RequiredBy --value daxd.service | xargs)"
lab_fact daxd_started_usec \
    "$(systemctl show -p ExecMainStartTimestampMonotonic --value daxd.service)"
lab_fact udev_add_wants "$(udevadm test --action=add /sys/bus/dax/devices/dax1.0 2>&1 \
    | sed -n 's/^[[:space:]]*SYSTEMD_WANTS=//p' | head -n 1)"
lab_fact daxd_ready_usec "$(systemctl show -p ActiveEnterTimestampMonotonic --value daxd.service)"
lab_fact probe_start_usec \
    "$(systemctl show -p ExecMainStartTimestampMonotonic --value daxd-probe.service)"
lab_fact probe_result "$(systemctl show -p Result --value daxd-probe.service)"
lab_fact daxd_restarts "$(systemctl show -p NRestarts --value daxd.service)"
lab_fact memmap_param "$(cat /sys/module/memory_hotplug/parameters/memmap_on_memory)"
lab_fact auto_online_blocks "$(cat /sys/devices/system/memory/auto_online_blocks)"
# dax1.0 may have appeared after daxd's coldplug pass; it is handled then.
lab_wait_until 120 lab_state_is dax0.0 applied
lab_wait_until 120 lab_state_is dax1.0 applied
lab_snapshot settled dax0.0 dax1.0
daxd status
journalctl -b -u daxd.service --no-pager -o short-monotonic > "$LAB_OUT/daxd-journal.txt"

# Scenario 10: the sandbox, as systemd of this system rates it.
lab_fact systemd_version "$(systemctl --version | head -n1)"
systemd-analyze security daxd.service --no-pager > "$LAB_OUT/security.txt" 2>&1 || true
tail -n 3 "$LAB_OUT/security.txt"
"""


@pytest.fixture(scope="module")
def boot(lab: Lab) -> ScenarioResult:
    result = lab.run(
        Scenario(
            name="s1-boot-ready",
            setup_script=SETUP,
            script=MAIN,
            nvdimms=[NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)],
            kernel_args=["memory_hotplug.memmap_on_memory=1"],
            install_daxd=True,
            files={"probe": PROBE, "daxd-probe.service": PROBE_UNIT},
        )
    )
    return result.check()


def test_memory_is_movable_ram_when_daxd_is_ready(boot: ScenarioResult) -> None:
    facts = f.facts(boot)
    probe = f.facts(boot, "probe.txt")
    # daxd was not enabled: the dax device pulled it in (90-daxd.rules, SYSTEMD_WANTS).
    assert f.facts(boot.boots[0])["daxd_enabled_in_setup"] == "disabled"
    assert facts["daxd_enabled"] == "disabled"
    assert facts["daxd_wanted_by"] == ""  # no unit pulled it in ...
    assert int(facts["daxd_started_usec"]) > 0  # ... yet it ran in this boot:
    assert "daxd.service" in facts["udev_add_wants"].split()  # the device's "add" asked for it
    assert facts["device_wants"] == "daxd-probe.service"  # (the probe's own .wants/ link)
    assert facts["daxd_restarts"] == "0"
    # The probe started after daxd became READY, and found it active.
    assert probe["daxd_active"] == "active", probe
    assert int(facts["probe_start_usec"]) >= int(facts["daxd_ready_usec"]) > 0
    assert facts["probe_result"] == "success"
    assert facts["memmap_param"] == "Y"
    assert facts["auto_online_blocks"] == "online"  # Debian's default, as it was before the bind

    at_start = f.snapshot(boot, "at-start")
    dev = f.device(at_start, "dax0.0")
    assert dev["driver"] == "kmem", f.dump(dev)
    blocks = f.blocks(at_start, "dax0.0")
    assert len(blocks) == 3, blocks
    assert set(blocks.values()) == {("online", "Movable")}, blocks
    assert f.attr(at_start, "dax0.0", "memmap_on_memory") == "1"
    target = int(f.attr(at_start, "dax0.0", "target_node") or -1)
    assert target == 1
    assert f.node_mem_kib(at_start, target) > 0

    settled = f.snapshot(boot, "settled")
    for name, node in (("dax0.0", 1), ("dax1.0", 2)):
        assert f.device(settled, name)["driver"] == "kmem"
        assert set(f.blocks(settled, name).values()) == {("online", "Movable")}
        assert f.attr(settled, name, "memmap_on_memory") == "1"
        assert f.node_mem_kib(settled, node) > 0
    assert f.orphan_kmem_ranges(settled) == []


def test_sandbox_allows_the_writes_and_rates_as_documented(boot: ScenarioResult) -> None:
    journal = boot.file("daxd-journal.txt")
    # The sandboxed service did every write itself (scenario 1 needs unbind, new_id,
    # memmap_on_memory, and auto_online_blocks switched around the bind, recorded in /run/daxd)
    # and none was refused by the sandbox. Block state writes: scenario 5 (drift).
    for action in (
        "unbind",
        "new-id",
        "set-memmap-on-memory",
        "set-auto-online",
        "restore-auto-online",
    ):
        assert f.journal_lines(journal, f"{action} ", ": ok"), action
    assert "not switching auto_online_blocks" not in journal  # the record could be written
    for refusal in ("Read-only file system", "Permission denied", "Operation not permitted"):
        assert refusal not in journal
    security = boot.file("security.txt")
    match = re.search(r"Overall exposure level for daxd\.service: (\d+\.\d+) (\w+)", security)
    assert match, security[-2000:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security ({f.facts(boot)['systemd_version']}): {match.group(0)}")
    assert exposure <= 2.0
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = re.search(r"`systemd-analyze security daxd\.service` rates it (\d+\.\d+)", readme)
    assert documented, "README.md no longer says how systemd-analyze rates the unit"
    assert exposure == float(documented.group(1)), (exposure, documented.group(0))

"""Scenario 3: the kernel onlined the blocks into ZONE_NORMAL before daxd saw them; daxd moves them.

One boot from the disk with daxd installed, Debian's ``auto_online_blocks=online``, with

- soft-reserved memory (HmemSpec): the kernel binds its dax device to kmem at boot and onlines
  the blocks into ZONE_NORMAL by itself;
- an NVDIMM whose devdax namespace is converted by hand (device_dax unbind, kmem new_id) while
  daxd is stopped (and masked, so udev cannot start it): its blocks too come online in Normal.

Then the policy asks for movable system RAM and daxd starts. The real kernel may refuse to
offline a block that took kernel allocations while it was in Normal (EBUSY): the test accepts
"every block movable", or "the blocks that could not move are reported exactly — State=failed,
LastError naming the first of them with EBUSY and how many more, a FAILED journal line for each
— and every other block is movable", and says which happened (``zone-outcome.json`` in the run
folder, and the test output).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.vm import facts as f
from tests.vm.lab import HmemSpec, Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

SCRIPT = r"""
set -euo pipefail
lab_wait_booted
udevadm settle
hmem=$(basename "$(ls -d /sys/devices/platform/hmem.*/dax*.* | head -n 1)")
lab_fact hmem "$hmem"
lab_fact auto_online_blocks "$(cat /sys/devices/system/memory/auto_online_blocks)"
lab_fact hmem_driver_at_boot "$(lab_driver "$hmem")"
lab_blocks "$hmem" > "$LAB_OUT/hmem-blocks-at-boot.txt"
# 90-daxd.rules started daxd at coldplug; the shipped policy has no rules, so it left the device
# alone. Now it is kept away while an operator converts the NVDIMM by hand.
lab_fact daxd_at_boot "$(systemctl is-active daxd.service || true)"
systemctl stop daxd.service
systemctl mask --runtime daxd.service
lab_devdax namespace0.0 > "$LAB_OUT/ndctl.json"
pmem=$(jq -r '.daxregion.devices[0].chardev' "$LAB_OUT/ndctl.json")
lab_fact pmem "$pmem"
echo "$pmem" > /sys/bus/dax/drivers/device_dax/unbind
echo "$pmem" > /sys/bus/dax/drivers/kmem/new_id
udevadm settle
lab_blocks "$pmem" > "$LAB_OUT/pmem-blocks-by-hand.txt"
lab_snapshot before "$hmem" "$pmem"

lab_policy <<'EOF'
version: 1
rules:
  - name: hmem-as-movable-ram
    match: {provider: hmem}
    mode: system-ram
    zone: movable
  - name: pmem-as-movable-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
EOF
systemctl unmask --runtime daxd.service
lab_journal_mark start
systemctl start daxd.service  # returns at READY: the devices present now are handled
lab_snapshot after "$hmem" "$pmem"
for dev in "$hmem" "$pmem"; do
    for prop in State LastError Zone BlocksOnline BlocksTotal Rule; do
        lab_fact "$dev.$prop" "$(lab_prop "$dev" "$prop")"
    done
done
lab_journal_since start > "$LAB_OUT/daxd-journal.txt"
journalctl -k -b --no-pager | grep -E "unmovable page|offline" > "$LAB_OUT/kernel.txt" || true
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s3-zone-fix",
            script=SCRIPT,
            hmem=[HmemSpec(size_mib=512)],
            nvdimms=[NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,
        )
    ).check()


def _outcome(run: ScenarioResult, name: str) -> dict[str, object]:
    """Check one device after daxd's start; return what happened to its blocks."""
    facts = f.facts(run)
    after = f.blocks(f.snapshot(run, "after"), name)
    assert after, f"{name} has no memory blocks"
    assert {state for state, _ in after.values()} == {"online"}, after  # nothing lost
    stuck = [b for b, (_, zones) in after.items() if zones != "Movable"]
    journal = run.file("daxd-journal.txt")
    state, error = facts[f"{name}.State"], facts[f"{name}.LastError"]
    assert facts[f"{name}.BlocksOnline"] == facts[f"{name}.BlocksTotal"] == str(len(after))
    if not stuck:
        assert state == "applied", (state, error)
        assert facts[f"{name}.Zone"] == "movable"
    else:
        assert state == "failed", (state, error)
        first = re.search(r"memory(\d+)/state", error)
        assert first, error
        assert f"memory{first.group(1)}" in stuck, (error, stuck)
        assert "EBUSY" in error, error
        more = re.search(r"\(and (\d+) more\)", error)
        assert (int(more.group(1)) if more else 0) == len(stuck) - 1, (error, stuck)
        for block in stuck:
            assert f.journal_lines(journal, f"{name}: ", f"{block}/state: FAILED", "EBUSY"), block
    return {
        "device": name,
        "blocks": {b: zones for b, (_, zones) in after.items()},
        "could_not_move": stuck,
        "state": state,
        "last_error": error,
    }


def test_daxd_moves_kernel_onlined_blocks_to_movable(run: ScenarioResult) -> None:
    facts = f.facts(run)
    hmem, pmem = facts["hmem"], facts["pmem"]
    assert facts["auto_online_blocks"] == "online"
    assert facts["hmem_driver_at_boot"] == "kmem"  # the kernel's doing, not daxd's
    # pulled in by the hmem device at coldplug (maybe still starting when the script runs)
    assert facts["daxd_at_boot"] in ("active", "activating")
    for text in (run.file("hmem-blocks-at-boot.txt"), run.file("pmem-blocks-by-hand.txt")):
        zones = [line.split()[2] for line in text.splitlines()]
        assert zones, text
        assert set(zones) == {"Normal"}, text  # the kernel put them into ZONE_NORMAL
    outcomes = [_outcome(run, hmem), _outcome(run, pmem)]
    assert facts[f"{hmem}.Rule"] == "hmem-as-movable-ram"
    assert facts[f"{pmem}.Rule"] == "pmem-as-movable-ram"
    (run.run_dir / "zone-outcome.json").write_text(json.dumps(outcomes, indent=1) + "\n")
    for o in outcomes:
        what = (
            "every block movable"
            if not o["could_not_move"]
            else f"could not move {o['could_not_move']} (reported: {o['last_error']})"
        )
        print(f"scenario 3: {o['device']}: {what}")

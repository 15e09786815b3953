"""Scenarios 7 and 4: pmem without consent is left alone; policy reloads, good and broken.

One boot from the disk with daxd installed, two NVDIMMs:

- scenario 7: the policy wants system-ram for pmem but does not say ``allow_pmem_data_loss``.
  Both devices stay device_dax (``/dev/dax0.0`` maps, writes and reads back) and daxd reports
  them: State=refused, LastError explaining the consent, a journal line;
- scenario 4: a new valid policy and ``systemctl reload daxd``: when the reload returns the new
  policy is applied (dax1.0 movable RAM, its Rule on D-Bus). A broken policy (a misspelt key) and
  ``systemctl reload``: the reload fails, daxd stays up with the old policy in force (dax1.0
  untouched, still its old rule), PolicyError on D-Bus and the journal name ``FILE:LINE:COL``.
  Fixing the file and reloading clears PolicyError;
- one writer (issue 10): the file edited and ``daxd apply`` run, no reload: the command asks the
  daemon, and 10 s later (past the drift grace) the device is still as the file says, with what
  a program wrote to /dev/dax1.0 still there; two ``daxd apply`` at once both succeed; with the
  daemon stopped the command acts itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import facts as f
from tests.vm.lab import Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

DEVDAX_IO = r"""
import mmap, os
fd = os.open("/dev/dax0.0", os.O_RDWR)
size = 2 * 1024 * 1024  # the device's align
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:16] = b"daxd-lab-devdax!"  # (msync() on device-dax gives EINVAL: no flush)
assert m[:16] == b"daxd-lab-devdax!"
print("ok")
"""

SCRIPT = r"""
set -euo pipefail
lab_wait_booted
lab_policy <<'EOF'
version: 1
rules:
  - name: pmem-as-ram-without-consent
    match: {provider: pmem}
    mode: system-ram
EOF
lab_devdax namespace0.0 > /dev/null
lab_devdax namespace1.0 > /dev/null

# --- scenario 7 ---------------------------------------------------------------------------
lab_wait_until 120 lab_state_is dax0.0 refused
lab_wait_until 60 lab_state_is dax1.0 refused
for dev in dax0.0 dax1.0; do
    lab_fact "$dev.driver" "$(lab_driver $dev)"
    lab_fact "$dev.LastError" "$(lab_prop $dev LastError)"
    lab_fact "$dev.Mode" "$(lab_prop $dev Mode)"
done
lab_fact devdax_io "$(python3 /lab/in/files/devdax_io.py 2>&1)"
journalctl -b -u daxd.service --no-pager -o short-monotonic > "$LAB_OUT/consent-journal.txt"

# --- scenario 4: a good policy ------------------------------------------------------------
cat > /etc/daxd/policy.yaml <<'EOF'
version: 1
rules:
  - name: first-stays-devdax
    match: {device: dax0.0}
    mode: devdax
  - name: second-as-ram
    match: {device: dax1.0}
    mode: system-ram
    allow_pmem_data_loss: true
EOF
lab_call reload-good systemctl reload daxd.service
# No waiting: the reload returns once the new policy is applied.
lab_blocks dax1.0 > "$LAB_OUT/after-good-reload.txt"
lab_fact good.dax1.0.Rule "$(lab_prop dax1.0 Rule)"
lab_fact good.dax1.0.State "$(lab_prop dax1.0 State)"
lab_fact good.dax0.0.State "$(lab_prop dax0.0 State)"
lab_fact good.PolicyError "$(lab_manager_prop PolicyError)"
lab_fact good.loaded_at "$(lab_manager_prop PolicyLoadedAt)"

# --- scenario 4: a broken policy ----------------------------------------------------------
cat > /etc/daxd/policy.yaml <<'EOF'
version: 1
rules:
  - name: first-stays-devdax
    match: {device: dax0.0}
    mode: devdax
  - name: second-back-to-devdax
    match: {device: dax1.0}
    mode: devdax
    zon: normal
EOF
lab_journal_mark broken
lab_call reload-broken systemctl reload daxd.service
lab_fact broken.active "$(systemctl is-active daxd.service)"
lab_fact broken.PolicyError "$(lab_manager_prop PolicyError | head -n 1)"
lab_as_nobody busctl --json=short get-property org.daxd.Daxd1 /org/daxd/Daxd1 \
    org.daxd.Daxd1.Manager PolicyError > "$LAB_OUT/policy-error-nobody.json"
lab_fact broken.loaded_at "$(lab_manager_prop PolicyLoadedAt)"
lab_fact broken.dax1.0.Rule "$(lab_prop dax1.0 Rule)"
lab_fact broken.dax1.0.driver "$(lab_driver dax1.0)"
lab_blocks dax1.0 > "$LAB_OUT/after-broken-reload.txt"
sleep 1
lab_journal_since broken > "$LAB_OUT/broken-journal.txt"
systemctl status --no-pager daxd.service > "$LAB_OUT/status-broken.txt" 2>&1 || true

# --- scenario 4: fixed again --------------------------------------------------------------
sed -i 's/^    zon: normal$//' /etc/daxd/policy.yaml
daxd check /etc/daxd/policy.yaml
lab_call reload-fixed systemctl reload daxd.service
lab_fact fixed.PolicyError "$(lab_manager_prop PolicyError)"
lab_fact fixed.dax1.0.driver "$(lab_driver dax1.0)"
lab_fact fixed.dax1.0.Rule "$(lab_prop dax1.0 Rule)"
lab_fact restarts "$(systemctl show -p NRestarts --value daxd.service)"
lab_snapshot end dax0.0 dax1.0

# --- one writer: edit the file, `daxd apply`, no reload; the daemon must keep it ----------
policy_dax1() {  # policy_dax1 MODE: dax0.0 stays devdax, dax1.0 gets MODE
    cat > /etc/daxd/policy.yaml <<EOF
version: 1
rules:
  - name: first-stays-devdax
    match: {device: dax0.0}
    mode: devdax
  - name: second-$1
    match: {device: dax1.0}
    mode: $1
EOF
    [ "$1" != system-ram ] || echo "    allow_pmem_data_loss: true" >> /etc/daxd/policy.yaml
}
policy_dax1 system-ram
lab_call apply-ram daxd apply
lab_fact ram.driver "$(lab_driver dax1.0)"
policy_dax1 devdax
lab_call apply-devdax daxd apply --json
python3 -c 'import mmap, os
fd = os.open("/dev/dax1.0", os.O_RDWR)
m = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:16] = b"written-by-a-app"'
sleep 10  # well past daxd's 5 s drift grace
lab_fact writer.dax1.0.driver "$(lab_driver dax1.0)"
lab_fact writer.dax1.0.Rule "$(lab_prop dax1.0 Rule)"
lab_fact writer.dax1.0.State "$(lab_prop dax1.0 State)"
lab_fact writer.data "$(python3 -c 'import mmap, os
fd = os.open("/dev/dax1.0", os.O_RDWR)
print(mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ)[:16].decode())')"
journalctl -b -u daxd.service --no-pager -o cat > "$LAB_OUT/writer-journal.txt"
# two at once: both are clients; the daemon runs one after the other
policy_dax1 system-ram
daxd apply > "$LAB_OUT/apply-a.txt" 2>&1 & a=$!
daxd apply dax1.0 > "$LAB_OUT/apply-b.txt" 2>&1 & b=$!
rc=0; wait $a || rc=$?; lab_fact concurrent.a $rc
rc=0; wait $b || rc=$?; lab_fact concurrent.b $rc
lab_fact concurrent.driver "$(lab_driver dax1.0)"
# the command without the daemon: acts itself under the lock
systemctl stop daxd.service
policy_dax1 devdax
lab_call apply-local daxd apply
lab_fact local.driver "$(lab_driver dax1.0)"
lab_fact restarts.after "$(systemctl show -p NRestarts --value daxd.service)"
"""


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s4-s7-policy",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,
            files={"devdax_io.py": DEVDAX_IO},
        )
    ).check()


def test_pmem_without_consent_is_left_alone_and_reported(run: ScenarioResult) -> None:
    facts = f.facts(run)
    for dev in ("dax0.0", "dax1.0"):
        assert facts[f"{dev}.driver"] == "device_dax"
        assert facts[f"{dev}.Mode"] == "devdax"
        assert "allow_pmem_data_loss: true" in facts[f"{dev}.LastError"], facts
    assert facts["devdax_io"] == "ok"  # /dev/dax0.0 still works
    journal = run.file("consent-journal.txt")
    assert not f.journal_lines(journal, ": ok rule=")  # not a single write
    for dev in ("dax0.0", "dax1.0"):
        assert f.journal_lines(
            journal,
            f"{dev}: rule 'pmem-as-ram-without-consent' not applied",
            "allow_pmem_data_loss",
        ), journal


def test_reload_applies_a_good_policy_and_keeps_it_when_the_next_is_broken(
    run: ScenarioResult,
) -> None:
    facts = f.facts(run)
    calls = f.calls(run)
    # A good policy: applied by the time `systemctl reload` returns.
    assert calls["reload-good"][0] == 0, calls["reload-good"]
    zones = run.file("after-good-reload.txt").split()
    assert zones[1::3] == ["online"] * 3, zones
    assert zones[2::3] == ["Movable"] * 3, zones
    assert facts["good.dax1.0.Rule"] == "second-as-ram"
    assert facts["good.dax1.0.State"] == facts["good.dax0.0.State"] == "applied"
    assert facts["good.PolicyError"] == ""
    # A broken one: the reload fails and says where; the old policy stays in force.
    rc, text = calls["reload-broken"]
    assert rc != 0, text
    assert facts["broken.active"] == "active"
    location = "/etc/daxd/policy.yaml:9:5"
    assert facts["broken.PolicyError"].startswith(f"{location}: "), facts["broken.PolicyError"]
    assert "zon" in facts["broken.PolicyError"]
    assert location in f.dbus_value(run, "policy-error-nobody.json")  # anyone may read it
    assert facts["broken.loaded_at"] == facts["good.loaded_at"]
    assert facts["broken.dax1.0.Rule"] == "second-as-ram"
    assert facts["broken.dax1.0.driver"] == "kmem"
    assert run.file("after-broken-reload.txt") == run.file("after-good-reload.txt")
    journal = run.file("broken-journal.txt")
    assert f.journal_lines(journal, "policy rejected, keeping the previous one"), journal
    assert f.journal_lines(journal, location), journal
    # Fixed: loads again (dax1.0 back to devdax, as the fixed file now says).
    assert calls["reload-fixed"][0] == 0, calls["reload-fixed"]
    assert facts["fixed.PolicyError"] == ""
    assert facts["fixed.dax1.0.driver"] == "device_dax"
    assert facts["fixed.dax1.0.Rule"] == "second-back-to-devdax"
    assert facts["restarts"] == "0"
    end = f.snapshot(run, "end")
    assert f.orphan_kmem_ranges(end) == []


def test_daxd_apply_goes_through_the_daemon_which_then_keeps_it(run: ScenarioResult) -> None:
    """Edit the file, `daxd apply`, no reload: 10 s later the device is still as the file says,
    and what a program wrote to /dev/dax1.0 meanwhile is still there."""
    facts = f.facts(run)
    calls = f.calls(run)
    rc, text = calls["apply-ram"]
    assert rc == 0, text
    assert "dax1.0: applied (rule 'second-system-ram')" in text, text
    assert "now: system-ram" in text, text
    assert facts["ram.driver"] == "kmem"
    rc, text = calls["apply-devdax"]
    assert rc == 0, text
    assert '"kind": "apply"' in text, text
    assert facts["writer.dax1.0.driver"] == "device_dax"
    assert facts["writer.dax1.0.Rule"] == "second-devdax"
    assert facts["writer.dax1.0.State"] == "applied"
    assert facts["writer.data"] == "written-by-a-app"
    journal = run.file("writer-journal.txt")
    assert not f.journal_lines(journal, "restored to rule"), journal
    assert not f.journal_lines(journal, "changed outside daxd"), journal
    assert facts["concurrent.a"] == facts["concurrent.b"] == "0", (
        run.file("apply-a.txt"),
        run.file("apply-b.txt"),
    )
    assert facts["concurrent.driver"] == "kmem"
    rc, text = calls["apply-local"]
    assert rc == 0, text
    assert facts["local.driver"] == "device_dax"
    assert facts["restarts.after"] == "0"

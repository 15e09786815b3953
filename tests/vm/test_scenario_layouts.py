"""Layouts on a real Linux 6.12: soft-reserved (hmem) memory carved by the policy.

**Probe boot** (no daxd, ``memhp_default_state=offline``, one 512 MiB hmem region):
tests/vm/guest/carving-probe.sh makes the wrong and the right writes of
``daxctl create-device`` / ``destroy-device`` by hand; every answer must be the fake kernel's
(tests/fakekernel/carving_facts.py).

**Layout boot** (daxd installed, a 1536 MiB hmem region at 4 GiB, which the kernel binds to kmem
at boot; ``memhp_default_state=offline``):

a. a layout of a 1 GiB devdax device aligned to 1 GiB and the rest as movable RAM: at READY
   dax0.0 is 1 GiB, align 1 GiB, device_dax, and a program maps 1 GiB of it and reads back what
   it wrote; dax0.1 is the other 512 MiB, every block online Movable; nothing leaked;
b. a reload to another layout while that program holds the mapping: refused, the program named,
   nothing written, the program still alive;
c. the program gone, the same reload: 512 MiB devdax + the rest movable;
d. kill -9 of daxd in the middle of carving (held by a lab hook where it writes dax0.0's align,
   every device empty and unbound): the restarted daxd lays the region out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakekernel.carving_facts import EXPECTED, EXPECTED_READS
from tests.vm import facts as f
from tests.vm.lab import HmemSpec, Lab, Scenario, ScenarioResult
from tests.vm.pause import INSTALL_PAUSE, PAUSE

pytestmark = pytest.mark.vm

PROBE = (Path(__file__).parent / "guest" / "carving-probe.sh").read_text(encoding="utf-8")

# Maps 1 GiB of /dev/$1 (its align), writes a pattern at its start and end, reads it back through
# a second mapping; with "hold" keeps the mapping and sleeps until killed.
MAPPER = r"""
import mmap, os, sys, time
fd = os.open(f"/dev/{sys.argv[1]}", os.O_RDWR)
size = 1 << 30
pattern = os.urandom(4096)
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[:4096] = pattern
m[size - 4096:] = pattern
with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as again:
    ok = again[:4096] == pattern and again[size - 4096:] == pattern
print("ok" if ok else "differs", flush=True)
if sys.argv[2:] == ["hold"]:
    time.sleep(3600)
"""

LAYOUTS = (
    INSTALL_PAUSE
    + r"""
set -euo pipefail
lab_wait_booted
udevadm settle
dev=$(basename "$(ls -d /sys/devices/platform/hmem.*/dax*.0 | head -n 1)")
lab_fact dev "$dev"
lab_fact resource "$(cat /sys/bus/dax/devices/$dev/resource)"
lab_fact driver_at_boot "$(lab_driver "$dev")"
sizes() {
    local d out=()
    for d in $(ls /sys/bus/dax/devices | sort -V); do
        a=/sys/bus/dax/devices/$d
        out+=("$d=$(cat "$a/size")/$(cat "$a/align")/$(lab_driver "$d")")
    done
    echo "${out[*]}"
}
split() {
    cat > /etc/daxd/policy.yaml <<EOF
version: 1
layouts:
  - name: hbm
    match: {provider: hmem}
    devices:
      - {size: $1, align: $2, mode: devdax}
      - {size: rest, mode: system-ram, zone: movable}
EOF
    daxd check /etc/daxd/policy.yaml
}

# --- a. the layout at start ---------------------------------------------------------------------
split 1G 1G
lab_journal_mark a
systemctl restart daxd.service  # returns at READY
lab_fact a.sizes "$(sizes)"
lab_fact a.mmap "$(python3 /lab/in/files/mapper.py dax0.0)"
lab_blocks dax0.1 > "$LAB_OUT/a-blocks.txt"
lab_fact a.kmem_leak "$(grep -c 'System RAM (kmem)' /proc/iomem || true)"
daxd plan --json > "$LAB_OUT/a-plan.json"
lab_journal_since a > "$LAB_OUT/a-journal.txt"

# --- b. a device in use blocks the change -------------------------------------------------------
python3 /lab/in/files/mapper.py dax0.0 hold > "$LAB_OUT/b-mapper.txt" &
mapper=$!
lab_wait_until 60 grep -q ok "$LAB_OUT/b-mapper.txt"
lab_fact b.mapper "$mapper"
split 512M 2M
lab_journal_mark b
systemctl reload daxd.service
b_refused() { lab_journal_since b | grep -q "layout 'hbm'.*refused"; }
lab_wait_until 60 b_refused
sleep 1
lab_fact b.sizes "$(sizes)"
lab_fact b.mapper_alive "$(kill -0 "$mapper" 2>/dev/null && echo yes || echo no)"
lab_journal_since b > "$LAB_OUT/b-journal.txt"

# --- c. the program gone: the change is made ----------------------------------------------------
kill "$mapper"
wait "$mapper" 2>/dev/null || true
lab_journal_mark c
daxd apply > "$LAB_OUT/c-apply.txt" 2>&1 || lab_fact c.apply_rc "$?"
lab_fact c.sizes "$(sizes)"
lab_blocks dax0.1 > "$LAB_OUT/c-blocks.txt"
lab_journal_since c > "$LAB_OUT/c-journal.txt"

# --- d. kill -9 in the middle of carving --------------------------------------------------------
split 1G 1G
lab_pause_at /sys/bus/dax/devices/dax0.0/align
lab_journal_mark d
systemctl restart --no-block daxd.service
lab_wait_until 120 test -e /run/daxd/lab-paused
lab_fact d.sizes_at_kill "$(sizes)"
lab_pause_off
systemctl kill -s KILL daxd.service
sleep 1
systemctl start daxd.service  # joins the automatic restart, returns at READY
lab_fact d.sizes "$(sizes)"
lab_fact d.mmap "$(python3 /lab/in/files/mapper.py dax0.0)"
lab_blocks dax0.1 > "$LAB_OUT/d-blocks.txt"
lab_fact d.kmem_leak "$(grep -c 'System RAM (kmem)' /proc/iomem || true)"
lab_journal_since d > "$LAB_OUT/d-journal.txt"
journalctl -b --no-pager -o short-monotonic -u daxd.service > "$LAB_OUT/daxd-journal.txt"
"""
)

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: Path) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="layouts",
            script=LAYOUTS,
            hmem=[HmemSpec(size_mib=1536)],
            # Offline at boot: onlined in Normal, blocks can refuse to go offline (EBUSY) at
            # random, which test_scenario_zone.py covers; here the carving is under test.
            kernel_args=["memhp_default_state=offline"],
            base_disk=installed_disk,
            files={"pause.py": PAUSE, "mapper.py": MAPPER},
            timeout=900,
        )
    ).check()


def _sizes(text: str) -> dict[str, tuple[int, int, str]]:
    out = {}
    for item in text.split():
        name, rest = item.split("=", 1)
        size, align, driver = rest.split("/")
        out[name] = (int(size), int(align), driver)
    return out


def _all_movable(text: str) -> bool:
    blocks = f.block_lines(text)
    return bool(blocks) and all(v == ("online", "Movable") for v in blocks.values())


def _clean(journal: str) -> None:
    assert "Traceback" not in journal, journal


def test_probe_real_kernel_answers_as_the_fake(lab: Lab) -> None:
    result = lab.run(
        Scenario(
            name="carving-probe",
            script=PROBE,
            hmem=[HmemSpec(size_mib=512)],
            kernel_args=["memhp_default_state=offline"],
        )
    ).check()
    answers = dict(
        line.split(": ", 1) for line in result.file("carving.txt").splitlines() if ": " in line
    )
    reads = dict(
        line.split(": ", 1)
        for line in result.file("carving-reads.txt").splitlines()
        if ": " in line
    )
    wrong = {k: (v, answers.get(k)) for k, v in EXPECTED.items() if answers.get(k) != v}
    assert wrong == {}, f"probe: (fake, real) {wrong}"
    wrong_reads = {k: (v, reads.get(k)) for k, v in EXPECTED_READS.items() if reads.get(k) != v}
    assert wrong_reads == {}, f"reads: (fake, real) {wrong_reads}"


def test_a_layout_at_start(run: ScenarioResult) -> None:
    facts = f.facts(run)
    assert facts["driver_at_boot"] == "kmem"
    assert int(facts["resource"], 16) % GiB == 0
    assert _sizes(facts["a.sizes"]) == {
        "dax0.0": (1 * GiB, 1 * GiB, "device_dax"),
        "dax0.1": (512 * MiB, 2 * MiB, "kmem"),
    }
    assert facts["a.mmap"] == "ok"
    assert _all_movable(_setup(run, "a-blocks.txt"))
    journal = _setup(run, "a-journal.txt")
    assert re.search(r"layout 'hbm' .*laid out \(\d+ writes\)", journal), journal
    _clean(journal)


def test_b_a_mapped_device_blocks_the_change(run: ScenarioResult) -> None:
    facts = f.facts(run)
    assert _sizes(facts["b.sizes"]) == _sizes(facts["a.sizes"])
    assert facts["b.mapper_alive"] == "yes"
    journal = _setup(run, "b-journal.txt")
    assert f"/dev/dax0.0 is in use (pid {facts['b.mapper']}" in journal, journal
    _clean(journal)


def test_c_the_change_once_nothing_uses_it(run: ScenarioResult) -> None:
    facts = f.facts(run)
    assert "c.apply_rc" not in facts, run.file("c-apply.txt")
    assert _sizes(facts["c.sizes"]) == {
        "dax0.0": (512 * MiB, 2 * MiB, "device_dax"),
        "dax0.1": (1 * GiB, 2 * MiB, "kmem"),
    }
    assert _all_movable(_setup(run, "c-blocks.txt"))
    _clean(_setup(run, "c-journal.txt"))


def test_d_killed_mid_carving_converges(run: ScenarioResult) -> None:
    facts = f.facts(run)
    at_kill = _sizes(facts["d.sizes_at_kill"])
    assert all(size == 0 and driver == "none" for size, _, driver in at_kill.values()), at_kill
    assert _sizes(facts["d.sizes"]) == _sizes(facts["a.sizes"])
    assert facts["d.mmap"] == "ok"
    assert _all_movable(_setup(run, "d-blocks.txt"))
    assert facts["d.kmem_leak"] == facts["a.kmem_leak"]
    _clean(run.file("daxd-journal.txt"))


def _setup(run: ScenarioResult, name: str) -> str:
    return run.file(name)

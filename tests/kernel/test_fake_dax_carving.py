"""The fake kernel carves dynamic (hmem, CXL) dax regions as Linux 6.12's drivers/dax/bus.c does:
dax_region/create and delete, a device's size, align and mapping (tests/fakekernel/daxbus.py).

The walk at the top runs the steps of tests/vm/guest/carving-probe.sh on the fake and checks the
answers against tests/fakekernel/carving_facts.py, the tables a VM test compares the real
kernel's answers with.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import SysfsError
from tests.fakekernel import KMEM, FakeKernel, GiB, MiB, Uevent
from tests.fakekernel.carving_facts import EXPECTED, EXPECTED_READS, REGION_SIZE
from tests.kernel.helpers import write_error

SCRIPT = Path(__file__).parents[1] / "vm" / "guest" / "carving-probe.sh"
DAX = "bus/dax"
HMEM = "devices/platform/hmem.0"
REGION = f"{HMEM}/dax_region"


def dev(name: str, attr: str) -> str:
    return f"{DAX}/devices/{name}/{attr}"


def summary(events: list[Uevent]) -> list[tuple[str, str, str]]:
    return [(e.action, e.subsystem, e.sysname) for e in events]


class Probe:
    """carving-probe.sh's helpers on a fake kernel (lab_try_write writes with echo: a newline)."""

    def __init__(self, kernel: FakeKernel, name: str = "dax0.0") -> None:
        self.kernel = kernel
        self.sysfs = kernel.sysfs
        self.root = kernel.sysfs_root
        real = os.path.realpath(self.root / dev(name, ""))
        self.region = os.path.relpath(os.path.dirname(real), self.root) + "/dax_region"
        self.base = int(self.read(dev(name, "resource")), 16)
        self.answers: dict[str, str] = {}
        self.reads: dict[str, str] = {}

    def read(self, rel: str) -> str:
        return self.sysfs.read(rel) or ""

    def probe(self, name: str, rel: str, value: str) -> None:
        try:
            self.sysfs.write(rel, f"{value}\n")
            self.answers[name] = "ok"
        except SysfsError as e:
            self.answers[name] = errno.errorcode[e.errno]

    def region_write(self, name: str, attr: str, value: str) -> None:
        self.probe(name, f"{self.region}/{attr}", value)

    def device(self, name: str, device: str, attr: str, value: str | int) -> None:
        self.probe(name, dev(device, attr), str(value))

    def seen(self, name: str, value: str) -> None:
        self.reads[name] = value

    def seen_id(self, name: str, attr: str) -> None:
        self.seen(name, self.read(f"{self.region}/{attr}").rsplit(".", 1)[-1])

    def mode(self, rel: str) -> str:
        return f"{stat.S_IMODE(os.stat(self.root / rel).st_mode):o}"

    def ranges(self, device: str) -> str:
        d = self.root / dev(device, "")
        found = sorted(int(m[7:]) for m in os.listdir(d) if re.fullmatch(r"mapping\d+", m))
        out = []
        for i in found:
            s = int(self.read(dev(device, f"mapping{i}/start")), 16)
            e = int(self.read(dev(device, f"mapping{i}/end")), 16)
            out.append(f"0x{s - self.base:x}+0x{e - s + 1:x}")
        return ",".join(out)

    def offset(self, rel: str) -> str:
        return f"0x{int(self.read(rel), 16) - self.base:x}"

    def driver(self, device: str) -> str:
        return self.sysfs.link_name(dev(device, "driver")) or "none"

    def offline(self, name: str, device: str) -> None:
        answer = "ok"
        for b in self.kernel.blocks_of(device) if device in self.kernel.devices else []:
            if b.online:
                try:
                    self.sysfs.write(f"{b.devpath}/state", "offline\n")
                except SysfsError as e:
                    answer = errno.errorcode[e.errno] if answer == "ok" else answer
        self.answers[name] = answer


def lab_region(kernel: FakeKernel) -> FakeKernel:
    """The script's machine: a 512 MiB hmem region whose dax0.0 kmem took at boot, offline."""
    kernel.configure(auto_online_blocks="offline")  # memhp_default_state=offline
    kernel.add_hmem_device(size=REGION_SIZE)
    kernel.uevents.clear()
    return kernel


def walk(p: Probe) -> None:
    """carving-probe.sh, step by step (same names, same order)."""
    d0, d1, d2, size = "dax0.0", "dax0.1", "dax0.2", REGION_SIZE
    half, quarter = size // 2, size // 4
    p.seen("region-size", p.read(f"{p.region}/size"))
    p.seen_id("seed-at-boot", "seed")
    # daxR.0 bound to kmem, covering the whole region
    p.region_write("create-garbage", "create", "x")
    p.region_write("create-two", "create", "2")
    p.region_write("create-huge", "create", "99999999999")
    p.region_write("create-no-space", "create", "1")
    p.region_write("delete-missing", "delete", "dax0.9")
    p.region_write("delete-bound", "delete", d0)
    p.device("size-misaligned-bound", d0, "size", 4096)
    p.device("size-garbage", d0, "size", "x")
    p.device("size-bound", d0, "size", half)
    p.device("align-garbage", d0, "align", "x")
    p.device("align-3m", d0, "align", 3 * MiB)
    p.device("align-bound", d0, "align", 4096)
    p.device("mapping-garbage", d0, "mapping", "x")
    p.device("mapping-overlap", d0, "mapping", f"{p.base:#x}-{p.base + 2 * MiB - 1:#x}")
    # released: shrink daxR.0, carve new devices
    p.offline("offline-blocks", d0)
    p.probe("kmem-unbind", f"{DAX}/drivers/kmem/unbind", d0)
    p.region_write("delete-id0-sized", "delete", d0)
    p.device("size-not-multiple", d0, "size", half + MiB)
    p.device("grow-no-space", d0, "size", 2 * size)
    p.device("shrink-half", d0, "size", half)
    p.seen("size-after-shrink", p.read(dev(d0, "size")))
    p.seen("available-after-shrink", p.read(f"{p.region}/available_size"))
    p.seen("ranges-after-shrink", p.ranges(d0))
    p.seen_id("seed-before-create", "seed")
    p.region_write("create", "create", "1")
    p.seen_id("create-reads", "create")
    p.seen_id("seed-after-create", "seed")
    p.seen("new-size", p.read(dev(d1, "size")))
    p.seen("new-align", p.read(dev(d1, "align")))
    p.seen("new-resource", p.offset(dev(d1, "resource")))
    p.seen("new-driver", p.driver(d1))
    p.seen("new-memmap", p.read(dev(d1, "memmap_on_memory")))
    for f in ("create", "delete", "seed", "available_size", "size", "align", "id"):
        p.seen(f"mode-region-{f}", p.mode(f"{p.region}/{f}"))
    for f in ("size", "align", "mapping", "resource", "memmap_on_memory", "target_node"):
        p.seen(f"mode-device-{f}", p.mode(dev(d1, f)))
    p.region_write("create-again", "create", "1")
    p.seen_id("youngest-after-create-again", "create")
    p.seen_id("seed-after-create-again", "seed")
    p.probe("bind-empty", f"{DAX}/drivers/kmem/bind", d1)
    p.device("size-new", d1, "size", quarter)
    p.seen("ranges-new", p.ranges(d1))
    p.seen("available-after-size-new", p.read(f"{p.region}/available_size"))
    p.region_write("delete-sized", "delete", d1)
    p.device("align-1g", d1, "align", GiB)
    p.device("align-4k", d1, "align", 4096)
    p.seen("align-after-4k", p.read(dev(d1, "align")))
    p.seen("region-align-after-4k", p.read(f"{p.region}/align"))
    p.device("size-4k-step", d1, "size", quarter - 4096)
    p.seen("ranges-after-4k-step", p.ranges(d1))
    p.device("align-2m-misfit", d1, "align", 2 * MiB)
    p.seen("align-after-misfit", p.read(dev(d1, "align")))
    p.device("size-4k-back", d1, "size", quarter)
    p.seen("ranges-after-4k-back", p.ranges(d1))
    p.device("align-2m", d1, "align", 2 * MiB)
    p.probe("kmem-bind-new", f"{DAX}/drivers/kmem/bind", d1)
    p.seen_id("seed-after-bind", "seed")
    p.seen_id("youngest-after-bind", "create")
    p.device("size-bound-new", d1, "size", 0)
    p.region_write("delete-bound-new", "delete", d1)
    # holes: first fit from the region's start, new ranges where not adjacent
    p.device("shrink-id0-quarter", d0, "size", quarter)
    p.device("size-third", d2, "size", 64 * MiB)
    p.seen("ranges-third", p.ranges(d2))
    p.device("grow-id0-around", d0, "size", quarter + 64 * MiB)
    p.seen("ranges-id0-after-grow", p.ranges(d0))
    p.seen("resource-id0-after-grow", p.offset(dev(d0, "resource")))
    p.seen("page-offset-id0-mapping1", p.read(dev(d0, "mapping1/page_offset")))
    p.device("shrink-id0-back", d0, "size", quarter)
    p.seen("ranges-id0-after-shrink-back", p.ranges(d0))
    after = p.base + quarter + 64 * MiB
    p.device("mapping-add", d2, "mapping", f"{after:#x}-{after + 32 * MiB - 1:#x}")
    p.seen("ranges-third-after-mapping", p.ranges(d2))
    after += 32 * MiB
    p.device("mapping-misaligned", d2, "mapping", f"{after:#x}-{after + 4095:#x}")
    p.seen("ranges-third-after-misaligned", p.ranges(d2))
    end = p.base + size
    p.device("mapping-outside", d2, "mapping", f"{end:#x}-{end + 2 * MiB - 1:#x}")
    p.device("mapping-taken", d2, "mapping", f"{p.base:#x}-{p.base + 2 * MiB - 1:#x}")
    # back as it was
    p.device("size-third-zero", d2, "size", 0)
    p.region_write("delete-third", "delete", d2)
    p.seen_id("youngest-after-delete", "create")
    p.seen_id("seed-after-delete", "seed")
    p.offline("offline-blocks-new", d1)
    p.probe("kmem-unbind-new", f"{DAX}/drivers/kmem/unbind", d1)
    p.device("size-new-zero", d1, "size", 0)
    p.region_write("delete-new", "delete", d1)
    p.device("shrink-id0-zero", d0, "size", 0)
    p.seen("available-empty", p.read(f"{p.region}/available_size"))
    p.region_write("delete-id0-empty", "delete", d0)
    p.region_write("create-after-free", "create", "1")
    p.seen_id("create-after-free-reads", "create")
    p.seen_id("seed-after-create-after-free", "seed")
    p.region_write("delete-after-free", "delete", d1)
    p.device("grow-back", d0, "size", size)
    p.seen("ranges-id0-back", p.ranges(d0))
    p.probe("kmem-bind-back", f"{DAX}/drivers/kmem/bind", d0)
    p.seen("driver-id0-back", p.driver(d0))


def test_the_probe_walk_gives_the_expected_answers(fake_kernel: FakeKernel) -> None:
    p = Probe(lab_region(fake_kernel))
    walk(p)
    assert list(p.answers.items()) == list(EXPECTED.items())
    assert list(p.reads.items()) == list(EXPECTED_READS.items())
    assert not fake_kernel.leaks


def test_the_script_has_the_probes_in_the_same_order() -> None:
    text = SCRIPT.read_text()
    probes = re.findall(r"^(?:region|device|probe|offline) ([a-z0-9-]+) ", text, re.M)
    assert probes == list(EXPECTED)
    reads: list[str] = []
    for line in text.splitlines():
        if m := re.match(r"for f in ([a-z_ ]+); do", line):
            loop = m.group(1).split()
        elif m := re.match(r'\s+seen "(mode-[a-z]+-)\$f"', line):
            reads += [m.group(1) + f for f in loop]
        elif m := re.match(r"seen ([a-z0-9-]+) ", line):
            reads.append(m.group(1))
    assert reads == list(EXPECTED_READS)


# --- create -------------------------------------------------------------------------------------
@pytest.fixture
def room(fake_kernel: FakeKernel) -> FakeKernel:
    """The script's 512 MiB hmem region, dax0.0 unbound and shrunk to its first 256 MiB."""
    lab_region(fake_kernel)
    fake_kernel.sysfs.write(f"{DAX}/drivers/kmem/unbind", "dax0.0")
    fake_kernel.sysfs.write(dev("dax0.0", "size"), str(256 * MiB))
    fake_kernel.uevents.clear()
    return fake_kernel


def test_create_adds_an_empty_unbound_device(room: FakeKernel) -> None:
    room.sysfs.write(f"{REGION}/create", "1")
    assert summary(room.uevents) == [("add", "dax", "dax0.1")]  # probed, but nothing binds
    assert os.path.realpath(room.sysfs_root / dev("dax0.1", "")) == str(
        room.sysfs_root / HMEM / "dax0.1"
    )
    assert room.sysfs.read(dev("dax0.1", "size")) == "0"
    assert room.sysfs.link_name(dev("dax0.1", "driver")) is None
    assert not (room.sysfs_root / dev("dax0.1", "mapping0")).exists()
    assert room.sysfs.read(f"{REGION}/seed") == "dax0.1"
    assert room.sysfs.read(f"{REGION}/create") == "dax0.1"
    assert read_state(room.sysfs).devices["dax0.1"].is_seed


def test_create_takes_the_lowest_free_id_and_tracks_seed_and_youngest(room: FakeKernel) -> None:
    for _ in range(3):
        room.sysfs.write(f"{REGION}/create", "1")
    assert (room.sysfs.read(f"{REGION}/seed"), room.sysfs.read(f"{REGION}/create")) == (
        "dax0.1",
        "dax0.3",
    )
    room.sysfs.write(f"{REGION}/delete", "dax0.1")
    assert room.sysfs.read(f"{REGION}/seed") == ""
    assert room.sysfs.read(f"{REGION}/create") == "dax0.3"
    room.sysfs.write(f"{REGION}/create", "1")
    assert sorted(d for d in room.devices if d.startswith("dax0.")) == [
        "dax0.0",
        "dax0.1",
        "dax0.2",
        "dax0.3",
    ]
    assert room.sysfs.read(f"{REGION}/seed") == "dax0.1"
    assert room.sysfs.read(f"{REGION}/create") == "dax0.1"


@pytest.mark.parametrize(
    ("value", "err"),
    [("x", errno.EINVAL), ("0", errno.EINVAL), ("-1", errno.EINVAL), ("4294967296", errno.ERANGE)],
)
def test_create_takes_only_one(room: FakeKernel, value: str, err: int) -> None:
    assert write_error(room.sysfs, f"{REGION}/create", value) == err
    assert "dax0.1" not in room.devices


@pytest.mark.parametrize("value", ["1\n", "0x1", "01", "+1", "1\0"])
def test_create_parses_with_kstrtoint(room: FakeKernel, value: str) -> None:
    room.sysfs.write(f"{REGION}/create", value)
    assert "dax0.1" in room.devices


def test_static_regions_cannot_be_carved(pmem_kernel: FakeKernel) -> None:
    rel = f"{pmem_kernel.bus.regions[0].parent}/dax_region"
    assert pmem_kernel.sysfs.read(f"{rel}/size") == str(pmem_kernel.devices["dax0.0"].size)
    for attr in ("create", "delete", "seed", "available_size"):
        assert not pmem_kernel.tree.exists(f"{rel}/{attr}")
    assert write_error(pmem_kernel.sysfs, f"{rel}/create", "1") == errno.ENOENT
    assert write_error(pmem_kernel.sysfs, dev("dax0.0", "size"), "0") == errno.EACCES  # [facts]
    assert write_error(pmem_kernel.sysfs, dev("dax0.0", "align"), "4096") == errno.EACCES
    assert not pmem_kernel.tree.exists(dev("dax0.0", "mapping"))


# --- delete -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["dax0.1", "dax0.1\n", "dax0.1\0"])
def test_delete_unregisters_the_device(room: FakeKernel, value: str) -> None:
    room.sysfs.write(f"{REGION}/create", "1")
    room.uevents.clear()
    room.sysfs.write(f"{REGION}/delete", value)
    assert summary(room.uevents) == [("remove", "dax", "dax0.1")]
    assert not room.tree.exists(dev("dax0.1", ""))
    assert not room.tree.exists(f"{HMEM}/dax0.1")
    assert room.sysfs.read(f"{REGION}/seed") == ""


def test_delete_names_a_child_of_this_region(room: FakeKernel) -> None:
    room.add_hmem_device(size=GiB, bound=None)  # dax1.0 in hmem.1
    room.add_seed_device(1)
    assert write_error(room.sysfs, f"{REGION}/delete", "dax1.1") == errno.ENXIO
    assert write_error(room.sysfs, f"{REGION}/delete", "dax0") == errno.ENXIO
    room.sysfs.write("devices/platform/hmem.1/dax_region/delete", "dax1.1")


def test_delete_keeps_id_0_and_busy_devices(room: FakeKernel) -> None:
    room.sysfs.write(dev("dax0.0", "size"), "0")
    assert write_error(room.sysfs, f"{REGION}/delete", "dax0.0") == errno.EBUSY
    room.sysfs.write(f"{REGION}/create", "1")
    room.sysfs.write(dev("dax0.1", "size"), str(128 * MiB))
    assert write_error(room.sysfs, f"{REGION}/delete", "dax0.1") == errno.EBUSY
    room.sysfs.write(f"{DAX}/drivers/kmem/bind", "dax0.1")
    assert write_error(room.sysfs, f"{REGION}/delete", "dax0.1") == errno.EBUSY
    assert "dax0.1" in room.devices


# --- size ---------------------------------------------------------------------------------------
def test_growing_adds_mappings_and_shrinking_takes_them_away(room: FakeKernel) -> None:
    r = room.bus.regions[0]
    room.sysfs.write(f"{REGION}/create", "1")
    room.sysfs.write(dev("dax0.1", "size"), str(128 * MiB))
    room.sysfs.write(dev("dax0.0", "size"), str(128 * MiB))  # a hole at 128 MiB
    room.uevents.clear()
    room.sysfs.write(dev("dax0.0", "size"), str(384 * MiB))
    assert room.devices["dax0.0"].ranges == [
        (r.start, r.start + 256 * MiB - 1),  # the hole after it: extended
        (r.start + 384 * MiB, r.start + 512 * MiB - 1),  # past dax0.1: a new range
    ]
    assert room.sysfs.read(dev("dax0.0", "mapping1/start")) == f"{r.start + 384 * MiB:#x}"
    assert room.sysfs.read(dev("dax0.0", "mapping1/page_offset")) == f"{256 * MiB // 4096:#x}"
    assert room.sysfs.read(dev("dax0.0", "size")) == str(384 * MiB)
    assert room.sysfs.read(f"{REGION}/available_size") == "0"
    assert room.uevents == []  # resizing sends none; mappingN devices have no bus or class
    room.sysfs.write(dev("dax0.0", "size"), str(64 * MiB))
    assert room.devices["dax0.0"].ranges == [(r.start, r.start + 64 * MiB - 1)]
    assert not room.tree.exists(dev("dax0.0", "mapping1"))
    assert room.sysfs.read(dev("dax0.0", "mapping0/end")) == f"{r.start + 64 * MiB - 1:#x}"
    room.sysfs.write(dev("dax0.0", "size"), "0")
    assert not room.tree.exists(dev("dax0.0", "mapping0"))
    assert room.sysfs.read(dev("dax0.0", "resource")) == f"{r.start:#x}"


def test_growth_starts_at_the_region_start(room: FakeKernel) -> None:
    r = room.bus.regions[0]
    room.sysfs.write(f"{REGION}/create", "1")
    room.sysfs.write(dev("dax0.1", "size"), str(64 * MiB))  # right after dax0.0
    room.sysfs.write(dev("dax0.0", "size"), "0")
    room.sysfs.write(dev("dax0.0", "size"), str(512 * MiB - 64 * MiB))
    assert room.devices["dax0.1"].ranges == [(r.start + 256 * MiB, r.start + 320 * MiB - 1)]
    assert room.devices["dax0.0"].ranges == [
        (r.start, r.start + 256 * MiB - 1),
        (r.start + 320 * MiB, r.start + 512 * MiB - 1),
    ]
    assert room.sysfs.read(dev("dax0.0", "resource")) == f"{r.start:#x}"


def test_too_much_growth_allocates_nothing(room: FakeKernel) -> None:
    before = list(room.devices["dax0.0"].ranges)
    assert write_error(room.sysfs, dev("dax0.0", "size"), str(768 * MiB)) == errno.ENOSPC
    assert room.devices["dax0.0"].ranges == before


@pytest.mark.parametrize(
    ("value", "err"),
    [("x", errno.EINVAL), ("1048576", errno.EINVAL), ("18446744073709551616", errno.ERANGE)],
)
def test_size_values(room: FakeKernel, value: str, err: int) -> None:
    assert write_error(room.sysfs, dev("dax0.0", "size"), value) == err


def test_size_of_a_bound_device_is_ebusy_even_unchanged(hmem_kernel: FakeKernel) -> None:
    assert write_error(hmem_kernel.sysfs, dev("dax0.0", "size"), str(2 * GiB)) == errno.EBUSY
    assert write_error(hmem_kernel.sysfs, dev("dax0.0", "size"), "4096") == errno.EINVAL


# --- align --------------------------------------------------------------------------------------
def test_align_needs_whole_ranges(room: FakeKernel) -> None:
    room.sysfs.write(dev("dax0.0", "size"), str(GiB // 2))
    assert write_error(room.sysfs, dev("dax0.0", "align"), str(GiB)) == errno.EINVAL
    room.sysfs.write(dev("dax0.0", "size"), "0")
    room.sysfs.write(dev("dax0.0", "align"), str(GiB))  # no range: nothing to check
    assert room.sysfs.read(dev("dax0.0", "align")) == str(GiB)
    assert write_error(room.sysfs, dev("dax0.0", "size"), str(GiB // 2)) == errno.EINVAL
    assert room.sysfs.read(f"{REGION}/align") == str(2 * MiB)


@pytest.mark.parametrize(
    ("value", "err"),
    [("x", errno.ENXIO), ("", None), ("8192", errno.EINVAL), ("0", errno.EINVAL)],
)
def test_align_values(room: FakeKernel, value: str, err: int | None) -> None:
    if err is None:
        room.sysfs.write(dev("dax0.0", "align"), value)  # never reaches align_store()
        return
    assert write_error(room.sysfs, dev("dax0.0", "align"), value) == err


# --- mapping ------------------------------------------------------------------------------------
def test_mapping_appends_a_range_at_that_address(room: FakeKernel) -> None:
    r = room.bus.regions[0]
    start = r.start + 256 * MiB
    room.sysfs.write(dev("dax0.0", "mapping"), f"{start:x}-{start + 64 * MiB - 1:x}\n")
    assert room.devices["dax0.0"].ranges[1] == (start, start + 64 * MiB - 1)  # not merged
    assert room.sysfs.read(f"{REGION}/available_size") == str(192 * MiB)
    assert room.tree.exists(dev("dax0.0", "mapping1/start"))


@pytest.mark.parametrize(
    ("value", "err"),
    [
        ("0x100000000", errno.EINVAL),  # no "-"
        ("1-2-3", errno.EINVAL),
        ("g-1", errno.EINVAL),
        ("10000000000000000-0", errno.ERANGE),
    ],
)
def test_mapping_values(room: FakeKernel, value: str, err: int) -> None:
    assert write_error(room.sysfs, dev("dax0.0", "mapping"), value) == err


def test_mapping_of_zero_length(room: FakeKernel) -> None:
    start = room.bus.regions[0].start + 256 * MiB
    zero = f"{start:#x}-{start - 1:#x}"
    assert write_error(room.sysfs, dev("dax0.0", "mapping"), zero) == errno.EBUSY
    backwards = f"{start:#x}-{start - 2 * MiB - 1:#x}"
    assert write_error(room.sysfs, dev("dax0.0", "mapping"), backwards) == errno.ENOMEM
    room.sysfs.write(dev("dax0.0", "size"), "0")
    room.sysfs.write(dev("dax0.0", "mapping"), zero)  # the seed special case: nothing
    assert room.devices["dax0.0"].ranges == []


# --- seeds and drivers --------------------------------------------------------------------------
def test_binding_the_seed_clears_it(room: FakeKernel) -> None:
    room.sysfs.write(f"{REGION}/create", "1")
    room.sysfs.write(f"{REGION}/create", "1")
    room.sysfs.write(dev("dax0.2", "size"), str(128 * MiB))
    room.sysfs.write(f"{DAX}/drivers/kmem/bind", "dax0.2")  # not the seed: seed stays
    assert room.sysfs.read(f"{REGION}/seed") == "dax0.1"
    room.sysfs.write(dev("dax0.1", "size"), str(128 * MiB))
    assert write_error(room.sysfs, f"{DAX}/drivers/device_dax/bind", "dax0.1") == errno.ENODEV
    room.sysfs.write(f"{DAX}/drivers/kmem/bind", "dax0.1")
    assert room.devices["dax0.1"].driver == KMEM
    assert room.sysfs.read(f"{REGION}/seed") == ""
    assert [b.index for b in room.blocks_of("dax0.1")] == [
        (room.bus.regions[0].start + 384 * MiB) // (128 * MiB)
    ]


def test_a_cxl_region_carves_the_same_way(fake_kernel: FakeKernel) -> None:
    fake_kernel.configure(auto_online_blocks="offline")
    d = fake_kernel.add_cxl_device(size=GiB)
    rid = d.region.id
    region = f"{os.path.dirname(d.devpath)}/dax_region"
    fake_kernel.sysfs.write(f"{DAX}/drivers/kmem/unbind", d.name)
    fake_kernel.sysfs.write(dev(d.name, "size"), str(GiB // 2))
    fake_kernel.sysfs.write(f"{region}/create", "1")
    new = f"dax{rid}.1"
    assert os.path.dirname(fake_kernel.devices[new].devpath) == os.path.dirname(d.devpath)
    assert fake_kernel.sysfs.read(dev(d.name, "memmap_on_memory")) == "1"  # cxl.c sets it
    assert fake_kernel.sysfs.read(dev(new, "memmap_on_memory")) == "0"  # create_store() does not
    fake_kernel.sysfs.write(dev(new, "size"), str(GiB // 2))
    fake_kernel.sysfs.write(f"{DAX}/drivers/kmem/bind", new)
    state = read_state(fake_kernel.sysfs)
    assert state.devices[new].driver == KMEM
    assert state.devices[new].size == GiB // 2

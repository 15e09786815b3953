"""The fake kernel's CXL tree has the real one's shape: same objects, paths, attributes, modes,
links, values and uevents as Linux 6.12 showed in the lab (tests/vm/snapshots/cxl-observed-*.json).

Each fixture holds the stages of a run laid out as tests/vm/sysfs_fixture.collect() lays them out.
The fake machine is built from what the fixture shows (host bridges and their uids, memdevs and
their serials, windows, the region and its targets), in the order the real kernel numbered them,
so a fixture the lab records again with another topology is checked the same way.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daxd.kernel.scan import read_state
from tests.fakekernel import FakeKernel
from tests.fakekernel.snapshot import (
    cxl_shape,
    dax_shape,
    dax_snapshot,
    kernel_events,
    number,
)

SNAPSHOTS = Path(__file__).resolve().parents[1] / "vm" / "snapshots"
FIXTURES = ["cxl-observed-region.json", "cxl-observed-interleave.json"]
EVENT_SUBSYSTEMS = frozenset({"cxl", "dax", "memory", "node"})


def load(name: str) -> dict[str, Any]:
    doc = json.loads((SNAPSHOTS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def only_stage(doc: dict[str, Any]) -> dict[str, Any]:
    (stage,) = doc["stages"].values()
    assert isinstance(stage, dict)
    return stage


@dataclass(frozen=True)
class Region:
    rid: int
    window: str
    serials: tuple[int, ...]
    size: int
    device: str
    target_node: int


@dataclass(frozen=True)
class Machine:
    """The hardware a stage shows, in the kernel's numbering order."""

    bridges: tuple[int, ...]  # uids, by port id
    memdevs: tuple[tuple[int, int], ...]  # (serial, host bridge uid), by memN
    windows: tuple[tuple[tuple[int, ...], int, int, int], ...]  # (uids, start, size, granularity)
    regions: tuple[Region, ...]


def value(obj: dict[str, Any], attr: str) -> str:
    found = obj["attrs"][attr]["value"]
    assert isinstance(found, str)
    return found


def machine(stage: dict[str, Any]) -> Machine:
    cxl = stage["cxl"]
    uid_of = {name: int(hb["uid"]) for name, hb in cxl["_host_bridges"].items()}

    def bridge_of(path: str) -> int:
        return uid_of[next(p for p in path.split("/") if p.startswith("pci0000:"))]

    def named(prefix: str) -> list[str]:
        found = [n for n in cxl if n.startswith(prefix) and n[len(prefix) :].isdigit()]
        return sorted(found, key=number)

    bridges = tuple(
        uid_of[posixpath.basename(cxl[p]["attrs"]["uport"]["target"])] for p in named("port")
    )
    serial_of = {m: int(value(cxl[m], "serial"), 16) for m in named("mem")}
    memdevs = tuple((serial_of[m], bridge_of(cxl[m]["realpath"])) for m in named("mem"))
    windows = tuple(
        (
            tuple(int(u) for u in value(cxl[w], "target_list").split(",")),
            int(value(cxl[w], "start"), 16),
            int(value(cxl[w], "size"), 16),
            int(value(cxl[w], "interleave_granularity")),
        )
        for w in sorted((n for n in cxl if n.startswith("decoder0.")), key=number)
    )
    regions = []
    for r in named("region"):
        obj = cxl[r]
        targets = sorted((a for a in obj["attrs"] if a.startswith("target")), key=number)
        serials = []
        for t in targets:
            endpoint = posixpath.basename(posixpath.dirname(cxl[value(obj, t)]["realpath"]))
            memdev = posixpath.basename(cxl[endpoint]["attrs"]["uport"]["target"])
            serials.append(serial_of[memdev])
        (device,) = (n for n, d in stage["devices"].items() if f"/{r}/dax_region" in d["realpath"])
        regions.append(
            Region(
                rid=number(r),
                window=posixpath.basename(posixpath.dirname(obj["realpath"])),
                serials=tuple(serials),
                size=int(value(obj, "size"), 16),
                device=device,
                target_node=int(stage["devices"][device]["attrs"]["target_node"]["value"]),
            )
        )
    return Machine(bridges, memdevs, windows, tuple(regions))


def build(base: Path, stage: dict[str, Any], m: Machine) -> FakeKernel:
    kernel = FakeKernel(
        base,
        block_size=int(stage["memory"]["block_size_bytes"], 16),
        auto_online_blocks=stage["memory"]["auto_online_blocks"],
        memmap_on_memory=stage["memory_hotplug_params"]["memmap_on_memory"],
    )
    for uid in m.bridges:
        kernel.add_cxl_host_bridge(uid)
    for serial, uid in m.memdevs:
        kernel.add_cxl_memdev(serial, uid)
    nodes = {r.window: r.target_node for r in m.regions}
    for i, (uids, start, size, granularity) in enumerate(m.windows):
        name = kernel.add_cxl_window(
            uids,
            start=start,
            size=size,
            granularity=granularity,
            target_node=nodes.get(f"decoder0.{i}"),
        )
        assert name == f"decoder0.{i}"
    kernel.uevents.clear()
    for r in m.regions:
        kernel.add_cxl_device(size=r.size, serials=r.serials, window=r.window, region=r.rid)
    return kernel


@pytest.fixture(params=FIXTURES)
def observed(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(str(request.param))


@pytest.fixture
def pair(observed: dict[str, Any], fake_kernel_base: Path) -> tuple[dict[str, Any], FakeKernel]:
    stage = only_stage(observed)
    return stage, build(fake_kernel_base, stage, machine(stage))


def test_the_fixtures_are_lab_snapshots() -> None:
    for name in FIXTURES:
        doc = load(name)
        assert {"about", "kernel", "cmdline", "stages", "writes"} <= set(doc)
        stage = only_stage(doc)
        assert stage["kernel"].startswith("6.12.")
        assert stage["cxl"]
        assert stage["devices"]


def test_the_machine_is_read_from_the_fixture() -> None:
    m = machine(only_stage(load("cxl-observed-interleave.json")))
    assert m.bridges == (52, 12)  # port1 is below pci0000:34 (uid 52)
    assert m.memdevs == ((0x1001, 52), (0x1000, 12))  # mem0 is serial 0x1001
    assert [w[0] for w in m.windows] == [(12,), (52,), (12, 52)]
    (region,) = m.regions
    assert (region.rid, region.window, region.serials) == (2, "decoder0.2", (0x1000, 0x1001))


def test_cxl_bus_objects_have_the_real_shape(pair: tuple[dict[str, Any], FakeKernel]) -> None:
    stage, kernel = pair
    real, fake = cxl_shape(stage["cxl"]), cxl_shape(dax_snapshot(kernel, [])["cxl"])
    assert sorted(fake) == sorted(real)
    for name in real:
        assert fake[name] == real[name], name


def test_dax_devices_have_the_real_shape(pair: tuple[dict[str, Any], FakeKernel]) -> None:
    stage, kernel = pair
    real = dax_shape(stage)
    fake = dax_shape(dax_snapshot(kernel, sorted(stage["devices"])))
    assert sorted(fake) == sorted(real)
    for name in real:
        assert fake[name] == real[name], name


def test_creating_a_region_sends_the_real_uevents(fake_kernel_base: Path) -> None:
    doc = load("cxl-observed-region.json")
    stage = only_stage(doc)
    kernel = build(fake_kernel_base, stage, machine(stage))
    real = kernel_events(doc["udev_events"], EVENT_SUBSYSTEMS)
    fake = [
        {**e.properties, "source": "KERNEL"}
        for e in kernel.uevents
        if e.subsystem in EVENT_SUBSYSTEMS
    ]
    assert kernel_events(fake, EVENT_SUBSYSTEMS) == real


def test_daxd_reads_the_identity_of_the_fake_as_of_the_real(
    pair: tuple[dict[str, Any], FakeKernel],
) -> None:
    stage, kernel = pair
    state = read_state(kernel.sysfs)
    assert state.diagnostics == ()
    for region in machine(stage).regions:
        cxl = state.devices[region.device].cxl
        assert cxl is not None
        assert cxl.region == f"region{region.rid}"
        assert cxl.window == region.window
        assert cxl.serials == region.serials

"""Building and tearing down CXL regions on the fake kernel, which answers the writes of
``cxl create-region`` as Linux 6.12 does: a built region is committed and enabled and brings
its dax device (kmem-bound by the kernel); a write that fails leaves nothing of the region
behind (no half-committed region, no DPA held, the id offered again); a region that is there
costs no write; a teardown leaves the memdevs free and leaks nothing."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from daxd.apply.cxl_regions import apply_region, apply_regions, read_leftovers
from daxd.kernel.cxl_topology import read_cxl_topology
from daxd.kernel.scan import read_state
from daxd.plan.cxl_regions import RegionPlan, RegionVerdict, plan_region
from daxd.policy.model import Policy
from daxd.policy.regions import CxlRegionSpec
from tests.fakekernel import FakeKernel, MiB
from tests.plan.test_cxl_region_plan import spec

A, B = 0x1000, 0x1001


def machine(kernel: FakeKernel) -> FakeKernel:
    """The lab's: host bridges 52 and 12, a 256 MiB memdev below each, a window per host bridge
    and a 2-way one at 8K."""
    for uid in (52, 12):
        kernel.add_cxl_host_bridge(uid)
    kernel.add_cxl_memdev(B, 52, ram_size=256 * MiB)
    kernel.add_cxl_memdev(A, 12, ram_size=256 * MiB)
    kernel.add_cxl_window([12], start=0x1_1000_0000)
    kernel.add_cxl_window([52], start=0x2_1000_0000)
    kernel.add_cxl_window([12, 52], start=0x3_1000_0000, granularity=8192)
    return kernel


def plan(kernel: FakeKernel, s: CxlRegionSpec) -> RegionPlan:
    return plan_region(s, read_cxl_topology(kernel.sysfs), read_state(kernel.sysfs))


def test_a_region_is_built_and_brings_its_dax_device(fake_kernel: FakeKernel) -> None:
    machine(fake_kernel)
    p = plan(fake_kernel, spec(A))
    assert p.verdict is RegionVerdict.CREATE, p.reason
    r = apply_region(fake_kernel.sysfs, p)
    assert r.ok, r.error
    assert r.devices == ("dax0.0",)
    assert len(r.results) == len(p.steps)
    assert all(x.ok for x in r.results)
    topo = read_cxl_topology(fake_kernel.sysfs)
    (region,) = topo.regions
    assert (region.name, region.window, region.committed, region.bound) == (
        "region0",
        "decoder0.0",
        True,
        True,
    )
    assert fake_kernel.devices["dax0.0"].driver == "kmem"  # the kernel binds it by itself
    again = plan(fake_kernel, spec(A))
    assert again.verdict is RegionVerdict.IN_SYNC
    writes = len(fake_kernel.writes)
    assert apply_region(fake_kernel.sysfs, again).ok
    assert len(fake_kernel.writes) == writes  # no write for a region that is there


def test_an_interleave_named_in_any_order(fake_kernel: FakeKernel) -> None:
    machine(fake_kernel)
    r = apply_region(fake_kernel.sysfs, plan(fake_kernel, spec(B, A)))
    assert r.ok, r.error
    topo = read_cxl_topology(fake_kernel.sysfs)
    (region,) = topo.regions
    assert region.window == "decoder0.2"
    assert region.size == 512 * MiB
    assert [m.serial if m else None for m in topo.region_memdevs(region)] == [A, B]
    assert r.devices == ("dax2.0",)


def test_a_failed_write_leaves_nothing_behind(fake_kernel: FakeKernel) -> None:
    machine(fake_kernel)
    before = read_cxl_topology(fake_kernel.sysfs)
    fake_kernel.fail("*/region2/target1", errno.EIO)
    p = plan(fake_kernel, spec(A, B))
    r = apply_region(fake_kernel.sysfs, p)
    assert not r.ok
    assert "target1" in r.error
    assert "EIO" in r.error
    assert r.undone
    assert all(x.ok for x in r.undone), [x.error for x in r.undone]
    after = read_cxl_topology(fake_kernel.sysfs)
    assert after.regions == ()
    assert after.memdevs == before.memdevs or all(
        not d.dpa_size and d.region is None for m in after.memdevs for d in m.decoders
    )
    assert [w.next_region for w in after.windows] == [w.next_region for w in before.windows]
    assert fake_kernel.devices == {}
    # and the same plan works once the fault is gone
    assert apply_region(fake_kernel.sysfs, plan(fake_kernel, spec(A, B))).ok


def test_teardown_once_the_memory_is_offline(fake_kernel: FakeKernel) -> None:
    machine(fake_kernel)
    assert apply_region(fake_kernel.sysfs, plan(fake_kernel, spec(A))).ok
    absent = spec(A, state="absent")
    assert plan(fake_kernel, absent).verdict is RegionVerdict.RELEASE  # kmem's blocks online
    for block in fake_kernel.blocks_of("dax0.0"):
        if block.online:
            fake_kernel.sysfs.write(f"devices/system/memory/memory{block.index}/state", "offline")
    p = plan(fake_kernel, absent)
    assert p.verdict is RegionVerdict.DESTROY, p.reason
    r = apply_region(fake_kernel.sysfs, p)
    assert r.ok, r.error
    topo = read_cxl_topology(fake_kernel.sysfs)
    assert topo.regions == ()
    assert all(not d.dpa_size for m in topo.memdevs for d in m.decoders)
    assert fake_kernel.devices == {}
    assert fake_kernel.leaks == []
    assert plan(fake_kernel, absent).verdict is RegionVerdict.IN_SYNC
    assert topo.windows[0].next_region == "region0"  # the id is offered again


def test_a_region_left_committed_but_not_enabled_is_enabled(fake_kernel: FakeKernel) -> None:
    machine(fake_kernel)
    p = plan(fake_kernel, spec(A))
    # killed between the commit and the bind
    for step in p.steps[:-1]:
        fake_kernel.sysfs.write(step.path, step.value)
    again = plan(fake_kernel, spec(A))
    assert again.verdict is RegionVerdict.CREATE
    assert "committed but not enabled" in again.reason
    assert len(again.steps) == 1
    r = apply_region(fake_kernel.sysfs, again)
    assert r.ok, r.error
    assert r.devices == ("dax0.0",)


class Killed(BaseException):
    """SIGKILL, as far as the code running is concerned: nothing after it runs."""


def kill_after(kernel: FakeKernel, writes: int) -> None:
    real = kernel.sysfs.write
    count = [0]

    def write(rel: str, value: str, timeout: float | None = None) -> None:
        if count[0] == writes:
            raise Killed
        count[0] += 1
        real(rel, value, timeout)

    kernel.sysfs.write = write  # type: ignore[method-assign]


def test_a_build_cut_short_is_removed_and_made_again(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    sysfs_write = fake_kernel.sysfs.write
    kill_after(fake_kernel, 6)  # region, granularity, ways, size, mode and DPA of the first
    with pytest.raises(Killed):
        apply_region(fake_kernel.sysfs, plan(fake_kernel, spec(A, B)), runtime=tmp_path)
    fake_kernel.sysfs.write = sysfs_write  # type: ignore[method-assign]
    # What it left: an uncommitted region2 and 256M of mem1's DPA in no region.
    topo = read_cxl_topology(fake_kernel.sysfs)
    assert [(r.name, r.committed) for r in topo.regions] == [("region2", False)]
    assert topo.memdev_by_serial(A).used == 256 * MiB  # type: ignore[union-attr]
    # Without the record nothing of it is daxd's to remove: it could be another tool's.
    assert plan(fake_kernel, spec(A, B)).verdict is RegionVerdict.REFUSED
    leftovers = read_leftovers(tmp_path, ["r"])
    assert set(leftovers) == {"r"}
    again = plan_region(
        spec(A, B),
        read_cxl_topology(fake_kernel.sysfs),
        read_state(fake_kernel.sysfs),
        leftover=leftovers["r"],
    )
    assert again.verdict is RegionVerdict.CREATE, again.reason
    assert "interrupted build" in again.reason
    r = apply_region(fake_kernel.sysfs, again, runtime=tmp_path)
    assert r.ok, r.error
    (region,) = read_cxl_topology(fake_kernel.sysfs).regions
    assert region.committed
    assert region.bound
    assert r.devices
    assert read_leftovers(tmp_path, ["r"]) == {}  # done: the record is gone


def test_a_record_of_a_region_someone_committed_is_left_to_the_usual_checks(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    kill_after(fake_kernel, 11)  # everything but the bind
    with pytest.raises(Killed):
        apply_region(fake_kernel.sysfs, plan(fake_kernel, spec(A, B)), runtime=tmp_path)
    del fake_kernel.sysfs.write  # the class's again
    again = plan_region(
        spec(A, B),
        read_cxl_topology(fake_kernel.sysfs),
        read_state(fake_kernel.sysfs),
        leftover=read_leftovers(tmp_path, ["r"])["r"],
    )
    assert again.verdict is RegionVerdict.CREATE
    assert "committed but not enabled" in again.reason
    assert apply_region(fake_kernel.sysfs, again, runtime=tmp_path).ok


def test_the_kernel_does_not_online_a_built_region_into_normal(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    """Debian's auto_online_blocks=online would put the memory in ZONE_NORMAL inside kmem's
    bind [lab: EBUSY for a movable rule 3 s later]; it is off from the region's bind until the
    dax device is bound, then put back, and the record of the switch is gone."""
    machine(fake_kernel)
    fake_kernel.uevents.clear()
    p = plan(fake_kernel, spec(A))
    r = apply_region(fake_kernel.sysfs, p, runtime=tmp_path, auto_online="online")
    assert r.ok, r.error
    assert fake_kernel.devices["dax0.0"].driver == "kmem"
    assert {b.online for b in fake_kernel.blocks_of("dax0.0")} == {False}
    assert not [e for e in fake_kernel.uevents if e.action == "online"]
    assert fake_kernel.sysfs.read("devices/system/memory/auto_online_blocks") == "online"
    assert not (tmp_path / "auto_online_blocks.switched").exists()


def test_a_new_regions_device_no_rule_takes_is_onlined_as_the_kernel_would(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    policy = Policy(rules=(), regions=(spec(A),))
    done = apply_regions(
        fake_kernel.sysfs, policy, read_state(fake_kernel.sysfs), proc=tmp_path, runtime=tmp_path
    )
    ((_, r),) = done
    assert r is not None
    assert r.ok, r.error
    blocks = fake_kernel.blocks_of("dax0.0")
    assert blocks
    assert all(b.online for b in blocks)  # "online": the kernel's zone for it
    assert fake_kernel.sysfs.read("devices/system/memory/auto_online_blocks") == "online"


def test_auto_onlining_stays_off_until_udev_reports_the_bind(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    """The driver link is there from the start of kmem's probe; the kernel decides whether to
    online at its end: only the bind event says the switch may go back."""
    machine(fake_kernel)
    seen: list[str | None] = []

    def bound(name: str) -> bool:
        seen.append(fake_kernel.sysfs.read("devices/system/memory/auto_online_blocks"))
        return len(seen) > 3

    r = apply_region(
        fake_kernel.sysfs, plan(fake_kernel, spec(A)), auto_online="online", bound=bound
    )
    assert r.ok, r.error
    assert seen == ["offline"] * 4
    assert fake_kernel.sysfs.read("devices/system/memory/auto_online_blocks") == "online"

"""Planning the policy's CXL regions on the lab's topology (host bridges 52 and 12, mem0 = serial
0x1001 below 52, mem1 = 0x1000 below 12; windows decoder0.0 over 12, decoder0.1 over 52 and the
2-way decoder0.2 over 12,52 at 8K): the window picked, the memdevs put in target_list order
whatever order the policy names them in, the writes ``cxl create-region`` makes, and a reason
for everything that cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daxd.kernel.cxl_topology import read_cxl_topology
from daxd.kernel.scan import read_state
from daxd.plan.cxl_regions import RegionAction, RegionPlan, RegionVerdict, plan_region
from daxd.policy.regions import CxlRegionSpec, MemdevRef
from tests.fakekernel import FakeKernel, MiB
from tests.kernel.test_cxl_identity import A, B, lab

CXL = "bus/cxl/devices"


def spec(*memdevs: int | MemdevRef, **kw: Any) -> CxlRegionSpec:
    refs = tuple(m if isinstance(m, MemdevRef) else MemdevRef(serial=m) for m in memdevs)
    kw.setdefault("interleave_ways", len(refs))
    return CxlRegionSpec(name="r", location="policy.yaml:3", memdevs=refs, **kw)


def capacity(kernel: FakeKernel, mib: int = 256) -> None:
    """memN/ram/size of every memdev (QEMU: the volatile-memdev's size)."""
    for name in ("mem0", "mem1"):
        d = Path(kernel.sysfs_root) / kernel.sysfs.realpath(f"{CXL}/{name}") / "ram"
        d.mkdir(exist_ok=True)
        (d / "size").write_text(f"{mib * MiB:#x}\n")


def plan(kernel: FakeKernel, s: CxlRegionSpec) -> RegionPlan:
    return plan_region(s, read_cxl_topology(kernel.sysfs), read_state(kernel.sysfs))


def writes(p: RegionPlan) -> list[tuple[str, str]]:
    return [(st.path.removeprefix(f"{CXL}/"), st.value) for st in p.steps]


def test_one_memdev_by_serial_in_its_x1_window(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, size=256 * MiB))
    assert p.verdict is RegionVerdict.CREATE, p.reason
    assert (p.region, p.window, p.size, p.memdevs) == (
        "region0",
        "decoder0.0",
        256 * MiB,
        ("mem1 (serial 0x1000)",),
    )
    mem1 = read_cxl_topology(fake_kernel.sysfs).memdev_by_serial(A)
    assert mem1 is not None
    d = mem1.decoders[0].name
    assert writes(p) == [
        ("decoder0.0/create_ram_region", "region0"),
        ("decoder0.0/region0/interleave_granularity", "256"),
        ("decoder0.0/region0/interleave_ways", "1"),
        ("decoder0.0/region0/size", "0x10000000"),
        (f"{d}/mode", "ram"),
        (f"{d}/dpa_size", "0x10000000"),
        ("decoder0.0/region0/target0", d),
        ("decoder0.0/region0/commit", "1"),
        ("bus/cxl/drivers/cxl_region/bind", "region0"),
    ]
    assert p.steps[-1].action is RegionAction.BIND


def test_interleave_follows_target_list_not_the_policy_order(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    for order in ((A, B), (B, A)):
        p = plan(fake_kernel, spec(*order, size=512 * MiB))
        assert p.verdict is RegionVerdict.CREATE, p.reason
        assert p.window == "decoder0.2"
        assert p.region == "region2"  # the id decoder0.2 offers
        # decoder0.2's target_list is 12,52: position 0 below 12 (serial 0x1000)
        assert p.memdevs == ("mem1 (serial 0x1000)", "mem0 (serial 0x1001)")
        targets = [v for path, v in writes(p) if "/target" in path]
        topo = read_cxl_topology(fake_kernel.sysfs)
        assert targets == [
            topo.memdev_by_serial(A).decoders[0].name,  # type: ignore[union-attr]
            topo.memdev_by_serial(B).decoders[0].name,  # type: ignore[union-attr]
        ]
        assert ("decoder0.2/region2/interleave_granularity", "8192") in writes(p)
        assert ("decoder0.2/region2/size", "0x20000000") in writes(p)


def test_a_memdev_by_host_bridge(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    for bridge in (52, "pci0000:34"):
        p = plan(fake_kernel, spec(MemdevRef(host_bridge=bridge), size=256 * MiB))
        assert p.verdict is RegionVerdict.CREATE, p.reason
        assert (p.window, p.memdevs) == ("decoder0.1", ("mem0 (serial 0x1001)",))


def test_all_free_capacity(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    capacity(fake_kernel, 1024)
    p = plan(fake_kernel, spec(A, B))
    assert p.verdict is RegionVerdict.CREATE, p.reason
    assert p.size == 2048 * MiB


def test_unknown_capacity_is_a_reason_not_a_guess(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A))
    assert p.verdict is RegionVerdict.REFUSED
    assert "mem1/ram/size unreadable" in p.reason


def test_a_missing_memdev_is_waited_for(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, 0x2000, size=512 * MiB))
    assert p.verdict is RegionVerdict.WAITING
    assert p.reason == "waiting for serial 0x2000: not on the cxl bus"
    assert p.steps == ()


def test_an_existing_region_costs_no_write(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=512 * MiB, serials=[A, B], window="decoder0.2")
    p = plan(fake_kernel, spec(B, A, size=512 * MiB))
    assert p.verdict is RegionVerdict.IN_SYNC
    assert (p.region, p.devices, p.steps) == ("region2", ("dax2.0",), ())
    assert p.memdevs == ("mem1 (serial 0x1000)", "mem0 (serial 0x1001)")  # position order


def test_an_existing_region_that_differs_is_not_rebuilt(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=512 * MiB, serials=[A, B], window="decoder0.2")
    p = plan(fake_kernel, spec(A, B, size=1024 * MiB))
    assert p.verdict is RegionVerdict.REFUSED
    assert "size 512M, the policy says 1G" in p.reason
    assert "state: absent" in p.reason


def test_no_window_reaches_the_memdevs(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, window="decoder0.1", size=256 * MiB))
    assert p.verdict is RegionVerdict.REFUSED
    assert "decoder0.1 interleaves host bridges 52, which these memdevs are not below" in p.reason


def test_granularity_an_interleaved_window_refuses(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, B, granularity=4096, size=512 * MiB))
    assert p.verdict is RegionVerdict.REFUSED
    assert "decoder0.2 interleaves its host bridges every 8K" in p.reason
    assert "cannot use 4K" in p.reason


def test_a_busy_host_bridge_or_memdev(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 * MiB, serials=[A], window="decoder0.0")
    # mem1's host bridge decodes region0 with its one switch decoder; the interleave needs it
    p = plan(fake_kernel, spec(A, B, size=512 * MiB))
    assert p.verdict is RegionVerdict.REFUSED, p
    assert p.reason == (
        "host bridge pci0000:0c has no free decoder (region0 goes through it): a host bridge "
        "decodes as many regions as it has decoders"
    )


def test_window_too_small(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, size=8192 * MiB))
    assert p.verdict is RegionVerdict.REFUSED
    assert "decoder0.0 has 4G free" in p.reason


def test_absent_region_not_there_is_in_sync(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    p = plan(fake_kernel, spec(A, state="absent"))
    assert p.verdict is RegionVerdict.IN_SYNC


def test_absent_region_with_online_memory_is_released_first(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 * MiB, serials=[A], window="decoder0.0")
    p = plan(fake_kernel, spec(A, state="absent"))
    assert p.verdict is RegionVerdict.RELEASE
    assert p.steps == ()
    assert "dax0.0" in p.reason


def test_absent_region_with_offline_memory_is_torn_down(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 * MiB, serials=[A], window="decoder0.0", bound=None)
    p = plan(fake_kernel, spec(A, state="absent"))
    assert p.verdict is RegionVerdict.DESTROY, p.reason
    actions = [st.action for st in p.steps]
    assert actions == [
        RegionAction.UNBIND,
        RegionAction.RESET,
        RegionAction.CLEAR_TARGET,
        RegionAction.FREE_DPA,
        RegionAction.DELETE,
    ]
    assert writes(p)[-1] == ("decoder0.0/delete_region", "region0")

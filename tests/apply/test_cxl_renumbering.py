"""Renumbering: the same CXL hardware under other memN, regionN and daxN.0 names (another boot,
regions made in another order, a region destroyed and made again) meets the same rules, because
the rules name serial numbers, host bridges and windows."""

from __future__ import annotations

from pathlib import Path

from daxd.apply.executor import Outcome
from daxd.kernel.scan import read_state
from daxd.policy.model import Policy
from tests.fakekernel import DEVDAX, KMEM, FakeKernel, MiB
from tests.plan.helpers import apply, driver, load

A, B = 0x1000, 0x1001
POLICY = """\
rules:
  - name: interleaved
    match: {interleave_ways: 2}
    mode: system-ram
  - name: a-as-ram
    match: {serial: "0x1000"}
    mode: system-ram
  - name: b-devdax
    match: {serial: 0x1001, host_bridge: 52, window: decoder0.1}
    mode: devdax
"""


def boot(
    base: Path,
    memdev_order: tuple[int, ...],
    region_order: tuple[int, ...],
    *,
    pmem: bool = False,
) -> FakeKernel:
    """Host bridges 12 (serial A) and 52 (serial B), their windows decoder0.0 and decoder0.1,
    memdevs probed in ``memdev_order``, then a region per serial in ``region_order``. With
    ``pmem``, an NVDIMM region registered first takes region id 0 (one id space)."""
    kernel = FakeKernel(base)
    if pmem:
        kernel.add_pmem_device()
    bridge = {A: 12, B: 52}
    for serial in memdev_order:
        kernel.add_cxl_host_bridge(bridge[serial])
    for serial in memdev_order:
        kernel.add_cxl_memdev(serial, bridge[serial])
    kernel.add_cxl_window([12])
    kernel.add_cxl_window([52])
    for serial in region_order:
        window = "decoder0.0" if serial == A else "decoder0.1"
        kernel.add_cxl_device(size=256 * MiB, serials=[serial], window=window)
    return kernel


def by_serial(kernel: FakeKernel, policy: Policy) -> dict[int, tuple[str, str, str, str]]:
    """serial -> (dax device, region, memdev, matching rule)."""
    out = {}
    for name, device in read_state(kernel.sysfs).devices.items():
        cxl = device.cxl
        if cxl is None:
            continue
        assert len(cxl.memdevs) == 1
        rule = policy.match(device)
        memdev = cxl.memdevs[0].memdev
        assert rule is not None
        assert memdev is not None
        out[cxl.memdevs[0].serial or -1] = (name, cxl.region, memdev, rule.name)
    return out


def test_another_numbering_meets_the_same_rules(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    first = by_serial(boot(tmp_path / "1", (A, B), (A, B)), policy)
    second = by_serial(boot(tmp_path / "2", (B, A), (B, A), pmem=True), policy)
    # every name the kernel hands out differs ...
    assert first == {
        A: ("dax0.0", "region0", "mem0", "a-as-ram"),
        B: ("dax1.0", "region1", "mem1", "b-devdax"),
    }
    assert second == {
        A: ("dax1.0", "region1", "mem1", "a-as-ram"),
        B: ("dax2.0", "region2", "mem0", "b-devdax"),
    }
    # ... the rules do not: the same rule for the same serial
    assert {s: r[3] for s, r in first.items()} == {s: r[3] for s, r in second.items()}


def test_applied_by_serial_whatever_the_names(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    for folder, order, pmem in (("1", (A, B), False), ("2", (B, A), True)):
        kernel = boot(tmp_path / folder, order, order, pmem=pmem)
        names = {serial: entry[0] for serial, entry in by_serial(kernel, policy).items()}
        for name in names.values():
            assert apply(kernel, policy, name).outcome in (Outcome.APPLIED, Outcome.IN_SYNC)
        assert (driver(kernel, names[A]), driver(kernel, names[B])) == (KMEM, DEVDAX)


def test_a_region_made_again_is_still_matched(tmp_path: Path) -> None:
    """cxl destroy-region, then create-region on the same memdev: the root decoder offers the
    freed id again (cxl_region_release()), here after another region took the next one."""
    policy = load(tmp_path, POLICY)
    kernel = boot(tmp_path, (A, B), (B,))  # region1 (B on decoder0.1)
    assert by_serial(kernel, policy)[B][:2] == ("dax1.0", "region1")
    for block in kernel.blocks_of("dax1.0"):  # the lab's teardown: offline, then destroy -f
        kernel.sysfs.write(f"devices/system/memory/memory{block.index}/state", "offline")
    kernel.destroy_cxl_region(1, force=True)
    assert kernel.leaks == []
    kernel.add_cxl_device(size=256 * MiB, serials=[A], window="decoder0.0")  # region0
    kernel.add_cxl_device(size=256 * MiB, serials=[B], window="decoder0.1")  # region1 again
    found = by_serial(kernel, policy)
    assert found[A][:2] == ("dax0.0", "region0")
    assert found[B][:2] == ("dax1.0", "region1")
    assert found[B][3] == "b-devdax"


def test_an_interleave_of_both_is_one_device_matched_by_its_ways(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    kernel = boot(tmp_path, (A, B), ())
    window = kernel.add_cxl_window([12, 52], granularity=8192)
    dev = kernel.add_cxl_device(size=512 * MiB, serials=[A, B], window=window)
    device = read_state(kernel.sysfs).devices[dev.name]
    assert device.cxl is not None
    assert device.cxl.serials == (A, B)
    rule = policy.match(device)
    assert rule is not None
    assert rule.name == "interleaved"  # the first rule: it also has serial A

"""A CXL dax device's identity, read from the cxl bus: its region, window and memdevs in
interleave order; damaged trees give None and Diagnostics, never a traceback; other devices
cost no read on the cxl bus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daxd.kernel.model import CxlIdentity, CxlMemdev, KernelState
from daxd.kernel.scan import read_device, read_hotplug_settings, read_state
from tests.fakekernel import FakeKernel, GiB
from tests.kernel.helpers import CountingSysfs

A, B = 0x1000, 0x1001
W0, W2 = 0x1_1000_0000, 0x3_1000_0000


def lab(kernel: FakeKernel) -> FakeKernel:
    """The lab's machine (tests/vm/snapshots/cxl-observed-*.json): host bridges 52 and 12, in
    that order; mem0 is serial 0x1001 (below 52), mem1 0x1000 (below 12); a window per host
    bridge and a 2-way one over both."""
    for uid in (52, 12):
        kernel.add_cxl_host_bridge(uid)
    kernel.add_cxl_memdev(B, 52)
    kernel.add_cxl_memdev(A, 12)
    kernel.add_cxl_window([12], start=W0)
    kernel.add_cxl_window([52], start=0x2_1000_0000)
    kernel.add_cxl_window([12, 52], start=W2, granularity=8192)
    return kernel


def identity(state: KernelState, name: str) -> CxlIdentity:
    found = state.devices[name].cxl
    assert found is not None
    return found


def messages(state: KernelState) -> list[str]:
    return [str(d) for d in state.diagnostics]


def test_one_region_on_one_host_bridge(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 << 20, serials=[A], window="decoder0.0")
    state = read_state(fake_kernel.sysfs)
    assert identity(state, "dax0.0") == CxlIdentity(
        region="region0",
        uuid=None,
        mode="ram",
        interleave_ways=1,
        interleave_granularity=256,
        window="decoder0.0",
        window_start=W0,
        memdevs=(CxlMemdev(0, "mem1", A, "pci0000:0c", 12),),
    )
    assert state.diagnostics == ()


def test_an_interleave_lists_its_memdevs_in_position_order(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=512 << 20, serials=[A, B], window="decoder0.2")
    cxl = identity(read_state(fake_kernel.sysfs), "dax2.0")
    assert (cxl.region, cxl.window, cxl.window_start) == ("region2", "decoder0.2", W2)
    assert (cxl.interleave_ways, cxl.interleave_granularity) == (2, 8192)
    assert cxl.memdevs == (
        CxlMemdev(0, "mem1", A, "pci0000:0c", 12),
        CxlMemdev(1, "mem0", B, "pci0000:34", 52),
    )
    assert cxl.serials == (A, B)


def test_a_region_uuid_is_read_when_there_is_one(fake_kernel: FakeKernel) -> None:
    dev = fake_kernel.add_cxl_device(size=GiB)
    region = os.path.dirname(os.path.dirname(dev.devpath))
    fake_kernel.tree.attr(f"{region}/uuid", "0B9AC3B1-97BC-4E56-8D2A-7B3F1E0C5D21")
    assert identity(read_state(fake_kernel.sysfs), "dax0.0").uuid == (
        "0b9ac3b1-97bc-4e56-8d2a-7b3f1e0c5d21"
    )


def test_other_providers_have_none_and_cost_no_cxl_read(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)  # a cxl bus without regions
    fake_kernel.add_pmem_device()
    fake_kernel.add_hmem_device()
    sysfs = CountingSysfs(fake_kernel.sysfs_root)
    state = read_state(sysfs)
    assert [d.cxl for d in state.devices.values()] == [None, None]
    touched = [r for r in [*sysfs.reads, *sysfs.listed] if "cxl" in r or "ACPI0017" in r]
    assert touched == []
    assert not any("pci0000" in r for r in sysfs.reads)


def test_reading_one_cxl_device_costs_a_few_reads(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=512 << 20, serials=[A, B], window="decoder0.2")
    hotplug = read_hotplug_settings(fake_kernel.sysfs)
    with_cxl = CountingSysfs(fake_kernel.sysfs_root)
    assert read_device(with_cxl, "dax2.0", hotplug).device is not None
    hmem = fake_kernel.add_hmem_device(size=512 << 20)
    without = CountingSysfs(fake_kernel.sysfs_root)
    assert read_device(without, hmem.name, hotplug).device is not None
    # region: uuid mode ways granularity; window start; per memdev: targetK, serial and uid
    assert len(with_cxl.reads) - len(without.reads) == 5 + 3 * 2
    assert len(with_cxl.listed) - len(without.listed) <= 1  # the region's targets


def test_the_identity_is_the_same_for_read_device(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 << 20, serials=[A], window="decoder0.0")
    hotplug = read_hotplug_settings(fake_kernel.sysfs)
    reading = read_device(fake_kernel.sysfs, "dax0.0", hotplug)
    assert reading.device is not None
    assert reading.device.cxl == identity(read_state(fake_kernel.sysfs), "dax0.0")


def test_a_user_does_not_see_the_window_start(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 << 20, serials=[A], window="decoder0.0")
    fake_kernel.non_root = True
    state = read_state(fake_kernel.sysfs)
    cxl = identity(state, "dax0.0")
    assert cxl.window_start is None  # decoder0.0/start is 0400
    assert cxl.serials == (A,)
    assert any("decoder0.0/start: cannot read: permission denied" in m for m in messages(state))


# --- damaged trees -----------------------------------------------------------------------------
REGION = "devices/platform/ACPI0017:00/root0/decoder0.2/region2"
ENDPOINT4 = "devices/platform/ACPI0017:00/root0/port2/endpoint4"
MEM1 = "devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem1"


@pytest.fixture
def interleaved(fake_kernel: FakeKernel) -> FakeKernel:
    lab(fake_kernel).add_cxl_device(size=512 << 20, serials=[A, B], window="decoder0.2")
    return fake_kernel


def damage(kernel: FakeKernel, rel: str, content: str | None) -> None:
    path = kernel.tree.path(rel)
    if os.path.islink(path) or path.is_file():
        path.unlink()
    if content is not None:
        kernel.tree.raw(rel, content + "\n", 0o444)


@pytest.mark.parametrize(
    ("rel", "content", "check", "message"),
    [
        (f"{REGION}/interleave_ways", "two", lambda c: c.interleave_ways is None, "not a decimal"),
        (f"{REGION}/interleave_ways", "1", lambda c: len(c.memdevs) == 1, "but the targets are"),
        (f"{REGION}/interleave_ways", "99", lambda c: c.interleave_ways is None, "out of range"),
        (f"{REGION}/mode", None, lambda c: c.mode is None, "missing attribute"),
        (f"{REGION}/uuid", "not-a-uuid", lambda c: c.uuid is None, "not a uuid"),
        (
            f"{REGION}/target0",
            "../../../etc",
            lambda c: c.memdevs[0] == CxlMemdev(0, None, None, None, None),
            "not an endpoint decoder name",
        ),
        (
            f"{REGION}/target0",
            "decoder9.9",
            lambda c: c.memdevs[0].serial is None and c.memdevs[1].serial == B,
            "bus/cxl/devices/decoder9.9: missing",
        ),
        (f"{REGION}/target1", "", lambda c: c.memdevs[1].memdev is None, None),
        (
            f"{ENDPOINT4}/uport",
            None,
            lambda c: c.memdevs[0].memdev is None,
            "no memdev (endpoint port without uport)",
        ),
        (f"{MEM1}/serial", "0xZZ", lambda c: c.memdevs[0].serial is None, "not a hexadecimal"),
        (f"{MEM1}/serial", "-0x5", lambda c: c.memdevs[0].serial is None, "out of range"),
        (
            "devices/pci0000:0c/firmware_node",
            None,
            lambda c: c.memdevs[0].host_bridge_uid is None and c.memdevs[0].serial == A,
            None,
        ),
        (
            f"{REGION}/../start",
            "nonsense",
            lambda c: c.window_start is None,
            "not a hexadecimal number",
        ),
    ],
)
def test_damage_gives_none_and_a_diagnostic(
    interleaved: FakeKernel, rel: str, content: str | None, check: object, message: str | None
) -> None:
    damage(interleaved, os.path.normpath(rel), content)
    state = read_state(interleaved.sysfs)
    cxl = identity(state, "dax2.0")
    assert callable(check)
    assert check(cxl), cxl
    found = messages(state)
    if message is None:
        assert found == []
    else:
        assert any(message in m for m in found), found


def test_a_link_out_of_the_tree_is_not_followed(interleaved: FakeKernel, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "mem7"
    outside.mkdir(parents=True)
    (outside / "serial").write_text("0x7777\n")
    uport = interleaved.tree.path(f"{ENDPOINT4}/uport")
    uport.unlink()
    os.symlink(outside, uport)
    state = read_state(interleaved.sysfs)
    assert identity(state, "dax2.0").memdevs[0].serial is None
    assert any("resolves outside the sysfs tree" in m for m in messages(state))


def test_a_cxl_device_not_below_a_region_has_no_identity(fake_kernel: FakeKernel) -> None:
    """A dax_regionN whose parent is not a root decoder's regionN (a newer layout, damage)."""
    fake_kernel.add_hmem_device()
    dev = fake_kernel.devices["dax0.0"]
    odd = "devices/platform/elsewhere/dax_region7/dax0.0"
    os.makedirs(fake_kernel.tree.path(odd))
    for entry in os.listdir(fake_kernel.tree.path(dev.devpath)):
        src = fake_kernel.tree.path(f"{dev.devpath}/{entry}")
        if src.is_file() and not src.is_symlink():
            fake_kernel.tree.raw(f"{odd}/{entry}", src.read_text(), 0o444)
    link = fake_kernel.tree.path("bus/dax/devices/dax0.0")
    link.unlink()
    os.symlink(os.path.relpath(fake_kernel.tree.path(odd), link.parent), link)
    state = read_state(fake_kernel.sysfs)
    device = state.devices["dax0.0"]
    assert (str(device.provider), device.cxl) == ("cxl", None)
    assert any("not below a region of a root decoder" in m for m in messages(state))

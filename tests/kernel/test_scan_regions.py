"""read_state() and read_region(): the dax regions the devices hang on, read once per region."""

from __future__ import annotations

import os

from daxd.kernel.model import Diagnostic, Provider, Range
from daxd.kernel.scan import read_region, read_state
from tests.fakekernel import PMEM_SIZE, FakeKernel, GiB, MiB
from tests.kernel.helpers import CountingSysfs

HMEM = "devices/platform/hmem.0"
DAX = "bus/dax"


def dev(name: str, attr: str) -> str:
    return f"{DAX}/devices/{name}/{attr}"


def carve(kernel: FakeKernel, region: str, sizes: list[int]) -> None:
    """daxctl's way: dax0.0 unbound and shrunk to the first size, then a device per size."""
    kernel.sysfs.write(f"{DAX}/drivers/kmem/unbind", "dax0.0")
    kernel.sysfs.write(dev("dax0.0", "size"), str(sizes[0]))
    for size in sizes[1:]:
        kernel.sysfs.write(f"{region}/dax_region/create", "1")
        seed = kernel.sysfs.read(f"{region}/dax_region/seed")
        assert seed
        kernel.sysfs.write(dev(seed, "size"), str(size))


def test_hmem_region_as_booted(hmem_kernel: FakeKernel) -> None:
    state = read_state(hmem_kernel.sysfs)
    region = state.regions[0]
    assert region.parent == HMEM
    assert region.provider is Provider.HMEM
    assert (region.size, region.align, region.available_size) == (2 * GiB, 2 * MiB, 0)
    assert (region.dynamic, region.seed, region.devices) == (True, None, ("dax0.0",))
    assert region.start == state.devices["dax0.0"].ranges[0].start
    assert (region.target_node, region.numa_node, region.cxl) == (1, 0, None)
    assert state.diagnostics == ()


def test_pmem_region_is_static(pmem_kernel: FakeKernel) -> None:
    state = read_state(pmem_kernel.sysfs)
    region = state.regions[0]
    device = state.devices["dax0.0"]
    assert region.provider is Provider.PMEM
    assert region.parent == device.devpath.rsplit("/", 1)[0]  # the nd_dax device
    assert not region.dynamic
    assert (region.available_size, region.seed) == (None, None)  # hidden for static regions
    assert region.size == PMEM_SIZE
    assert region.start == device.resource
    assert (region.namespace, region.uuid) == (device.namespace, device.uuid)
    assert state.diagnostics == ()


def test_one_region_per_id_with_its_devices_by_id(mixed_kernel: FakeKernel) -> None:
    state = read_state(mixed_kernel.sysfs)
    assert sorted(state.regions) == [0, 1, 2]
    assert [r.provider for r in state.regions.values()] == [
        Provider.PMEM,
        Provider.HMEM,
        Provider.CXL,
    ]
    cxl = state.regions[2]
    assert cxl.devices == ("dax2.0", "dax2.1")
    assert cxl.seed == "dax2.1"
    assert cxl.cxl == state.devices["dax2.0"].cxl
    assert state.diagnostics == ()


def test_region_attributes_read_once(mixed_kernel: FakeKernel) -> None:
    sysfs = CountingSysfs(mixed_kernel.sysfs_root)
    read_state(sysfs)
    for attr in ("size", "align", "available_size", "seed"):
        reads = [r for r in sysfs.reads if r.endswith(f"dax_region/{attr}")]
        assert len(reads) == len(set(reads)), attr


def test_carved_region(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(size=4 * GiB, start=8 * GiB)
    carve(fake_kernel, HMEM, [GiB, 512 * MiB])
    fake_kernel.sysfs.write(f"{HMEM}/dax_region/create", "1")  # a seed, left empty
    state = read_state(fake_kernel.sysfs)
    region = state.regions[0]
    assert region.devices == ("dax0.0", "dax0.1", "dax0.2")
    assert region.available_size == 4 * GiB - GiB - 512 * MiB
    assert region.seed == "dax0.1"  # unbound: only a successful probe clears it
    assert region.start == 8 * GiB
    assert state.devices["dax0.1"].ranges == (Range(9 * GiB, 9 * GiB + 512 * MiB - 1),)


def test_start_of_a_region_whose_first_bytes_are_free(fake_kernel: FakeKernel) -> None:
    # dax0.0 given back (size 0; id 0 cannot be deleted), dax0.1 placed in the middle: the
    # lowest range is not the start, the empty device's resource is.
    fake_kernel.add_hmem_device(size=4 * GiB, start=8 * GiB)
    carve(fake_kernel, HMEM, [0])
    fake_kernel.sysfs.write(f"{HMEM}/dax_region/create", "1")
    fake_kernel.sysfs.write(dev("dax0.1", "mapping"), f"{10 * GiB:x}-{11 * GiB - 1:x}")
    state = read_state(fake_kernel.sysfs)
    assert state.devices["dax0.1"].ranges == (Range(10 * GiB, 11 * GiB - 1),)
    assert state.regions[0].start == 8 * GiB


def test_cxl_start_is_the_cxl_regions_resource(fake_kernel: FakeKernel) -> None:
    d = fake_kernel.add_cxl_device(size=4 * GiB, bound=None)
    fake_kernel.sysfs.write(dev("dax0.0", "size"), str(GiB))
    fake_kernel.non_root = True  # mappingN and resource are 0400; regionR/resource is 0444
    state = read_state(fake_kernel.sysfs)
    region = state.regions[0]
    assert state.devices["dax0.0"].ranges == ()
    assert region.start == d.region.start
    assert region.parent.endswith("/decoder0.0/region0/dax_region0")
    assert region.align is None  # dax_region/align is 0400
    assert any(
        diag.path.endswith("dax_region0/dax_region/align") and "permission denied" in diag.message
        for diag in state.diagnostics
    )


def test_hmem_start_unknown_without_root(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.non_root = True
    region = read_state(hmem_kernel.sysfs).regions[0]
    assert (region.start, region.align, region.size) == (None, None, 2 * GiB)
    assert region.whole().ranges == ()


def test_legacy_device_model_region(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_legacy_device()
    state = read_state(fake_kernel.sysfs)
    assert state.legacy_device_model
    assert state.regions[0].devices == ("dax0.0",)
    assert not state.regions[0].dynamic


def test_whole_stands_for_the_region(mixed_kernel: FakeKernel) -> None:
    state = read_state(mixed_kernel.sysfs)
    region = state.regions[2]
    whole = region.whole()
    assert (whole.name, whole.region_id, whole.size) == ("dax2.0", 2, region.size)
    assert (whole.provider, whole.target_node, whole.cxl) == (Provider.CXL, 2, region.cxl)
    assert region.start is not None
    assert whole.resource == region.start
    assert whole.ranges == (Range(region.start, region.start + region.size - 1),)
    assert whole.driver is None
    pmem = state.regions[0].whole()
    assert (pmem.namespace, pmem.uuid) == (
        state.devices["dax0.0"].namespace,
        state.devices["dax0.0"].uuid,
    )


# --- odd contents -------------------------------------------------------------------------------
def test_unreadable_region_size_leaves_the_region_out(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.tree.attr(f"{HMEM}/dax_region/size", "lots")
    state = read_state(hmem_kernel.sysfs)
    assert state.regions == {}
    assert "dax0.0" in state.devices
    assert [d.message for d in state.diagnostics] == ["not a decimal number: 'lots'"]


def test_missing_dax_region_directory(hmem_kernel: FakeKernel) -> None:
    for entry in os.listdir(hmem_kernel.tree.path(f"{HMEM}/dax_region")):
        os.remove(hmem_kernel.tree.path(f"{HMEM}/dax_region/{entry}"))
    os.rmdir(hmem_kernel.tree.path(f"{HMEM}/dax_region"))
    state = read_state(hmem_kernel.sysfs)
    assert state.regions == {}
    (diag,) = state.diagnostics
    assert diag.path.endswith(HMEM)
    assert "no dax_region/" in diag.message


def test_junk_seed_is_none(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(region=3)
    parent = "devices/platform/hmem.3/dax_region"
    for junk in ("../../evil", "dax4.1"):  # not a device name; another region's device
        fake_kernel.tree.attr(f"{parent}/seed", junk)
        state = read_state(fake_kernel.sysfs)
        assert state.regions[3].seed is None
        (diag,) = state.diagnostics
        assert diag.message.startswith("not a device of region 3")


def test_dynamic_region_without_available_size(hmem_kernel: FakeKernel) -> None:
    os.remove(hmem_kernel.tree.path(f"{HMEM}/dax_region/available_size"))
    state = read_state(hmem_kernel.sysfs)
    assert state.regions[0].available_size is None
    assert [d.message for d in state.diagnostics] == ["missing attribute"]


# --- read_region --------------------------------------------------------------------------------
def test_read_region_again_after_carving(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(size=4 * GiB, start=8 * GiB)
    fake_kernel.add_cxl_device()  # region 1: not read
    before = read_state(fake_kernel.sysfs).regions[0]
    carve(fake_kernel, HMEM, [GiB, GiB])
    sysfs = CountingSysfs(fake_kernel.sysfs_root)
    after = read_region(sysfs, before.parent, 0)
    assert after is not None
    assert after.devices == ("dax0.0", "dax0.1")
    assert after.available_size == 2 * GiB
    assert after == read_state(fake_kernel.sysfs).regions[0]
    assert not any("dax1." in r or "region1" in r for r in sysfs.reads)


def test_read_region_gone_or_another(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_cxl_device(bound=None)
    region = read_state(fake_kernel.sysfs).regions[0]
    assert read_region(fake_kernel.sysfs, region.parent, 7) is None  # that parent carries 0
    fake_kernel.destroy_cxl_region(0, force=True)
    assert read_region(fake_kernel.sysfs, region.parent, 0) is None


def test_read_region_reports_what_was_odd(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.tree.attr(f"{HMEM}/dax_region/align", "huge", 0o400)
    found: list[Diagnostic] = []
    region = read_region(hmem_kernel.sysfs, HMEM, 0, found)
    assert region is not None
    assert region.align is None
    assert [d.message for d in found] == ["not a decimal number: 'huge'"]

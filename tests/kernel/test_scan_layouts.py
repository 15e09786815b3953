"""read_state() on the layouts real kernels show: providers, identities, ranges and blocks."""

from __future__ import annotations

import re
from pathlib import Path

from daxd.kernel.model import DRIVER_DEVDAX, DRIVER_KMEM, Provider, Range
from daxd.kernel.scan import read_device, read_hotplug_settings, read_state
from daxd.kernel.sysfs import Sysfs
from tests.fakekernel import PMEM_SIZE, FakeKernel, GiB, MiB
from tests.kernel.helpers import CountingSysfs

BS = 128 * MiB


def test_pmem_device_as_in_kernel_facts(pmem_kernel: FakeKernel) -> None:
    state = read_state(Sysfs(pmem_kernel.sysfs_root))  # the plain Sysfs reads the tree as-is
    dev = state.devices["dax0.0"]
    assert dev.provider is Provider.PMEM
    assert dev.driver == DRIVER_DEVDAX
    assert dev.size == PMEM_SIZE
    assert dev.ranges == (Range(0x101200000, 0x13FFFFFFF),)
    assert dev.resource == 0x101200000
    assert (dev.align, dev.target_node, dev.numa_node) == (2 * MiB, 1, 0)
    assert dev.memmap_on_memory is False
    assert dev.region_id == 0
    assert dev.devpath == "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/dax0.0/dax0.0"
    assert state.blocks_of("dax0.0") == ()
    assert state.legacy_device_model is False
    assert state.diagnostics == ()


def test_pmem_namespace_and_uuid_as_ndctl_shows_them(fake_kernel: FakeKernel) -> None:
    dax_uuid = "0b2e5c6a-1111-4a4a-9d9d-0123456789ab"
    ns_uuid = "77777777-2222-4b4b-8c8c-ba9876543210"
    fake_kernel.add_pmem_device(
        region=3, namespace=1, uuid=dax_uuid.upper(), namespace_uuid=ns_uuid
    )
    dev = read_state(fake_kernel.sysfs).devices["dax3.1"]
    assert dev.namespace == "namespace3.1"
    assert dev.uuid == dax_uuid  # ndctl's "uuid" in devdax mode is the nd_dax's, lower case


def test_pmem_uuid_falls_back_to_the_namespace(fake_kernel: FakeKernel) -> None:
    ns_uuid = "77777777-2222-4b4b-8c8c-ba9876543210"
    dev = fake_kernel.add_pmem_device(namespace_uuid=ns_uuid)
    fake_kernel.tree.attr(f"{dev.region.parent}/uuid", "", 0o644)  # nd_dax without info block uuid
    assert read_state(fake_kernel.sysfs).devices["dax0.0"].uuid == ns_uuid


def test_hmem_bound_to_kmem_at_boot(hmem_kernel: FakeKernel) -> None:
    state = read_state(hmem_kernel.sysfs)
    dev = state.devices["dax0.0"]
    assert dev.provider is Provider.HMEM
    assert dev.driver == DRIVER_KMEM
    assert (dev.namespace, dev.uuid) == (None, None)
    blocks = state.blocks_of("dax0.0")
    assert [b.index for b in blocks] == list(range(32, 48))  # 2 GiB at 4 GiB
    assert all(b.online and b.zone == "Normal" and b.node == 1 for b in blocks)
    assert all(b.removable is True and b.phys_index == b.index for b in blocks)


def test_cxl_device(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_cxl_device(region=5, target_node=3)
    dev = read_state(fake_kernel.sysfs).devices["dax5.0"]
    assert dev.provider is Provider.CXL
    assert dev.memmap_on_memory is True  # drivers/dax/cxl.c default
    assert dev.target_node == 3
    assert "/region5/dax_region5/dax5.0" in dev.devpath


def test_unknown_provider(fake_kernel: FakeKernel) -> None:
    dev = fake_kernel.add_hmem_device()
    # A dax region parent of a kind daxd does not know: move the device there.
    fake_kernel.tree.path("devices/platform/other.0").mkdir(parents=True)
    fake_kernel.tree.path(dev.devpath).rename(
        fake_kernel.tree.path("devices/platform/other.0/dax0.0")
    )
    fake_kernel.tree.link("bus/dax/devices/dax0.0", "devices/platform/other.0/dax0.0")
    assert read_state(fake_kernel.sysfs).devices["dax0.0"].provider is Provider.UNKNOWN


def test_multi_range_device_maps_only_whole_blocks_of_each_range(fake_kernel: FakeKernel) -> None:
    base = 8 * GiB
    # range 0: 64 MiB into block 64 .. end of block 66; range 1: blocks 70..71 exactly
    fake_kernel.add_hmem_device(
        ranges=[(base + 64 * MiB, 3 * BS - 64 * MiB), (base + 6 * BS, 2 * BS)]
    )
    state = read_state(fake_kernel.sysfs)
    dev = state.devices["dax0.0"]
    assert dev.ranges == (
        Range(base + 64 * MiB, base + 3 * BS - 1),
        Range(base + 6 * BS, base + 8 * BS - 1),
    )
    assert [b.index for b in state.blocks_of("dax0.0")] == [65, 66, 70, 71]


def test_mapping_dirs_sorted_numerically(fake_kernel: FakeKernel) -> None:
    ranges = [(16 * GiB + i * 2 * BS, BS) for i in range(11)]  # mapping0..mapping10
    fake_kernel.add_hmem_device(ranges=ranges, bound=None)
    dev = read_state(fake_kernel.sysfs).devices["dax0.0"]
    assert [r.start for r in dev.ranges] == [s for s, _ in ranges]


def test_blocks_are_mapped_among_boot_memory_noise(mixed_kernel: FakeKernel) -> None:
    state = read_state(mixed_kernel.sysfs)
    owned = {b.index: name for name, blocks in state.blocks.items() for b in blocks}
    assert not any(i < 16 for i in owned)  # boot blocks are nobody's
    expected = {b.index for name in ("dax1.0", "dax2.0") for b in mixed_kernel.blocks_of(name)}
    assert set(owned) == expected


def test_read_state_reads_no_boot_block_attributes(mixed_kernel: FakeKernel) -> None:
    sysfs = CountingSysfs(mixed_kernel.sysfs_root)
    read_state(sysfs)
    touched = {int(m.group(1)) for r in sysfs.reads if (m := re.search(r"memory(\d+)/", r))}
    assert touched
    assert min(touched) >= 16


def test_seed_device(mixed_kernel: FakeKernel) -> None:
    state = read_state(mixed_kernel.sysfs)
    seed = state.devices["dax2.1"]
    assert seed.is_seed
    assert seed.ranges == ()
    assert seed.driver is None
    assert state.blocks_of("dax2.1") == ()
    assert (
        mixed_kernel.sysfs.read(
            "devices/platform/ACPI0017:00/root0/decoder0.0/region2/dax_region2/dax_region/seed"
        )
        == "dax2.1"
    )


def test_pre_6_8_device_without_memmap_on_memory(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_pmem_device(memmap_on_memory=None)
    state = read_state(fake_kernel.sysfs)
    assert state.devices["dax0.0"].memmap_on_memory is None
    assert state.diagnostics == ()


def test_device_without_mapping_dirs_uses_resource_and_size(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(start=6 * GiB, size=GiB, mappings=False)
    state = read_state(fake_kernel.sysfs)
    assert state.devices["dax0.0"].ranges == (Range(6 * GiB, 7 * GiB - 1),)
    assert [b.index for b in state.blocks_of("dax0.0")] == list(range(48, 56))


def test_legacy_class_dax_model(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_legacy_device(region=0)
    state = read_state(fake_kernel.sysfs)
    assert state.legacy_device_model is True
    dev = state.devices["dax0.0"]
    assert dev.provider is Provider.PMEM
    assert dev.namespace == "namespace0.0"
    assert dev.driver == DRIVER_DEVDAX  # class devices are always-enabled character devices
    assert any("legacy" in d.message for d in state.diagnostics)


def test_bus_model_is_not_legacy_even_with_class_dir(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.tree.dir("class/dax")
    assert read_state(pmem_kernel.sysfs).legacy_device_model is False


def test_hotplug_settings(fake_kernel: FakeKernel) -> None:
    hp = read_hotplug_settings(fake_kernel.sysfs)
    assert hp.block_size == BS
    assert hp.auto_online_blocks == "online"
    assert hp.memmap_on_memory is False
    assert hp.online_policy == "contig-zones"
    assert hp.hotremove is True


def test_hotplug_settings_without_hotremove(fake_kernel_base: Path) -> None:
    kernel = FakeKernel(
        fake_kernel_base,
        hotremove=False,
        memmap_on_memory="Y",
        auto_online_blocks="offline",
        online_policy="auto-movable",
    )
    hp = read_state(kernel.sysfs).hotplug
    assert hp.hotremove is False
    assert hp.memmap_on_memory is True
    assert (hp.auto_online_blocks, hp.online_policy) == ("offline", "auto-movable")


def test_read_device_rereads_one_device_and_only_its_blocks(mixed_kernel: FakeKernel) -> None:
    hotplug = read_state(mixed_kernel.sysfs).hotplug
    sysfs = CountingSysfs(mixed_kernel.sysfs_root)
    reading = read_device(sysfs, "dax1.0", hotplug)
    assert reading.device is not None
    assert reading.device.name == "dax1.0"
    assert [b.index for b in reading.blocks] == [b.index for b in mixed_kernel.blocks_of("dax1.0")]
    assert "devices/system/memory" not in sysfs.listed  # probed by index, not listed
    assert not any("dax0.0" in r or "dax2.0" in r for r in sysfs.reads)
    assert reading.diagnostics == ()


def test_read_device_of_a_gone_device(mixed_kernel: FakeKernel) -> None:
    hotplug = read_state(mixed_kernel.sysfs).hotplug
    mixed_kernel.remove_device("dax0.0")
    assert read_device(mixed_kernel.sysfs, "dax0.0", hotplug).device is None


def test_read_device_refuses_junk_names(mixed_kernel: FakeKernel) -> None:
    hotplug = read_state(mixed_kernel.sysfs).hotplug
    reading = read_device(mixed_kernel.sysfs, "../../dax0.0", hotplug)
    assert reading.device is None
    assert "not a dax device name" in reading.diagnostics[0].message


def test_read_device_lists_instead_of_probing_huge_ranges(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_cxl_device(size=1024 * GiB, bound="device_dax")  # 8192 candidate blocks
    hotplug = read_hotplug_settings(fake_kernel.sysfs)
    sysfs = CountingSysfs(fake_kernel.sysfs_root)
    reading = read_device(sysfs, "dax0.0", hotplug)
    assert reading.blocks == ()
    assert "devices/system/memory" in sysfs.listed


def test_explicit_bound_driver_is_reached_through_new_id(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(bound="device_dax")
    assert fake_kernel.bus.ids["device_dax"] == ["dax0.0"]
    assert read_state(fake_kernel.sysfs).devices["dax0.0"].driver == DRIVER_DEVDAX

"""The fake kernel's memory hotplug: zones, auto-online, hot-remove, leaks and faults."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import WriteTimeout
from tests.fakekernel import DEVDAX, KMEM, FakeKernel, GiB, MiB
from tests.kernel.helpers import write_error

DRV = "bus/dax/drivers"
MEM = "devices/system/memory"
PMEM_BLOCKS = range(33, 40)


def zones(kernel: FakeKernel, index: int) -> str | None:
    return kernel.sysfs.read(f"{MEM}/memory{index}/valid_zones")


def set_state(kernel: FakeKernel, index: int, word: str) -> None:
    kernel.sysfs.write(f"{MEM}/memory{index}/state", word)


def pmem_as_kmem(base: Path, **knobs: object) -> FakeKernel:
    kernel = FakeKernel(base, **knobs)  # type: ignore[arg-type]
    kernel.add_pmem_device()
    kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    return kernel


@pytest.mark.parametrize(
    ("policy", "zone"),
    [("online", "Normal"), ("online_kernel", "Normal"), ("online_movable", "Movable")],
)
def test_auto_online_at_kmem_bind(fake_kernel_base: Path, policy: str, zone: str) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks=policy)
    assert {zones(kernel, i) for i in PMEM_BLOCKS} == {zone}


def test_auto_online_offline_leaves_blocks_offline(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks="offline")
    state = read_state(kernel.sysfs)
    assert all(not b.online for b in state.blocks_of("dax0.0"))
    assert {zones(kernel, i) for i in PMEM_BLOCKS} == {"Normal Movable"}  # [facts]


def test_online_movable_then_node_has_no_normal_memory(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks="offline")
    for i in PMEM_BLOCKS:
        set_state(kernel, i, "online_movable")
    assert {zones(kernel, i) for i in PMEM_BLOCKS} == {"Movable"}
    assert kernel.sysfs.read("devices/system/node/has_memory") == "0-1"
    assert kernel.sysfs.read("devices/system/node/has_normal_memory") == "0"  # [facts]
    assert {kernel.sysfs.read(f"{MEM}/memory{i}/state") for i in PMEM_BLOCKS} == {"online"}


def test_online_kernel_in_the_middle_of_an_offline_run(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks="offline")
    set_state(kernel, 36, "online_kernel")
    assert zones(kernel, 36) == "Normal"  # [facts]
    assert zones(kernel, 35) == "Normal Movable"


def test_offline_block_inside_movable_span_defaults_to_movable(fake_kernel_base: Path) -> None:
    # default_zone_for_pfn(): a block inside ZONE_MOVABLE's span only inherits Movable.
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks="online_movable")
    set_state(kernel, 36, "offline")
    assert zones(kernel, 36) == "Movable Normal"
    kernel.sysfs.write(f"{MEM}/memory36/online", "1")
    assert zones(kernel, 36) == "Movable"


def test_offline_edge_block_shrinks_the_span(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, auto_online_blocks="online_movable")
    set_state(kernel, 39, "offline")
    assert zones(kernel, 39) == "Normal Movable"  # outside the shrunk span: Normal by default


def test_movable_node_boot_option(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, movable_node=True)
    assert {zones(kernel, i) for i in PMEM_BLOCKS} == {"Movable"}


def test_auto_movable_policy_is_numa_aware(fake_kernel_base: Path) -> None:
    # vm-notes: the new node has no boot-time kernel memory, so "online" stays in Normal.
    kernel = pmem_as_kmem(fake_kernel_base, online_policy="auto-movable")
    assert {zones(kernel, i) for i in PMEM_BLOCKS} == {"Normal"}


def test_auto_movable_policy_without_numa_awareness(fake_kernel: FakeKernel) -> None:
    fake_kernel.sysfs.write("module/memory_hotplug/parameters/online_policy", "auto-movable")
    fake_kernel.sysfs.write("module/memory_hotplug/parameters/auto_movable_numa_aware", "N")
    fake_kernel.add_pmem_device()
    fake_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    fake_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    # 7 blocks <= 301% of 16 boot blocks
    assert {zones(fake_kernel, i) for i in PMEM_BLOCKS} == {"Movable"}


@pytest.mark.parametrize("value", ["sometimes", "online_movable2"])
def test_auto_online_blocks_rejects_unknown_words(fake_kernel: FakeKernel, value: str) -> None:
    assert write_error(fake_kernel.sysfs, f"{MEM}/auto_online_blocks", value) == errno.EINVAL
    fake_kernel.sysfs.write(f"{MEM}/auto_online_blocks", "offline\n")
    assert fake_kernel.sysfs.read(f"{MEM}/auto_online_blocks") == "offline"


def test_memmap_parameter_is_read_only(fake_kernel: FakeKernel) -> None:
    path = "module/memory_hotplug/parameters/memmap_on_memory"
    assert write_error(fake_kernel.sysfs, path, "Y") == errno.EACCES


# --- hot-remove and leaks -----------------------------------------------------------------------
def test_kmem_unbind_with_an_online_block_leaks(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    for i in range(33, 39):
        set_state(pmem_kernel, i, "offline")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")  # "succeeds"
    assert pmem_kernel.devices["dax0.0"].driver is None
    [leak] = pmem_kernel.leaks
    assert (leak.device, leak.online_blocks, leak.reason) == ("dax0.0", (39,), "blocks online")
    assert all(pmem_kernel.tree.exists(f"{MEM}/memory{i}") for i in PMEM_BLOCKS)
    # The range stays reserved until reboot: neither driver can take the device again.
    assert write_error(pmem_kernel.sysfs, f"{DRV}/device_dax/bind", "dax0.0") == errno.EBUSY
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.EBUSY


def test_kmem_remove_is_per_range(fake_kernel: FakeKernel) -> None:
    bs = 128 * MiB
    fake_kernel.add_hmem_device(ranges=[(8 * GiB, 2 * bs), (9 * GiB, 2 * bs)])
    for i in (64, 65, 72):
        set_state(fake_kernel, i, "offline")
    fake_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    assert not fake_kernel.tree.exists(f"{MEM}/memory64")  # range 0 went away
    assert fake_kernel.tree.exists(f"{MEM}/memory72")  # range 1 (block 73 online) stayed
    assert [(lk.range_index, lk.online_blocks) for lk in fake_kernel.leaks] == [(1, (73,))]


def test_without_hotremove_nothing_offlines_and_unbind_leaks(fake_kernel_base: Path) -> None:
    kernel = pmem_as_kmem(fake_kernel_base, hotremove=False)
    assert kernel.sysfs.read(f"{MEM}/memory33/removable") == "0"
    assert not kernel.tree.exists(f"{MEM}/memory33/valid_zones")
    assert write_error(kernel.sysfs, f"{MEM}/memory33/state", "offline") == errno.EINVAL
    kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    assert [lk.reason for lk in kernel.leaks] == ["no CONFIG_MEMORY_HOTREMOVE"]
    assert read_state(kernel.sysfs).hotplug.hotremove is False


def test_remove_device_mid_operation(hmem_kernel: FakeKernel) -> None:
    hotplug = read_state(hmem_kernel.sysfs).hotplug
    hmem_kernel.remove_device("dax0.0")
    assert [(e.action, e.sysname) for e in hmem_kernel.uevents] == [
        ("unbind", "dax0.0"),
        ("remove", "dax0.0"),
    ]
    assert len(hmem_kernel.leaks) == 1  # its blocks were online
    assert not hmem_kernel.tree.exists("bus/dax/devices/dax0.0")
    from daxd.kernel.scan import read_device

    assert read_device(hmem_kernel.sysfs, "dax0.0", hotplug).device is None


# --- probe rules --------------------------------------------------------------------------------
def test_seed_cannot_bind(mixed_kernel: FakeKernel) -> None:
    assert write_error(mixed_kernel.sysfs, f"{DRV}/kmem/bind", "dax2.1") == errno.ENXIO
    mixed_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax2.1")  # accepted, probe error ignored
    assert mixed_kernel.devices["dax2.1"].driver is None


def test_kmem_rejects_device_without_target_node(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_pmem_device(target_node=-1)
    assert not fake_kernel.tree.exists("bus/dax/devices/dax0.0/target_node")
    fake_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    fake_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    assert write_error(fake_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.EINVAL


def test_kmem_rejects_device_smaller_than_a_block(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(start=8 * GiB + 2 * MiB, size=128 * MiB, bound=None)
    assert write_error(fake_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.EINVAL


def test_hmem_needs_device_dax_new_id(hmem_kernel: FakeKernel) -> None:
    for i in range(32, 48):
        set_state(hmem_kernel, i, "offline")
    hmem_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    # dax_match_type(): hmem regions are kmem-type, device_dax matches them only by id.
    assert write_error(hmem_kernel.sysfs, f"{DRV}/device_dax/bind", "dax0.0") == errno.ENODEV
    hmem_kernel.sysfs.write(f"{DRV}/device_dax/new_id", "dax0.0")
    assert hmem_kernel.devices["dax0.0"].driver == DEVDAX


def test_new_id_attaches_every_unbound_matching_device(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(bound=None)
    fake_kernel.add_hmem_device(bound=None)
    fake_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    # driver_attach(): dax1.0 matches kmem by type and is unbound, so it is taken too.
    assert [d.driver for d in fake_kernel.devices.values()] == [KMEM, KMEM]


# --- faults -------------------------------------------------------------------------------------
def test_offline_fails_with_ebusy(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.block_offline_fails(40)
    assert write_error(hmem_kernel.sysfs, f"{MEM}/memory40/state", "offline") == errno.EBUSY
    assert hmem_kernel.sysfs.read(f"{MEM}/memory40/state") == "online"


def test_offline_that_never_finishes_times_out(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.block_offline_hangs(40)
    with pytest.raises(WriteTimeout, match="within 2 s"):
        hmem_kernel.sysfs.write(f"{MEM}/memory40/state", "offline", timeout=2.0)
    assert hmem_kernel.sysfs.read(f"{MEM}/memory40/state") == "online"
    assert hmem_kernel.untimed_blocking_writes == []


def test_offline_that_never_finishes_without_timeout_is_recorded(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.block_offline_hangs(40)
    assert write_error(hmem_kernel.sysfs, f"{MEM}/memory40/state", "offline") == errno.EINTR
    assert hmem_kernel.untimed_blocking_writes == [f"{MEM}/memory40/state"]


def test_block_with_removable_zero(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.set_removable(41, False)
    assert hmem_kernel.sysfs.read(f"{MEM}/memory41/removable") == "0"
    assert read_state(hmem_kernel.sysfs).blocks_of("dax0.0")[9].removable is False
    assert write_error(hmem_kernel.sysfs, f"{MEM}/memory41/state", "offline") == errno.EBUSY


def test_injected_failures_count_down(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.fail("bus/dax/drivers/*/unbind", errno.EIO, times=2)
    for _ in range(2):
        assert write_error(pmem_kernel.sysfs, f"{DRV}/device_dax/unbind", "dax0.0") == errno.EIO
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    assert pmem_kernel.devices["dax0.0"].driver is None


def test_injected_failure_matches_the_resolved_path(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.fail("devices/*/dax0.0/dax0.0/memmap_on_memory", errno.ENXIO)
    path = "bus/dax/devices/dax0.0/memmap_on_memory"
    assert write_error(pmem_kernel.sysfs, path, "0") == errno.ENXIO

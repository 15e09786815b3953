"""The fake kernel answers each write of ../shared/kernel-facts.md the way Linux 6.12 did."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from tests.fakekernel import DEVDAX, KMEM, FakeKernel
from tests.fakekernel.daxbus import Bound
from tests.kernel.helpers import write_error

MEMMAP = "bus/dax/devices/dax0.0/memmap_on_memory"
DRV = "bus/dax/drivers"


def state_of(kernel: FakeKernel, index: int) -> str | None:
    return kernel.sysfs.read(f"devices/system/memory/memory{index}/state")


def to_kmem(kernel: FakeKernel) -> None:
    kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")


# --- memmap_on_memory ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["garbage", "2", "", "x1"])
def test_memmap_garbage_is_einval(pmem_kernel: FakeKernel, value: str) -> None:
    if value == "":
        pmem_kernel.sysfs.write(MEMMAP, value)  # zero-length writes never reach ->store()
        return
    assert write_error(pmem_kernel.sysfs, MEMMAP, value) == errno.EINVAL


def test_memmap_true_needs_the_global_parameter(pmem_kernel: FakeKernel) -> None:
    assert write_error(pmem_kernel.sysfs, MEMMAP, "1") == errno.EOPNOTSUPP
    pmem_kernel.sysfs.write(MEMMAP, "0")  # false is always fine


@pytest.mark.parametrize("word", ["1", "y", "Yes", "t", "on", "1\n"])
def test_memmap_accepts_kstrtobool_words(fake_kernel: FakeKernel, word: str) -> None:
    fake_kernel.configure(memmap_on_memory="Y")
    fake_kernel.add_pmem_device()
    fake_kernel.sysfs.write(MEMMAP, word)
    assert fake_kernel.sysfs.read(MEMMAP) == "1"
    fake_kernel.sysfs.write(MEMMAP, "off")
    assert fake_kernel.sysfs.read(MEMMAP) == "0"


def test_memmap_changes_while_unbound(fake_kernel: FakeKernel) -> None:
    fake_kernel.configure(memmap_on_memory="Y")
    fake_kernel.add_pmem_device(bound=None)
    fake_kernel.sysfs.write(MEMMAP, "1")
    assert read_state(fake_kernel.sysfs).devices["dax0.0"].memmap_on_memory is True


def test_memmap_change_while_kmem_bound_is_ebusy(fake_kernel: FakeKernel) -> None:
    fake_kernel.configure(memmap_on_memory="Y")
    fake_kernel.add_pmem_device()
    to_kmem(fake_kernel)
    assert write_error(fake_kernel.sysfs, MEMMAP, "1") == errno.EBUSY
    fake_kernel.sysfs.write(MEMMAP, "0")  # the same value again is fine


def test_memmap_attribute_absent_before_6_8(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_pmem_device(memmap_on_memory=None)
    assert write_error(fake_kernel.sysfs, MEMMAP, "0") == errno.ENOENT


# --- new_id / remove_id / bind / unbind ---------------------------------------------------------
@pytest.mark.parametrize("name", ["dax0", "dax", "dax00.0", "dax0.0x", "nvme0n1", "dax 0.0"])
def test_new_id_malformed_is_einval(pmem_kernel: FakeKernel, name: str) -> None:
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/new_id", name) == errno.EINVAL
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/remove_id", name) == errno.EINVAL


def test_new_id_and_remove_id_of_missing_device_are_silent(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax9.9")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/remove_id", "dax9.9")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/remove_id", "dax9.9")  # not there any more: still fine
    assert pmem_kernel.uevents == []


def test_unbind_missing_device_is_enodev(pmem_kernel: FakeKernel) -> None:
    assert write_error(pmem_kernel.sysfs, f"{DRV}/device_dax/unbind", "dax9.9") == errno.ENODEV


def test_unbind_from_the_wrong_driver_is_enodev(pmem_kernel: FakeKernel) -> None:
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/unbind", "dax0.0") == errno.ENODEV


def test_kmem_bind_while_device_dax_bound_is_enodev(pmem_kernel: FakeKernel) -> None:
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.ENODEV


def test_kmem_bind_with_id_while_device_dax_bound_is_ebusy(pmem_kernel: FakeKernel) -> None:
    # new_id matches it now, but it is bound: __driver_probe_device() says EBUSY.
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    assert pmem_kernel.devices["dax0.0"].driver == DEVDAX
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.EBUSY


def test_kmem_bind_unbound_without_new_id_is_enodev(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.ENODEV


def test_kmem_new_id_binds_and_hot_adds(pmem_kernel: FakeKernel) -> None:
    to_kmem(pmem_kernel)
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].driver == KMEM
    blocks = state.blocks_of("dax0.0")
    assert [b.index for b in blocks] == list(range(33, 40))  # [facts] memory33..memory39
    assert all(b.online and b.valid_zones == ("Normal",) and b.node == 1 for b in blocks)
    assert pmem_kernel.sysfs.read("devices/system/node/has_normal_memory") == "0-1"


def test_device_dax_bind_while_kmem_bound_is_ebusy(pmem_kernel: FakeKernel) -> None:
    to_kmem(pmem_kernel)
    assert write_error(pmem_kernel.sysfs, f"{DRV}/device_dax/bind", "dax0.0") == errno.EBUSY


@pytest.mark.parametrize(("attr", "value"), [("size", "0"), ("align", "4096")])
def test_static_size_and_align_are_eacces(pmem_kernel: FakeKernel, attr: str, value: str) -> None:
    assert write_error(pmem_kernel.sysfs, f"bus/dax/devices/dax0.0/{attr}", value) == errno.EACCES


def test_device_dax_unbind_under_a_user_succeeds_and_sigbuses(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.open_device(4242, "qemu-system-x86", "dax0.0", mapped=True)
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    assert pmem_kernel.devices["dax0.0"].driver is None
    assert [(v.pid, v.comm, v.mapped) for v in pmem_kernel.sigbus] == [
        (4242, "qemu-system-x86", True)
    ]


def test_kmem_unbind_with_all_blocks_offline_removes_them(pmem_kernel: FakeKernel) -> None:
    to_kmem(pmem_kernel)
    for i in range(33, 40):
        pmem_kernel.sysfs.write(f"devices/system/memory/memory{i}/state", "offline")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    gone = [not pmem_kernel.tree.exists(f"devices/system/memory/memory{i}") for i in range(33, 40)]
    assert all(gone)
    assert not pmem_kernel.tree.exists("devices/system/node/node1")  # try_offline_node()
    assert pmem_kernel.leaks == []
    assert read_state(pmem_kernel.sysfs).devices["dax0.0"].driver is None


def test_device_dax_bind_after_kmem_while_kmem_keeps_its_id(pmem_kernel: FakeKernel) -> None:
    to_kmem(pmem_kernel)
    for i in range(33, 40):
        pmem_kernel.sysfs.write(f"devices/system/memory/memory{i}/state", "offline")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/bind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/remove_id", "dax0.0")
    assert pmem_kernel.devices["dax0.0"].driver == DEVDAX
    assert pmem_kernel.bus.ids[KMEM] == []


# --- CXL, as the QEMU lab showed it (../shared/cxl-lab.md) --------------------------------------
def offline_all(kernel: FakeKernel, name: str = "dax0.0") -> None:
    for b in kernel.blocks_of(name):
        kernel.sysfs.write(f"devices/system/memory/memory{b.index}/state", "offline", timeout=5)


@pytest.mark.parametrize("bound", ["auto", None])
def test_cxl_memmap_reads_1_under_global_n_and_writing_1_is_eopnotsupp(
    fake_kernel: FakeKernel, bound: Bound
) -> None:
    assert fake_kernel.sysfs.read("module/memory_hotplug/parameters/memmap_on_memory") == "N"
    fake_kernel.add_cxl_device(size=1 << 30, bound=bound)
    assert fake_kernel.sysfs.read(MEMMAP) == "1"
    # it reads 1 already, yet 1 is refused: !mhp_supports_memmap_on_memory() comes first
    assert write_error(fake_kernel.sysfs, MEMMAP, "1") == errno.EOPNOTSUPP
    assert fake_kernel.sysfs.read(MEMMAP) == "1"


def test_cxl_memmap_writes_with_the_global_parameter(fake_kernel_base: Path) -> None:
    kernel = FakeKernel(fake_kernel_base, memmap_on_memory="Y")
    kernel.add_cxl_device(size=1 << 30)
    assert write_error(kernel.sysfs, MEMMAP, "0") == errno.EBUSY  # kmem-bound
    kernel.sysfs.write(MEMMAP, "1")  # the value it has: fine
    offline_all(kernel)
    kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    kernel.sysfs.write(MEMMAP, "0")  # unbound
    assert kernel.sysfs.read(MEMMAP) == "0"


def test_cxl_to_devdax_needs_new_id_and_the_id_stays(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_cxl_device(size=1 << 30)
    offline_all(fake_kernel)
    fake_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    # matched by type only by kmem: device_dax/bind is ENODEV until the id is added
    assert write_error(fake_kernel.sysfs, f"{DRV}/device_dax/bind", "dax0.0") == errno.ENODEV
    fake_kernel.sysfs.write(f"{DRV}/device_dax/new_id", "dax0.0")  # binds at once
    assert fake_kernel.sysfs.link_name("bus/dax/devices/dax0.0/driver") == DEVDAX
    assert fake_kernel.dynamic_ids() == {DEVDAX: ["dax0.0"]}
    # The id outlives the device: the next device of that name goes to device_dax by itself.
    fake_kernel.recreate_device("dax0.0")
    assert fake_kernel.sysfs.link_name("bus/dax/devices/dax0.0/driver") == DEVDAX
    fake_kernel.sysfs.write(f"{DRV}/device_dax/remove_id", "dax0.0")
    fake_kernel.recreate_device("dax0.0")
    assert fake_kernel.sysfs.link_name("bus/dax/devices/dax0.0/driver") == KMEM  # as at first
    assert fake_kernel.sysfs.read(MEMMAP) == "1"  # a new device: cxl.c's default again


# --- memory blocks ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["garbage", "Online", "online_movablex", "1"])
def test_state_garbage_is_einval(hmem_kernel: FakeKernel, value: str) -> None:
    assert write_error(hmem_kernel.sysfs, "devices/system/memory/memory32/state", value) == (
        errno.EINVAL
    )


@pytest.mark.parametrize("word", ["online", "online_movable", "online_kernel", "online\n"])
def test_any_online_word_on_an_online_block_is_einval(hmem_kernel: FakeKernel, word: str) -> None:
    path = "devices/system/memory/memory32/state"
    assert write_error(hmem_kernel.sysfs, path, word) == errno.EINVAL
    assert hmem_kernel.sysfs.read("devices/system/memory/memory32/valid_zones") == "Normal"


def test_offline_an_offline_block_is_einval(hmem_kernel: FakeKernel) -> None:
    path = "devices/system/memory/memory32/state"
    hmem_kernel.sysfs.write(path, "offline")
    assert write_error(hmem_kernel.sysfs, path, "offline") == errno.EINVAL


def test_offline_boot_memory0_is_einval(fake_kernel: FakeKernel) -> None:
    assert write_error(fake_kernel.sysfs, "devices/system/memory/memory0/state", "offline") == (
        errno.EINVAL
    )
    assert state_of(fake_kernel, 0) == "online"


def test_offline_other_boot_memory_is_ebusy(fake_kernel: FakeKernel) -> None:
    assert write_error(fake_kernel.sysfs, "devices/system/memory/memory5/state", "offline") == (
        errno.EBUSY
    )


def test_online_file_takes_booleans_only(hmem_kernel: FakeKernel) -> None:
    path = "devices/system/memory/memory32/online"
    assert write_error(hmem_kernel.sysfs, path, "2") == errno.EINVAL
    hmem_kernel.sysfs.write(path, "1")  # already online: accepted (online_store())
    hmem_kernel.sysfs.write(path, "0")
    assert state_of(hmem_kernel, 32) == "offline"
    hmem_kernel.sysfs.write(path, "0")  # already offline: accepted too
    hmem_kernel.sysfs.write(path, "1")
    assert hmem_kernel.sysfs.read("devices/system/memory/memory32/valid_zones") == "Normal"


def test_offline_an_online_removable_block(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.sysfs.write("devices/system/memory/memory40/state", "offline")
    assert state_of(hmem_kernel, 40) == "offline"
    assert hmem_kernel.sysfs.read("devices/system/memory/memory40/valid_zones") == "Normal Movable"
    assert hmem_kernel.sysfs.read("devices/system/memory/memory40/online") == "0"


def test_unmodelled_writes_fail_loudly(pmem_kernel: FakeKernel) -> None:
    with pytest.raises(NotImplementedError, match="drivers_probe"):
        pmem_kernel.sysfs.write("bus/dax/drivers_probe", "dax0.0")


def test_writes_are_logged(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0")
    assert pmem_kernel.writes == [(f"{DRV}/kmem/bind", "dax0.0")]

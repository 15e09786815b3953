"""The fake kernel's CXL machine: regions made and destroyed as ``cxl create-region`` and
``cxl destroy-region`` do on Linux 6.12 ([lab] ../shared/cxl-lab.md), with their uevents.

The tree's shape against the real one: test_fake_cxl_shape.py."""

from __future__ import annotations

import errno
import os

import pytest

from tests.fakekernel import KMEM, FakeKernel, MiB, Uevent

ROOT = "devices/platform/ACPI0017:00/root0"
CXL = "bus/cxl/devices"


def summary(events: list[Uevent]) -> list[tuple[str, str, str]]:
    return [(e.action, e.subsystem, e.sysname) for e in events]


def offline(kernel: FakeKernel, name: str) -> None:
    for b in kernel.blocks_of(name):
        kernel.sysfs.write(f"devices/system/memory/memory{b.index}/state", "offline")


def test_a_default_cxl_device_has_its_own_host_bridge_memdev_and_window(
    fake_kernel: FakeKernel,
) -> None:
    dev = fake_kernel.add_cxl_device(size=MiB * 256)
    assert dev.devpath == f"{ROOT}/decoder0.0/region0/dax_region0/dax0.0"
    assert fake_kernel.sysfs.read(f"{CXL}/mem0/serial") == "0x1000"
    assert fake_kernel.sysfs.read(f"{ROOT}/decoder0.0/target_list") == "12"
    assert fake_kernel.sysfs.read("devices/pci0000:0c/firmware_node/uid") == "12"
    assert fake_kernel.sysfs.read(f"{ROOT}/decoder0.0/region0/target0") == "decoder2.0"
    assert fake_kernel.sysfs.realpath(f"{CXL}/decoder2.0") == f"{ROOT}/port1/endpoint2/decoder2.0"
    second = fake_kernel.add_cxl_device(size=MiB * 256)
    assert second.devpath == f"{ROOT}/decoder0.1/region1/dax_region1/dax1.0"
    assert fake_kernel.sysfs.read(f"{CXL}/mem1/serial") == "0x1001"
    assert fake_kernel.sysfs.read(f"{ROOT}/decoder0.1/target_list") == "52"


def test_making_an_interleaved_region_sends_the_lab_order(fake_kernel: FakeKernel) -> None:
    for uid in (12, 52):
        fake_kernel.add_cxl_host_bridge(uid)
    window = fake_kernel.add_cxl_window([12, 52], granularity=8192)
    fake_kernel.uevents.clear()
    dev = fake_kernel.add_cxl_device(size=512 * MiB, window=window)  # a memdev below each
    assert fake_kernel.sysfs.read(f"{CXL}/mem1/serial") == "0x1001"
    blocks = [f"memory{b.index}" for b in fake_kernel.blocks_of(dev.name)]
    assert len(blocks) == 4
    assert summary(fake_kernel.uevents) == [
        *((a, "cxl", m) for m in ("mem0", "mem1") for a in ("add", "bind")),  # new memdevs
        ("add", "cxl", "region0"),
        ("add", "cxl", "dax_region0"),
        ("bind", "cxl", "region0"),
        ("add", "dax", "dax0.0"),
        *(("add", "memory", b) for b in blocks),
        ("add", "node", "node2"),
        *(("online", "memory", b) for b in blocks),
        ("bind", "dax", "dax0.0"),
        ("bind", "cxl", "dax_region0"),
    ]
    assert fake_kernel.uevents[-1].properties["DRIVER"] == "cxl_dax_region"
    assert fake_kernel.uevents[0].properties["DEVTYPE"] == "cxl_memdev"
    assert fake_kernel.uevents[4].properties["DEVTYPE"] == "cxl_region"
    assert fake_kernel.sysfs.read(f"{ROOT}/decoder0.0/region0/interleave_granularity") == "8192"


def test_no_online_events_when_the_kernel_does_not_online(fake_kernel: FakeKernel) -> None:
    fake_kernel.configure(auto_online_blocks="offline")
    fake_kernel.add_cxl_device(size=256 * MiB)
    actions = [a for a, _, _ in summary(fake_kernel.uevents)]
    assert "online" not in actions
    assert fake_kernel.devices["dax0.0"].driver == KMEM  # kmem bound, blocks offline [lab]


def test_destroy_refuses_while_bound_then_tears_down(fake_kernel: FakeKernel) -> None:
    dev = fake_kernel.add_cxl_device(size=256 * MiB)
    region = f"{ROOT}/decoder0.0/region0"
    with pytest.raises(OSError, match="busy") as refused:
        fake_kernel.destroy_cxl_region(0)  # [lab] "region0 active. Disable it or use --force"
    assert refused.value.errno == errno.EBUSY
    offline(fake_kernel, dev.name)
    fake_kernel.uevents.clear()
    fake_kernel.destroy_cxl_region(0, force=True)
    assert fake_kernel.leaks == []
    assert summary(fake_kernel.uevents) == [
        *(("remove", "memory", f"memory{i}") for i in (32, 33)),  # kmem's remove: hot-remove
        ("remove", "node", "node2"),
        ("unbind", "dax", "dax0.0"),
        ("remove", "dax", "dax0.0"),
        ("unbind", "cxl", "dax_region0"),
        ("remove", "cxl", "dax_region0"),
        ("unbind", "cxl", "region0"),
        ("remove", "cxl", "region0"),
    ]
    for gone in (region, f"{CXL}/region0", f"{CXL}/dax_region0", "bus/dax/devices/dax0.0"):
        assert not os.path.lexists(fake_kernel.tree.path(gone)), gone
    assert fake_kernel.sysfs.read(f"{CXL}/decoder2.0/region") == ""
    # cxl_dpa_free() keeps the mode ([observed] an idle decoder3.1 reading ram)
    assert fake_kernel.sysfs.read(f"{CXL}/decoder2.0/mode") == "ram"
    assert fake_kernel.sysfs.read(f"{CXL}/decoder2.0/dpa_size") == "0x0000000000000000"
    assert fake_kernel.sysfs.read(f"{CXL}/decoder2.0/dpa_resource") == "0xffffffffffffffff"
    assert fake_kernel.sysfs.read(f"{CXL}/endpoint2/decoders_committed") == "0"
    assert fake_kernel.sysfs.read(f"{CXL}/decoder1.0/region") == ""


def test_a_destroyed_region_id_is_offered_again(fake_kernel: FakeKernel) -> None:
    """cxl_region_release(): the root decoder takes back an id below the one it offers, as the
    lab saw (decoder0.0 offered region3, then region0 again after the destroy)."""
    fake_kernel.add_cxl_host_bridge(12)
    windows = [fake_kernel.add_cxl_window([12]), fake_kernel.add_cxl_window([12])]
    create = f"{ROOT}/{windows[0]}/create_ram_region"
    assert fake_kernel.sysfs.read(create) == "region0"
    dev = fake_kernel.add_cxl_device(size=256 * MiB, window=windows[0])
    assert fake_kernel.sysfs.read(create) == "region2"
    offline(fake_kernel, dev.name)
    fake_kernel.destroy_cxl_region(0, force=True)
    assert fake_kernel.sysfs.read(create) == "region0"
    again = fake_kernel.add_cxl_device(size=256 * MiB, window=windows[0])
    assert again.name == "dax0.0"


def test_one_region_per_host_bridge_and_targets_in_window_order(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_cxl_device(size=256 * MiB, serials=[0x1000], host_bridges=[12])
    with pytest.raises(OSError, match="busy") as busy:  # [lab] QEMU: one HDM decoder per host
        # bridge; target0's write: cxl_rr_alloc_decoder() "no decoder available"
        fake_kernel.add_cxl_device(size=256 * MiB, serials=[0x1000])
    assert busy.value.errno == errno.EBUSY
    assert summary(fake_kernel.uevents)[-2:] == [
        ("add", "cxl", "region1"),
        ("remove", "cxl", "region1"),
    ]
    fake_kernel.add_cxl_memdev(0x2000, 92)
    fake_kernel.add_cxl_memdev(0x2001, 132)
    window = fake_kernel.add_cxl_window([92, 132])
    with pytest.raises(AssertionError, match="target_list"):  # "failed to set target0"
        fake_kernel.add_cxl_device(size=512 * MiB, serials=[0x2001, 0x2000], window=window)

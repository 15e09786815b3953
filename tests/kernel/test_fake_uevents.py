"""Uevents come in the kernel's order with udev's properties, and reach the listener."""

from __future__ import annotations

import errno

from tests.fakekernel import FakeKernel, Uevent
from tests.kernel.helpers import write_error

DRV = "bus/dax/drivers"


def summary(events: list[Uevent]) -> list[tuple[str, str, str]]:
    return [(e.action, e.subsystem, e.sysname) for e in events]


def memory(action: str, indices: range) -> list[tuple[str, str, str]]:
    return [(action, "memory", f"memory{i}") for i in indices]


def test_new_device_is_added_then_bound(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_pmem_device()
    add, bind = fake_kernel.uevents
    assert (add.action, bind.action) == ("add", "bind")
    nd = "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0"
    assert add.devpath == f"{nd}/region0/dax0.0/dax0.0"
    assert add.properties["DEVNAME"] == "/dev/dax0.0"  # [facts] udev properties
    assert add.properties["MODALIAS"] == "dax:t0"
    assert (add.properties["MAJOR"], add.properties["MINOR"]) == ("252", "0")
    assert add.properties["SUBSYSTEM"] == "dax"
    assert "DRIVER" not in add.properties
    assert bind.properties["DRIVER"] == "device_dax"
    assert int(bind.properties["SEQNUM"]) == int(add.properties["SEQNUM"]) + 1


def test_kmem_bind_adds_and_onlines_blocks_before_the_bind(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    blocks = range(33, 40)
    assert summary(pmem_kernel.uevents) == [
        ("unbind", "dax", "dax0.0"),
        *memory("add", blocks),  # create_memory_block_devices() for the whole range first
        ("add", "node", "node1"),  # the node had no memory: it comes online [lab]
        *memory("online", blocks),  # then auto-online, block by block
        ("bind", "dax", "dax0.0"),  # driver_bound() after the probe returned
    ]
    assert "DRIVER" not in pmem_kernel.uevents[0].properties  # sent after the driver is gone
    assert pmem_kernel.uevents[-1].properties["DRIVER"] == "kmem"
    assert pmem_kernel.uevents[1].devpath == "/devices/system/memory/memory33"


def test_offline_then_kmem_unbind_removes_blocks_before_the_unbind(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    pmem_kernel.uevents.clear()
    for i in range(33, 40):
        pmem_kernel.sysfs.write(f"devices/system/memory/memory{i}/state", "offline")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/unbind", "dax0.0")
    assert summary(pmem_kernel.uevents) == [
        *memory("offline", range(33, 40)),
        *memory("remove", range(33, 40)),
        ("remove", "node", "node1"),  # try_offline_node(): no memory and no CPU left
        ("unbind", "dax", "dax0.0"),
    ]


def test_failed_writes_emit_nothing(pmem_kernel: FakeKernel) -> None:
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/bind", "dax0.0") == errno.ENODEV
    assert write_error(pmem_kernel.sysfs, f"{DRV}/kmem/unbind", "dax0.0") == errno.ENODEV
    assert pmem_kernel.uevents == []


def test_no_online_events_when_auto_online_is_offline(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.sysfs.write("devices/system/memory/auto_online_blocks", "offline")
    pmem_kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    pmem_kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    assert [a for a, _, _ in summary(pmem_kernel.uevents)].count("online") == 0


def test_listener_sees_every_event(fake_kernel: FakeKernel) -> None:
    seen: list[Uevent] = []
    fake_kernel.listener = seen.append
    fake_kernel.add_hmem_device(size=256 << 20)
    assert seen == fake_kernel.uevents
    assert summary(seen) == [
        ("add", "dax", "dax0.0"),
        *memory("add", range(32, 34)),
        ("add", "node", "node1"),
        *memory("online", range(32, 34)),
        ("bind", "dax", "dax0.0"),
    ]

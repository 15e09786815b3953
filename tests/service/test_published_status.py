"""What a device's D-Bus status says, from what daxd read: typed, and what is in effect."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daxd.kernel.model import (
    BlockState,
    DaxDevice,
    HotplugSettings,
    KernelZone,
    MemoryBlock,
    Provider,
)
from daxd.kernel.view import DeviceView, view
from daxd.plan.steps import DevicePlan, Verdict
from daxd.service.reconciler import make_status
from daxd.service.status import DeviceState

VIEW = DeviceView(
    name="dax0.0",
    provider="cxl",
    size=512 << 20,
    mode="system-ram",
    driver="kmem",
    zone="movable",
    memmap_on_memory=True,
    blocks_online=4,
    blocks_total=4,
    numa_node=None,
    target_node=1,
    blocks_movable=4,
    blocks_normal=0,
)
PLAN = DevicePlan(device="dax0.0", verdict=Verdict.IN_SYNC, rule="cxl-ram")


def cxl_device(memmap_on_memory: bool | None) -> DaxDevice:
    return DaxDevice(
        name="dax0.0", region_id=0, size=4 << 27, align=None, target_node=1, numa_node=0,
        resource=None, ranges=(), memmap_on_memory=memmap_on_memory, driver="kmem",
        provider=Provider.CXL, devpath="devices/x/dax0.0",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("attribute", "param", "in_effect", "published"),
    [
        (True, False, False, False),  # CXL: the attribute reads 1 while the global parameter is N
        (True, True, True, True),
        (False, True, False, False),
        (True, None, True, True),  # the parameter not shown: the attribute counts
        (False, None, False, False),
        (None, True, None, False),  # attribute absent (Linux < 6.8)
    ],
)
def test_memmap_on_memory_is_what_is_in_effect(
    attribute: bool | None, param: bool | None, in_effect: bool | None, published: bool
) -> None:
    hotplug = HotplugSettings(1 << 27, None, param, None, hotremove=True)
    got = view(cxl_device(attribute), (), hotplug)
    assert (got.memmap_on_memory, got.memmap_on_memory_attribute) == (in_effect, attribute)
    status = make_status(got, PLAN, DeviceState.APPLIED, "", 7)
    assert status.memmap_on_memory is published


@pytest.mark.parametrize(
    ("online", "movable", "normal", "zone"),
    [(0, 0, 0, "none"), (4, 4, 0, "movable"), (4, 0, 4, "normal"), (4, 1, 3, "mixed"),
     (4, 3, 0, "mixed")],
)  # fmt: skip
def test_zone_comes_from_the_counts(online: int, movable: int, normal: int, zone: str) -> None:
    view = replace(VIEW, blocks_online=online, blocks_movable=movable, blocks_normal=normal)
    got = make_status(view, PLAN, DeviceState.APPLIED, "", 7)
    assert (got.zone, got.blocks_movable, got.blocks_normal) == (zone, movable, normal)


def test_other_drivers_are_mode_other_and_the_driver_names_them() -> None:
    view = replace(VIEW, mode="other:vfio-dax", driver="vfio-dax", blocks_online=0)
    got = make_status(view, PLAN, DeviceState.UNMANAGED, "", 7)
    assert (got.mode, got.driver, got.zone, got.numa_node) == ("other", "vfio-dax", "none", -1)


def test_the_view_counts_blocks_by_zone() -> None:
    def block(index: int, state: BlockState, *zones: KernelZone) -> MemoryBlock:
        return MemoryBlock(index, state, zones, index, True, 1)

    device = cxl_device(None)
    blocks = (
        block(1, BlockState.ONLINE, KernelZone.MOVABLE),
        block(2, BlockState.ONLINE, KernelZone.NORMAL),
        block(3, BlockState.ONLINE, KernelZone.DMA32),
        block(4, BlockState.OFFLINE, KernelZone.NORMAL, KernelZone.MOVABLE),
        block(5, BlockState.ONLINE, KernelZone.NONE),  # spans zones
    )
    got = view(device, blocks, None)
    assert (got.blocks_online, got.blocks_movable, got.blocks_normal) == (4, 1, 2)
    assert make_status(got, PLAN, DeviceState.APPLIED, "", 7).zone == "mixed"


def test_no_numa_node_is_null_in_json_and_minus_one_on_dbus(fake_kernel_base: Path) -> None:
    """[cxl-lab] A CXL dax device's numa_node reads -1 (NUMA_NO_NODE)."""
    from daxd.apply.report import list_entry
    from daxd.kernel.scan import read_state
    from daxd.service.dbus_values import to_dbus
    from tests.fakekernel import FakeKernel

    kernel = FakeKernel(fake_kernel_base)
    kernel.add_cxl_device(size=1 << 30, numa_node=-1)
    assert kernel.sysfs.read("bus/dax/devices/dax0.0/numa_node") == "-1"
    state = read_state(kernel.sysfs)
    device = state.devices["dax0.0"]
    entry = list_entry(device, state.blocks_of("dax0.0"), None, state.hotplug)
    assert entry["numa_node"] is None  # JSON: null
    assert "numa_node" not in to_dbus(entry)  # a record leaves it out
    got = view(device, state.blocks_of("dax0.0"), state.hotplug)
    assert make_status(got, PLAN, DeviceState.APPLIED, "", 7).numa_node == -1  # NumaNode

"""What a device's D-Bus status says, from what daxd read: typed, and what is in effect."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daxd.kernel.model import BlockState, KernelZone, MemoryBlock
from daxd.kernel.view import DeviceView
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


def status(view: DeviceView = VIEW, memmap_param: bool = False) -> object:
    return make_status(view, PLAN, DeviceState.APPLIED, "", 7, memmap_param=memmap_param)


@pytest.mark.parametrize(
    ("attribute", "param", "in_effect"),
    [
        (True, False, False),  # CXL: the attribute reads 1 while the global parameter is N
        (True, True, True),
        (False, True, False),
        (None, True, False),  # attribute absent (Linux < 6.8)
    ],
)
def test_memmap_on_memory_is_what_is_in_effect(
    attribute: bool | None, param: bool, in_effect: bool
) -> None:
    view = replace(VIEW, memmap_on_memory=attribute)
    got = make_status(view, PLAN, DeviceState.APPLIED, "", 7, memmap_param=param)
    assert got.memmap_on_memory is in_effect


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
    from daxd.kernel.model import DaxDevice, Provider
    from daxd.kernel.view import view

    def block(index: int, state: BlockState, *zones: KernelZone) -> MemoryBlock:
        return MemoryBlock(index, state, zones, index, True, 1)

    device = DaxDevice(
        name="dax0.0", region_id=0, size=4 << 27, align=None, target_node=1, numa_node=0,
        resource=None, ranges=(), memmap_on_memory=None, driver="kmem", provider=Provider.CXL,
        devpath="devices/x/dax0.0",
    )  # fmt: skip
    blocks = (
        block(1, BlockState.ONLINE, KernelZone.MOVABLE),
        block(2, BlockState.ONLINE, KernelZone.NORMAL),
        block(3, BlockState.ONLINE, KernelZone.DMA32),
        block(4, BlockState.OFFLINE, KernelZone.NORMAL, KernelZone.MOVABLE),
        block(5, BlockState.ONLINE, KernelZone.NONE),  # spans zones
    )
    got = view(device, blocks)
    assert (got.blocks_online, got.blocks_movable, got.blocks_normal) == (4, 1, 2)
    assert make_status(got, PLAN, DeviceState.APPLIED, "", 7).zone == "mixed"

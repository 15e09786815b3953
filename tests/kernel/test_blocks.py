"""Which blocks a range holds: whole blocks only, found by bisection."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from daxd.kernel.blocks import block_intervals, in_intervals
from daxd.kernel.model import Range
from daxd.kernel.scan import read_state
from tests.fakekernel import FakeKernel

BS = 1 << 27


def test_kernel_facts_example() -> None:
    # [facts] 0x101200000-0x13fffffff with 128 MiB blocks: memory33..memory39
    assert block_intervals([Range(0x101200000, 0x13FFFFFFF)], BS) == [(33, 39)]


def test_range_inside_one_block_holds_none() -> None:
    assert block_intervals([Range(BS + 4096, 2 * BS - 4097)], BS) == []


@given(
    st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 600)), max_size=5),
    st.sets(st.integers(0, 40)),
    st.sampled_from([1 << 12, 1 << 20, 3 << 20]),
)
def test_intervals_hold_exactly_the_whole_blocks(
    spans: list[tuple[int, int]], present: set[int], block: int
) -> None:
    unit = 1 << 12
    ranges = [Range(s * unit, (s + n) * unit - 1) for s, n in spans]
    found = in_intervals(sorted(present), block_intervals(ranges, block))
    whole = {
        i
        for i in present
        if any(r.start <= i * block and (i + 1) * block - 1 <= r.end for r in ranges)
    }
    assert sorted(set(found)) == sorted(whole)


def test_valid_zones_is_never_read_for_blocks_that_are_not_online(fake_kernel_base: Path) -> None:
    """Linux 6.12 can oops reading valid_zones of a block kmem has just added (no node yet)."""
    kernel = FakeKernel(fake_kernel_base, auto_online_blocks="offline")
    kernel.add_pmem_device(bound="kmem")
    state = read_state(kernel.sysfs)
    offline = [b for b in state.blocks_of("dax0.0") if b.state == "offline"]
    assert len(offline) == 7
    assert all(b.valid_zones == () for b in offline)
    assert kernel.risky_reads == []
    # the same read of an online block is fine, and gives its zone
    kernel.sysfs.write(f"devices/system/memory/memory{offline[0].index}/state", "online_movable")
    (first, *_) = read_state(kernel.sysfs).blocks_of("dax0.0")
    assert first.zone == "Movable"
    assert kernel.risky_reads == []


def test_a_reread_sees_state_and_zone_and_finds_new_and_vanished_blocks(
    fake_kernel_base: Path,
) -> None:
    """read_device(known=...) re-reads known blocks for state and zone only."""
    from daxd.kernel.scan import read_device, read_hotplug_settings

    kernel = FakeKernel(fake_kernel_base, auto_online_blocks="offline")
    kernel.add_pmem_device(bound="kmem")
    hotplug = read_hotplug_settings(kernel.sysfs)
    first = read_device(kernel.sysfs, "dax0.0", hotplug)
    assert [b.state for b in first.blocks] == ["offline"] * 7
    known = {b.index: b for b in first.blocks[:5]}  # two blocks not read before
    moved = first.blocks[0].index
    kernel.sysfs.write(f"devices/system/memory/memory{moved}/state", "online_movable")
    again = read_device(kernel.sysfs, "dax0.0", hotplug, known)
    assert [b.index for b in again.blocks] == [b.index for b in first.blocks]
    assert (again.blocks[0].state, again.blocks[0].zone) == ("online", "Movable")
    assert again.blocks[0].phys_index == moved
    assert again.blocks[0].node == first.blocks[0].node
    assert again.blocks[1:] == first.blocks[1:]
    # every block gone with kmem's unbind: none left, none invented
    kernel.sysfs.write(f"devices/system/memory/memory{moved}/state", "offline", timeout=5)
    kernel.sysfs.write("bus/dax/drivers/kmem/unbind", "dax0.0")
    gone = read_device(kernel.sysfs, "dax0.0", hotplug, {b.index: b for b in again.blocks})
    assert gone.blocks == ()
    assert kernel.risky_reads == []

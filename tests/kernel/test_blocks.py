"""Which blocks a range holds: whole blocks only, found by bisection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from daxd.kernel.blocks import block_intervals, in_intervals
from daxd.kernel.model import Range

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

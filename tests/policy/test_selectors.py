"""Matching devices: every selector, lists, negation, and how values are written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daxd.kernel.model import DaxDevice, Provider, Range
from daxd.policy.selectors import Selector
from tests.policy.helpers import GiB, device


def matches(selector: dict[str, object], dev: DaxDevice) -> bool:
    return Selector.model_validate(selector).matches(dev)


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("cxl", {"cxl"}),
        (["cxl", "hmem"], {"cxl", "hmem"}),
        ("!pmem", {"cxl", "hmem", "unknown"}),
        ("! pmem", {"cxl", "hmem", "unknown"}),
        (["!pmem", "!unknown"], {"cxl", "hmem"}),
        (["cxl", "!pmem"], {"cxl"}),
        (["cxl", "!cxl"], set()),
    ],
)
def test_provider_lists_and_negation(provider: object, expected: set[str]) -> None:
    matched = {p.value for p in Provider if matches({"provider": provider}, device(provider=p))}
    assert matched == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("dax1.0", {"dax1.0"}),
        ("dax1.*", {"dax1.0", "dax1.1"}),
        ("dax[02].0", {"dax0.0", "dax2.0"}),
        ("!dax1.*", {"dax0.0", "dax2.0", "dax10.0"}),
        (["dax1*", "!dax1.1"], {"dax1.0", "dax10.0"}),
        ("DAX1.0", set()),
    ],
)
def test_device_name_patterns(pattern: object, expected: set[str]) -> None:
    names = ["dax0.0", "dax1.0", "dax1.1", "dax2.0", "dax10.0"]
    assert {n for n in names if matches({"device": pattern}, device(n))} == expected


@pytest.mark.parametrize("region", [3, "3", "region3", [1, "region3"], "!region1", ["!0", "!1"]])
def test_region_forms_that_match_region_3(region: object) -> None:
    assert matches({"region": region}, device(region_id=3))


@pytest.mark.parametrize("region", [1, "region1", "!3", "!region3", [0, 1]])
def test_region_forms_that_do_not_match_region_3(region: object) -> None:
    assert not matches({"region": region}, device(region_id=3))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("16G", True),
        ("16GiB", True),
        ("16 gib", True),
        (16 * GiB, True),
        ("16384M", True),
        ("16777216K", True),
        ("16777216kib", True),
        ("0.015625T", True),
        ("0x400000000", True),
        ("15G", False),
        (">= 16G", True),
        ("> 16G", False),
        ("<= 16G", True),
        ("< 16G", False),
        (">16383M", True),
        ("8G..16G", True),
        ("16G..32G", True),
        ("16G..", True),
        ("..16G", True),
        ("..15G", False),
        ("17G..", False),
        ("!8G..16G", False),
        (["1T", "< 1G", "16G"], True),
    ],
)
def test_sizes_units_comparisons_and_ranges(size: object, expected: bool) -> None:
    assert matches({"size": size}, device(size=16 * GiB)) is expected


@given(bound=st.integers(0, 1 << 50), size=st.integers(0, 1 << 50))
def test_size_comparisons_agree_with_python(bound: int, size: int) -> None:
    dev = device(size=size, resource=None)
    assert matches({"size": f">= {bound}"}, dev) is (size >= bound)
    assert matches({"size": f"> {bound:#x}"}, dev) is (size > bound)
    assert matches({"size": f"..{bound}"}, dev) is (size <= bound)
    assert matches({"size": f"!{bound}B"}, dev) is (size != bound)


def test_numa_and_target_nodes() -> None:
    dev = device(numa_node=0, target_node=2)
    assert matches({"numa_node": 0, "target_node": [1, 2]}, dev)
    assert not matches({"numa_node": 1}, dev)
    assert not matches({"target_node": "!2"}, dev)
    no_node = device(numa_node=None, target_node=None)
    assert not matches({"numa_node": 0}, no_node)
    assert matches({"numa_node": "!0", "target_node": "!1"}, no_node)


def test_uuid_is_compared_without_regard_to_case() -> None:
    lower = "9d2e0b1c-5c7a-4d2e-8f31-6a0d4c1b2e3f"
    dev = device(uuid=lower.upper())
    assert matches({"uuid": lower}, dev)
    assert matches({"uuid": lower.upper()}, device(uuid=lower))
    assert not matches({"uuid": "9d2e0b1c-5c7a-4d2e-8f31-6a0d4c1b2e30"}, dev)
    assert not matches({"uuid": lower}, device(uuid=None))
    assert matches({"uuid": f"!{lower}"}, device(uuid=None))


def test_namespace_patterns() -> None:
    dev = device(provider=Provider.PMEM, namespace="namespace1.0")
    assert matches({"namespace": "namespace1.*"}, dev)
    assert not matches({"namespace": "namespace0.*"}, dev)
    assert not matches({"namespace": "*"}, device(namespace=None))


def test_address_is_the_resource_or_any_mapping_start() -> None:
    split = device(
        resource=0x1_0000_0000,
        ranges=(Range(0x1_0000_0000, 0x1_3FFF_FFFF), Range(0x2_0000_0000, 0x2_3FFF_FFFF)),
    )
    assert matches({"address": "0x100000000"}, split)
    assert matches({"address": "0x200000000"}, split)
    assert matches({"address": 0x2_0000_0000}, split)
    assert matches({"address": "4G"}, split)
    assert not matches({"address": "0x100200000"}, split)  # inside, but not a start
    assert matches({"address": "0x1f0000000..0x2ffffffff"}, split)
    assert matches({"address": ">= 0x200000000"}, split)
    assert not matches({"address": "> 0x200000000"}, split)
    assert not matches({"address": "!0x200000000"}, split)
    assert not matches({"address": "0x100000000"}, device(resource=None))


def test_every_selector_must_hold() -> None:
    selector = {"provider": "cxl", "size": ">= 8G", "region": 0, "device": "dax0.*"}
    assert matches(selector, device("dax0.0", provider=Provider.CXL, size=16 * GiB))
    assert not matches(selector, device("dax0.0", provider=Provider.CXL, size=4 * GiB))
    assert not matches(selector, device("dax0.0", provider=Provider.HMEM, size=16 * GiB))
    assert not matches(selector, device("dax1.0", provider=Provider.CXL, size=16 * GiB))


def test_a_selector_reads_back_as_written() -> None:
    selector = Selector.model_validate({"provider": ["cxl", "!pmem"], "size": ">= 16GiB"})
    assert str(selector) == "provider: [cxl, !pmem], size: >= 16GiB"
    assert str(Selector()) == "every device"

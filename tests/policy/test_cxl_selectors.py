"""The CXL selectors: serial, host_bridge, window, interleave_ways, and uuid on a CXL region.

They compare with what outlives the kernel's numbering (serial numbers, host bridge uids, root
decoders): devices without a CXL identity never match a plain item of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daxd.kernel.model import CxlIdentity, CxlMemdev, DaxDevice, Provider
from daxd.policy.selectors import Selector
from tests.policy.helpers import device, load, problems

A, B = 0x1000, 0x1001
DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
REGION_UUID = "0b9ac3b1-97bc-4e56-8d2a-7b3f1e0c5d21"


def memdev(position: int, serial: int | None, uid: int | None, name: str | None) -> CxlMemdev:
    bridge = None if uid is None else f"pci0000:{uid:02x}"
    return CxlMemdev(position, f"mem{position}", serial, bridge if name is None else name, uid)


def cxl_device(
    *memdevs: CxlMemdev,
    window: str = "decoder0.0",
    start: int | None = 0x1_1000_0000,
    uuid: str | None = None,
    name: str = "dax0.0",
) -> DaxDevice:
    identity = CxlIdentity(
        region=f"region{name[3]}",
        uuid=uuid,
        mode="ram",
        interleave_ways=len(memdevs),
        interleave_granularity=256,
        window=window,
        window_start=start,
        memdevs=memdevs,
    )
    return dataclasses.replace(device(name, provider=Provider.CXL), cxl=identity)


ONE = cxl_device(memdev(0, A, 12, None))
OTHER = cxl_device(memdev(0, B, 52, None), window="decoder0.1", start=0x2_1000_0000)
BOTH = cxl_device(
    memdev(0, A, 12, None), memdev(1, B, 52, None), window="decoder0.2", start=0x3_1000_0000
)
PMEM = device(provider=Provider.PMEM, uuid=REGION_UUID)
HMEM = device(provider=Provider.HMEM)


def matches(selector: dict[str, object], dev: DaxDevice) -> bool:
    return Selector.model_validate(selector).matches(dev)


def matching(selector: dict[str, object]) -> set[str]:
    named = {"one": ONE, "other": OTHER, "both": BOTH, "pmem": PMEM, "hmem": HMEM}
    return {n for n, d in named.items() if matches(selector, d)}


@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        (4096, {"one", "both"}),
        ("0x1000", {"one", "both"}),
        ("0X1000", {"one", "both"}),
        ("4096", {"one", "both"}),
        ("0x1001", {"other", "both"}),
        ([A, B], {"one", "other", "both"}),
        ("!0x1000", {"other", "pmem", "hmem"}),
        (["!0x1000", "!0x1001"], {"pmem", "hmem"}),
        ([A, "!0x1001"], {"one"}),
        (0x1002, set()),
    ],
)
def test_serial_matches_any_memdev_of_the_region(serial: object, expected: set[str]) -> None:
    assert matching({"serial": serial}) == expected


@pytest.mark.parametrize(
    ("bridge", "expected"),
    [
        (12, {"one", "both"}),
        ("12", {"one", "both"}),
        ("0xc", {"one", "both"}),  # as `cxl list` prints the id
        ("pci0000:0c", {"one", "both"}),
        ("PCI0000:0C", {"one", "both"}),
        (52, {"other", "both"}),
        ("pci0000:34", {"other", "both"}),
        ("!12", {"other", "pmem", "hmem"}),
        (0, set()),  # the main PCI root has no CXL memory
    ],
)
def test_host_bridge_by_uid_or_name(bridge: object, expected: set[str]) -> None:
    assert matching({"host_bridge": bridge}) == expected


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("decoder0.1", {"other"}),
        ("decoder0.*", {"one", "other", "both"}),
        ("decoder0.[02]", {"one", "both"}),
        ("!decoder0.2", {"one", "other", "pmem", "hmem"}),
        ("0x310000000", {"both"}),
        (0x2_1000_0000, {"other"}),
        (">= 0x210000000", {"other", "both"}),
        ("0x100000000..0x2ffffffff", {"one", "other"}),
        ("0x110000001", set()),  # the start, not any address inside
    ],
)
def test_window_by_root_decoder_or_start(window: object, expected: set[str]) -> None:
    assert matching({"window": window}) == expected


def test_a_window_start_not_shown_matches_no_address() -> None:
    hidden = cxl_device(memdev(0, A, 12, None), start=None)  # decoder0.0/start is 0400
    assert not matches({"window": "0x110000000"}, hidden)
    assert matches({"window": "decoder0.0"}, hidden)


def test_interleave_ways() -> None:
    assert matching({"interleave_ways": 2}) == {"both"}
    assert matching({"interleave_ways": [1]}) == {"one", "other"}
    assert matching({"interleave_ways": "!2"}) == {"one", "other", "pmem", "hmem"}


def test_uuid_matches_a_cxl_region_uuid_too() -> None:
    region = cxl_device(memdev(0, A, 12, None), uuid=REGION_UUID)
    assert matches({"uuid": REGION_UUID.upper()}, region)
    assert matches({"uuid": REGION_UUID}, PMEM)  # the namespace uuid, as before
    assert not matches({"uuid": REGION_UUID}, ONE)  # RAM regions have none
    assert matches({"uuid": f"!{REGION_UUID}"}, ONE)


def test_unknown_memdev_parts_match_nothing_but_negations() -> None:
    blind = cxl_device(CxlMemdev(0, None, None, None, None))
    selectors: list[dict[str, object]] = [
        {"serial": A},
        {"host_bridge": 12},
        {"host_bridge": "pci0000:0c"},
    ]
    for selector in selectors:
        assert not matches(selector, blind)
    assert matches({"serial": "!0x1000", "host_bridge": "!12"}, blind)


def test_cxl_selectors_combine_with_the_others() -> None:
    selector = {"provider": "cxl", "serial": "0x1000", "interleave_ways": 1, "size": ">= 8G"}
    assert matching(selector) == {"one"}


def test_the_selectors_read_back_as_written() -> None:
    selector = Selector.model_validate(
        {"serial": ["0x1000", "!4097"], "host_bridge": "pci0000:0c", "window": "decoder0.*"}
    )
    assert str(selector) == "serial: [0x1000, !4097], host_bridge: pci0000:0c, window: decoder0.*"


def docs_example() -> str:
    """The YAML of docs/policy.md's CXL section."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### CXL: name the hardware") :]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_example_two_host_bridges_and_an_interleave(tmp_path: Path) -> None:
    """The first matching rule, by interleave, serial and host bridge, window."""
    policy = load(tmp_path, docs_example())
    assert [getattr(policy.match(d), "name", None) for d in (ONE, OTHER, BOTH, HMEM)] == [
        "fast-expander-as-ram",
        "the-other-one-as-devdax",
        "interleaved-as-ram",
        None,
    ]


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("serial: 0xZZ", "expected a serial number such as 0x1000 or 4096, got '0xZZ'"),
        ("serial: -1", "a serial number must not be negative, got -1"),
        (
            "serial: 010",
            "expected a serial number such as 0x1000 or 4096, got '010'; leading zeros are not "
            "allowed (YAML 1.1 would read '010' as octal)",
        ),
        ("serial: true", "expected a serial number such as 0x1000 or 4096, got true"),
        (
            "host_bridge: pci0000",
            "expected a host bridge such as 12 (its uid, as in a root decoder's target_list) or "
            "pci0000:0c, got 'pci0000'",
        ),
        (
            "window: decoder",
            "a window is a root decoder such as decoder0.1 or 'decoder0.*', got 'decoder'",
        ),
        (
            "window: region0",
            "expected a window such as decoder0.1, 'decoder0.*' or 0x110000000, got 'region0'",
        ),
        ("interleave_ways: 0", "interleave ways must be at least 1"),
        (
            "interleave_ways: two",
            "interleave ways must be a whole number such as 1, 2 or 4, got 'two'",
        ),
        ("serial: []", "empty list; remove 'serial' to match any device"),
        ("host_bridge:", "'host_bridge' has no value; remove it to match any device"),
    ],
)
def test_value_problems_are_located(tmp_path: Path, selector: str, message: str) -> None:
    text = f"rules:\n  - mode: devdax\n    match:\n      {selector}\n"
    first = problems(tmp_path, text).split("\n")[0]
    assert first.split(": ", 1)[1] == message
    assert first.startswith("P:4:")


def test_a_bad_item_in_a_list_is_located_at_the_item(tmp_path: Path) -> None:
    text = "rules:\n  - mode: devdax\n    match:\n      serial: [0x1000, 0x10zz]\n"
    lines = problems(tmp_path, text).split("\n")
    assert lines[0] == "P:4:24: expected a serial number such as 0x1000 or 4096, got '0x10zz'"
    assert lines[2] == " " * 23 + "^"


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("serials", "did you mean 'serial'?"),
        ("Serial", "did you mean 'serial'?"),
        ("hostbridge", "did you mean 'host_bridge'?"),
        ("host-bridge", "did you mean 'host_bridge'?"),
        ("interleave", "did you mean 'interleave_ways'?"),
        ("windows", "did you mean 'window'?"),
        ("ways", "did you mean 'interleave_ways'?"),
        ("memdev", "memN names change between boots: match the memdev's 'serial' instead"),
        ("decoder", "the root decoder a region is made in is its 'window'"),
    ],
)
def test_unknown_keys_suggest_the_cxl_selectors(tmp_path: Path, key: str, hint: str) -> None:
    text = f"rules:\n  - mode: devdax\n    match:\n      {key}: 1\n"
    first = problems(tmp_path, text).split("\n")[0]
    assert first == f"P:4:7: unknown key {key!r} in 'match'; {hint}"


def test_the_known_keys_list_the_cxl_selectors(tmp_path: Path) -> None:
    text = "rules:\n  - mode: devdax\n    match:\n      zzz: 1\n"
    first = problems(tmp_path, text).split("\n")[0]
    assert first.endswith(
        "(known keys: device, namespace, region, provider, size, numa_node, target_node, uuid, "
        "address, serial, host_bridge, window, interleave_ways)"
    )

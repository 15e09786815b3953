"""The ``regions:`` section: CXL regions by what outlives a boot, loaded into CxlRegionSpec, and
every mistake reported at the key or item it is about (docs/policy.md, "CXL regions")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from daxd.cli.main import main
from daxd.policy import CxlRegionSpec, MemdevRef, check_policy, load_policy
from daxd.policy.units import Interval
from tests.policy.helpers import GiB, load, problems, write

DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
POLICY_PACKAGE = Path(__file__).resolve().parents[2] / "daxd" / "policy"
MiB = 1 << 20

FULL = """\
version: 1
regions:
  - name: expander-0
    memdevs: [0x1000]
  - name: pair
    memdevs:
      - {serial: 0x1001}
      - {host_bridge: 52}
    interleave_ways: 2
    granularity: 8K
    size: 1G
    type: ram
    window: decoder0.2
    state: present
rules:
  - mode: devdax
"""


def region_lines(*items: str) -> str:
    """A policy whose regions are ``items``, one flow mapping a line, from line 2."""
    return "regions:\n" + "".join(f"  - {item}\n" for item in items)


def first_problem(tmp_path: Path, text: str) -> str:
    return problems(tmp_path, text).split("\n")[0]


# --- what loads --------------------------------------------------------------------------------
def test_every_key_loads_into_the_model(tmp_path: Path) -> None:
    policy = load(tmp_path, FULL)
    path = tmp_path / "policy.yaml"
    assert policy.regions == (
        CxlRegionSpec(
            name="expander-0",
            location=f"{path}:3",
            memdevs=(MemdevRef(serial=0x1000),),
            interleave_ways=1,
            granularity=None,
            size=None,
            type="ram",
            window=None,
            state="present",
        ),
        CxlRegionSpec(
            name="pair",
            location=f"{path}:5",
            memdevs=(MemdevRef(serial=0x1001), MemdevRef(host_bridge=52)),
            interleave_ways=2,
            granularity=8 << 10,
            size=GiB,
            type="ram",
            window="decoder0.2",
            state="present",
        ),
    )
    assert len(policy.rules) == 1


def test_the_defaults(tmp_path: Path) -> None:
    (region,) = load(tmp_path, region_lines("{name: r, memdevs: [1, 2, 3]}")).regions
    assert region.interleave_ways == 3  # the number of memdevs
    assert (region.granularity, region.size, region.window) == (None, None, None)
    assert (region.type, region.state) == ("ram", "present")


def test_no_regions_section_or_an_empty_one(tmp_path: Path) -> None:
    assert load(tmp_path, "rules: []\n").regions == ()
    assert load(tmp_path, "regions:\n").regions == ()
    assert load(tmp_path, "regions: []\n").regions == ()


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("4096", MemdevRef(serial=0x1000)),
        ("0x1000", MemdevRef(serial=0x1000)),
        ("'0x1000'", MemdevRef(serial=0x1000)),
        ("'4096'", MemdevRef(serial=0x1000)),
        ("{serial: 0x1000}", MemdevRef(serial=0x1000)),
        ("{host_bridge: 52}", MemdevRef(host_bridge=52)),
        ("{host_bridge: 0x34}", MemdevRef(host_bridge=52)),
        ("{host_bridge: PCI0000:34}", MemdevRef(host_bridge="pci0000:34")),
    ],
)
def test_memdev_forms(tmp_path: Path, written: str, expected: MemdevRef) -> None:
    (region,) = load(tmp_path, region_lines(f"{{name: r, memdevs: [{written}]}}")).regions
    assert region.memdevs == (expected,)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("decoder0.2", "decoder0.2"),
        ("'decoder0.*'", "decoder0.*"),
        ("0x310000000", Interval(lo=0x3_1000_0000, hi=0x3_1000_0000)),
        ("'>= 0x200000000'", Interval(lo=0x2_0000_0000)),
    ],
)
def test_window_is_read_like_the_window_selector(
    tmp_path: Path, written: str, expected: str | Interval
) -> None:
    text = region_lines(f"{{name: r, memdevs: [1], window: {written}}}")
    assert load(tmp_path, text).regions[0].window == expected


@pytest.mark.parametrize(
    ("key", "written", "expected"),
    [
        ("size", "all", None),
        ("size", "512M", 512 * MiB),
        ("size", "0x40000000", GiB),
        ("size", "268435456", 256 * MiB),
        ("granularity", "256", 256),
        ("granularity", "16K", 16 << 10),
        ("granularity", "4KiB", 4 << 10),
        ("state", "absent", "absent"),
    ],
)
def test_values_with_units_and_choices(
    tmp_path: Path, key: str, written: str, expected: object
) -> None:
    text = region_lines(f"{{name: r, memdevs: [1], {key}: {written}}}")
    assert getattr(load(tmp_path, text).regions[0], key) == expected


def test_size_steps_follow_the_ways(tmp_path: Path) -> None:
    text = region_lines("{name: r, memdevs: [1, 2, 3], size: 768M}")
    assert load(tmp_path, text).regions[0].size == 768 * MiB


def test_dropins_add_regions_in_load_order(tmp_path: Path) -> None:
    main_file = write(tmp_path, region_lines("{name: main, memdevs: [1]}"))
    write(tmp_path, region_lines("{name: b, memdevs: [3]}"), "policy.d/20-b.yaml")
    write(tmp_path, region_lines("{name: a, memdevs: [2]}"), "policy.d/10-a.yaml")
    policy = load_policy(main_file)
    assert [r.name for r in policy.regions] == ["main", "a", "b"]
    assert policy.regions[1].location == f"{tmp_path / 'policy.d' / '10-a.yaml'}:2"


def test_a_region_name_used_twice_across_files_names_both_places(tmp_path: Path) -> None:
    main_file = write(tmp_path, region_lines("{name: x, memdevs: [1]}"))
    dropin = write(
        tmp_path,
        region_lines("{name: y, memdevs: [2]}", "{name: x, memdevs: [3]}"),
        "policy.d/1.yaml",
    )
    (diagnostic,) = check_policy(main_file)
    assert str(diagnostic).split("\n")[0] == (
        f"{dropin}:3:12: region name 'x' is already used at {main_file}:2"
    )


def test_region_and_rule_names_are_apart(tmp_path: Path) -> None:
    text = region_lines("{name: cxl, memdevs: [1]}") + "rules:\n  - {name: cxl, mode: ignore}\n"
    policy = load(tmp_path, text)
    assert (policy.regions[0].name, policy.rules[0].name) == ("cxl", "cxl")


def test_the_same_memdev_in_two_regions_with_sizes(tmp_path: Path) -> None:
    text = region_lines(
        "{name: a, memdevs: [0x1000], size: 1G}",
        "{name: b, memdevs: [0x1000], size: 512M}",
        "{name: c, memdevs: [0x1000], state: absent}",  # no size, but it wants no capacity
    )
    assert [r.name for r in load(tmp_path, text).regions] == ["a", "b", "c"]


def test_a_memdev_by_uid_and_by_name_is_not_compared(tmp_path: Path) -> None:
    # Which name a uid has is known on the machine only.
    text = region_lines(
        "{name: a, memdevs: [{host_bridge: 52}]}", "{name: b, memdevs: [{host_bridge: pci0000:34}]}"
    )
    assert len(load(tmp_path, text).regions) == 2


# --- what does not -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            ["{name: a, memdevs: [0x1000, 4096]}"],
            "P:2:33: serial 0x1000 is listed twice in this region (first as memdev 1)",
        ),
        (
            ["{name: a, memdevs: [{host_bridge: 52}, 7, {host_bridge: '0x34'}]}"],
            "P:2:47: host_bridge 52 is listed twice in this region (first as memdev 1)",
        ),
        (
            ["{name: a, memdevs: [1, 2, 3], interleave_ways: 2}"],
            "P:2:52: 'interleave_ways' is 2 but the region has 3 memdevs; they must be equal "
            "(leave it out to take the number of memdevs)",
        ),
        (
            ["{name: a, memdevs: [1], interleave_ways: 2}"],
            "P:2:46: 'interleave_ways' is 2 but the region has 1 memdev; they must be equal "
            "(leave it out to take the number of memdevs)",
        ),
        (
            ["{name: a, memdevs: [1, 2, 3, 4, 5]}"],
            "P:2:24: 5 memdevs cannot be interleaved: CXL allows 1, 2, 3, 4, 6, 8, 12 or 16 ways",
        ),
        (
            ["{name: a, memdevs: [1, 2], size: 768M}"],
            "P:2:38: 'size' must be a multiple of 512M (256M for each of its 2 memdevs); 768M is "
            "not",
        ),
        (
            ["{name: a, memdevs: [1], size: 100M}"],
            "P:2:35: 'size' must be a multiple of 256M (256M for its memdev); 100M is not",
        ),
        (
            ["{name: a, memdevs: [1, 2, 3], size: 1G}"],
            "P:2:41: 'size' must be a multiple of 768M (256M for each of its 3 memdevs); 1G is not",
        ),
        (
            ["{name: a, memdevs: [0x1000]}", "{name: b, memdevs: [2, 0x1000], size: 1G}"],
            "P:3:28: serial 0x1000 is also a memdev of region 'a' at P:2; regions share a memdev "
            "only when both give a 'size' (without one, a region takes all the free capacity)",
        ),
        (
            ["{name: a, memdevs: [0x1000], size: 1G}", "{name: b, memdevs: [0x1000]}"],
            "P:3:25: serial 0x1000 is also a memdev of region 'a' at P:2; regions share a memdev "
            "only when both give a 'size' (without one, a region takes all the free capacity)",
        ),
        (
            ["{name: a, memdevs: [{host_bridge: 12}]}", "{name: b, memdevs: [{host_bridge: 12}]}"],
            "P:3:25: host_bridge 12 is also a memdev of region 'a' at P:2; regions share a memdev "
            "only when both give a 'size' (without one, a region takes all the free capacity)",
        ),
        (
            ["{name: a, memdevs: [1]}", "{name: a, memdevs: [2]}"],
            "P:3:12: region name 'a' is already used at P:2",
        ),
        (
            ["{name: a, memdevs: [1, 2, 3, 4, 5], interleave_ways: 5}"],
            "P:2:58: 'interleave_ways' 5 is not one the CXL spec allows: 1, 2, 3, 4, 6, 8, 12 or "
            "16",
        ),
        (
            ["{name: a, memdevs: [1], interleave_ways: 0}"],
            "P:2:46: 'interleave_ways' 0 is not one the CXL spec allows: 1, 2, 3, 4, 6, 8, 12 or "
            "16",
        ),
        (
            ["{name: a, memdevs: [1], interleave_ways: two}"],
            "P:2:46: 'interleave_ways' must be a whole number such as 1, 2 or 4, got 'two'",
        ),
        (
            ["{name: a, memdevs: [1], granularity: 3K}"],
            "P:2:42: 'granularity' must be a power of two from 256 to 16K bytes (256, 512, 1K, 2K, "
            "4K, 8K, 16K); got '3K'",
        ),
        (
            ["{name: a, memdevs: [1], granularity: 32K}"],
            "P:2:42: 'granularity' must be a power of two from 256 to 16K bytes (256, 512, 1K, 2K, "
            "4K, 8K, 16K); got '32K'",
        ),
        (
            ["{name: a, memdevs: [1], granularity: 128}"],
            "P:2:42: 'granularity' must be a power of two from 256 to 16K bytes (256, 512, 1K, 2K, "
            "4K, 8K, 16K); got 128",
        ),
        (
            ["{name: a, memdevs: [1], granularity: 8KB}"],
            "P:2:42: '8KB': 'KB' is ambiguous; write 8K or 8KiB (daxd units are powers of 1024)",
        ),
        (
            ["{name: a, memdevs: [1], size: 0}"],
            "P:2:35: 'size' must be more than 0; for all free capacity leave it out or write all",
        ),
        (
            ["{name: a, memdevs: [1], size: -1}"],
            "P:2:35: 'size' must not be negative, got -1",
        ),
        (
            ["{name: a, memdevs: [1], size: -1G}"],
            "P:2:35: 'size' must be a number of bytes such as 1G, 64GiB or all; got '-1G'",
        ),
        (
            ["{name: a, memdevs: [1], size: lots}"],
            "P:2:35: 'size' must be a number of bytes such as 1G, 64GiB or all; got 'lots'",
        ),
        (
            ["{name: a, memdevs: [1], type: pmem}"],
            "P:2:35: only ram regions are supported: daxd does not create pmem regions",
        ),
        (
            ["{name: a, memdevs: [1], type: RAM}"],
            "P:2:35: 'type' must be ram, the only type daxd creates; got 'RAM'; did you mean "
            "'ram'?",
        ),
        (
            ["{name: a, memdevs: [1], state: absnt}"],
            "P:2:36: 'state' must be present or absent; got 'absnt'; did you mean 'absent'?",
        ),
        (
            ["{name: a, memdevs: [1], window: region0}"],
            "P:2:37: expected a window such as decoder0.1, 'decoder0.*' or 0x110000000, got "
            "'region0'",
        ),
        (
            ["{name: a, memdevs: [1], size: ~}"],
            "P:2:35: 'size' has no value; leave the key out for the default",
        ),
        (
            ["{name: a, memdevs: [mem0]}"],
            "P:2:25: memdev names such as 'mem0' change between boots; give its serial number "
            "('cxl list -M' shows it)",
        ),
        (
            ["{name: a, memdevs: [{serial: mem1}]}"],
            "P:2:34: memdev names such as 'mem1' change between boots; give its serial number "
            "('cxl list -M' shows it)",
        ),
        (
            ["{name: a, memdevs: [pci0000:34]}"],
            "P:2:25: expected a serial number such as 0x1000 or 4096, got 'pci0000:34'; a host "
            "bridge is written {host_bridge: pci0000:34}",
        ),
        (
            ["{name: a, memdevs: [{serial: 1, host_bridge: 2}]}"],
            "P:2:25: a memdev is given by 'serial' or by 'host_bridge', not both; the serial "
            "number alone names it",
        ),
        (
            ["{name: a, memdevs: [{}]}"],
            "P:2:25: empty memdev; write it as 0x1000, {serial: 0x1000} or {host_bridge: 52}",
        ),
        (
            ["{name: a, memdevs: [true]}"],
            "P:2:25: a memdev is written 0x1000, {serial: 0x1000} or {host_bridge: 52}; got true",
        ),
        (
            ["{name: a, memdevs: [{host_bridge: pci0000}]}"],
            "P:2:39: expected a host bridge such as 12 (its uid, as in a root decoder's "
            "target_list) or pci0000:0c, got 'pci0000'",
        ),
        (
            ["{name: a, memdevs: []}"],
            "P:2:24: 'memdevs' is empty; a region needs at least one: memdevs: [0x1000] or "
            "memdevs: [{serial: 0x1000}, {host_bridge: 52}]",
        ),
        (
            ["{name: a, memdevs: {serial: 1}}"],
            "P:2:24: 'memdevs' is a list of memdevs, e.g. memdevs: [0x1000] or memdevs: "
            "[{serial: 0x1000}, {host_bridge: 52}]; got a mapping",
        ),
        (
            ["{name: a}"],
            "P:2:5: this region has no 'memdevs'; list its memdevs by serial number: memdevs: "
            "[0x1000]",
        ),
        (
            ["{memdevs: [1]}"],
            "P:2:5: this region has no 'name'; give it one, unique among the regions",
        ),
        (["{name: [a], memdevs: [1]}"], "P:2:12: 'name' must be a text, got a list"),
        (
            ["", "{name: a, memdevs: [1]}"],
            "P:2:4: empty region; a region needs at least 'name:' and 'memdevs:'",
        ),
        (
            ["cxl"],
            "P:2:5: a region is a mapping with keys such as 'name:' and 'memdevs:', got 'cxl'",
        ),
    ],
)
def test_located_problems(tmp_path: Path, items: list[str], expected: str) -> None:
    lines = problems(tmp_path, region_lines(*items)).split("\n")
    assert lines[0] == expected
    assert len(lines) == 3  # one problem: the message, the line, the caret


def test_the_caret_is_under_the_repeated_memdev(tmp_path: Path) -> None:
    text = "regions:\n  - name: a\n    memdevs:\n      - 0x1000\n      - {serial: 4096}\n"
    assert problems(tmp_path, text).split("\n")[1:] == ["      - {serial: 4096}", "        ^"]


def test_a_region_list_that_is_a_mapping(tmp_path: Path) -> None:
    assert first_problem(tmp_path, "regions: {name: a}\n") == (
        "P:1:10: 'regions' is a list of regions, each starting with '- '; got a mapping"
    )


def test_every_value_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = region_lines(
        "{name: a, memdevs: [mem0], type: pmem}", "{name: b, memdevs: [1], granularity: 3K}"
    )
    messages = [line for line in problems(tmp_path, text).split("\n") if line.startswith("P:")]
    assert [m.split(": ", 1)[0] for m in messages] == ["P:2:25", "P:2:38", "P:3:42"]


# --- unknown keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "region:\n  - {name: a, memdevs: [1]}\n",
            "P:1:1: unknown key 'region' at the top level; did you mean 'regions'?",
        ),
        ("Regions: []\n", "P:1:1: unknown key 'Regions' at the top level; did you mean 'regions'?"),
        (
            "memdevs: [1]\n",
            "P:1:1: unknown key 'memdevs' at the top level; regions go in a list under 'regions:'",
        ),
        (
            "colour: red\n",
            "P:1:1: unknown key 'colour' at the top level "
            "(known keys: version, regions, layouts, rules)",
        ),
        (
            region_lines("{name: a, memdevs: [1], ways: 1}"),
            "P:2:29: unknown key 'ways' in a region; did you mean 'interleave_ways'?",
        ),
        (
            region_lines("{name: a, memdevs: [1], interleave_granularity: 4K}"),
            "P:2:29: unknown key 'interleave_granularity' in a region; did you mean 'granularity'?",
        ),
        (
            region_lines("{name: a, memdevs: [1], decoder: decoder0.0}"),
            "P:2:29: unknown key 'decoder' in a region; the root decoder a region is made in is "
            "its 'window'",
        ),
        (
            region_lines("{name: a, memdevs: [1], mem: mem0}"),
            "P:2:29: unknown key 'mem' in a region; memN names change between boots: list the "
            "memdev's serial number in 'memdevs'",
        ),
        (
            region_lines("{name: a, memdevs: [1], serial: 1}"),
            "P:2:29: unknown key 'serial' in a region; serial numbers go in 'memdevs': memdevs: "
            "[0x1000]",
        ),
        (
            region_lines("{name: a, memdevs: [1], Interleave-Ways: 1}"),
            "P:2:29: unknown key 'Interleave-Ways' in a region; did you mean 'interleave_ways'?",
        ),
        (
            region_lines("{name: a, memdevs: [1], colour: red}"),
            "P:2:29: unknown key 'colour' in a region (known keys: name, memdevs, "
            "interleave_ways, granularity, size, type, window, state)",
        ),
        (
            region_lines("{name: a, memdevs: [{serail: 1}]}"),
            "P:2:26: unknown key 'serail' in a memdev; did you mean 'serial'?",
        ),
        (
            region_lines("{name: a, memdevs: [{memdev: mem0}]}"),
            "P:2:26: unknown key 'memdev' in a memdev; memN names change between boots: give the "
            "memdev's serial, {serial: 0x1000}",
        ),
        (
            region_lines("{name: a, memdevs: [{uid: 52}]}"),
            "P:2:26: unknown key 'uid' in a memdev; did you mean 'host_bridge'?",
        ),
        (
            region_lines("{name: a, memdevs: [{colour: 1}]}"),
            "P:2:26: unknown key 'colour' in a memdev (known keys: serial, host_bridge)",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert first_problem(tmp_path, text) == expected


def test_rule_keys_at_the_top_level_still_point_to_rules(tmp_path: Path) -> None:
    # 'window' and 'interleave_ways' are selectors as well as region keys.
    assert first_problem(tmp_path, "window: decoder0.0\n") == (
        "P:1:1: unknown key 'window' at the top level; rules go in a list under 'rules:'"
    )


# --- built in code, shown by daxd check, documented ---------------------------------------------
def test_a_memdev_built_in_code_is_named_exactly_one_way() -> None:
    assert str(MemdevRef(serial=0x1000)) == "serial 0x1000"
    assert str(MemdevRef(host_bridge="pci0000:34")) == "host_bridge pci0000:34"
    with pytest.raises(ValidationError):
        MemdevRef()
    with pytest.raises(ValidationError):
        MemdevRef(serial=1, host_bridge=2)


def test_a_loaded_region_is_frozen(tmp_path: Path) -> None:
    region = load(tmp_path, FULL).regions[0]
    with pytest.raises(ValidationError):
        region.size = GiB


def test_check_counts_the_regions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid, 1 rule(s), 2 region(s)\n"


def test_check_reports_region_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, region_lines("{name: a, memdevs: [mem0]}"))
    assert main(["check", str(path)]) == 1
    assert f"{path}:2:25: memdev names such as 'mem0'" in capsys.readouterr().err


def docs_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## CXL regions") :]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    regions = load(tmp_path, docs_example()).regions
    assert [(r.name, r.interleave_ways, r.state) for r in regions] == [
        ("expander-a", 1, "present"),
        ("pair", 2, "present"),
        ("old-split", 1, "absent"),
    ]


def test_the_docs_list_every_region_key() -> None:
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("## CXL regions") :].split("| key |", 1)[1].split("\n\n", 1)[0]
    keys = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert keys == set(CxlRegionSpec.model_fields) - {"location"}


def test_the_policy_package_imports_only_the_kernel_and_itself() -> None:
    # Layering: kernel -> policy -> plan -> apply -> service -> cli.
    imported = set()
    for file in POLICY_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    daxd = {name for name in imported if name.split(".")[0] == "daxd"}
    assert daxd, "no daxd imports found: the scan is broken"
    assert {name.split(".")[1] for name in daxd} <= {"kernel", "policy"}

"""`layouts:`: what a layout loads into, the located errors of a file, matching a dax region, and
fitting a layout's sizes to a region (fit)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from daxd.kernel.model import CxlIdentity, CxlMemdev, DaxRegion, Provider
from daxd.policy.layouts import (
    ALIGNS,
    Fitted,
    Layout,
    LayoutDevice,
    LayoutSize,
    SizeKind,
    fit,
)
from daxd.policy.load import load_policy
from daxd.policy.model import Mode, Policy, Rule, Zone
from daxd.policy.selectors import Selector
from tests.policy.helpers import load, problems, write

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"

HBM = """\
version: 1
layouts:
  - name: hbm-split
    match: {provider: hmem, target_node: 2}
    devices:
      - {size: 1G, align: 1G, mode: devdax}
      - {size: rest, mode: system-ram, zone: movable}
rules:
  - name: hbm-split
    match: {provider: pmem}
    mode: devdax
"""


def layout_lines(*devices: str, head: str = "  - name: x\n") -> str:
    """A policy with one layout whose devices are ``devices``, one flow mapping a line from
    line 4."""
    return "layouts:\n" + head + "    devices:\n" + "".join(f"      - {d}\n" for d in devices)


def first_problem(tmp_path: Path, text: str) -> str:
    return problems(tmp_path, text).split("\n")[0]


def make(*devices: Mapping[str, object], name: str = "x") -> Layout:
    entries = tuple(LayoutDevice.model_validate(d) for d in devices)
    return Layout(
        name=name,
        location="P:2",
        selector=Selector(),
        devices=entries,
        device_locations=tuple(f"P:{4 + i}" for i in range(len(entries))),
    )


# --- what loads --------------------------------------------------------------------------------
def test_a_layout_loads_with_its_places(tmp_path: Path) -> None:
    policy = load(tmp_path, HBM)
    path = tmp_path / "policy.yaml"
    (layout,) = policy.layouts
    assert (layout.name, layout.location) == ("hbm-split", f"{path}:3")
    assert layout.device_locations == (f"{path}:6", f"{path}:7")
    assert str(layout.selector) == "provider: hmem, target_node: 2"
    first, rest = layout.devices
    assert first.size == LayoutSize(SizeKind.BYTES, bytes=GiB, text="1G")
    assert (first.align, first.mode, first.name) == (GiB, Mode.DEVDAX, None)
    assert rest.size == LayoutSize(SizeKind.REST, text="rest")
    assert (rest.align, rest.mode, rest.zone, rest.online) == (
        None,
        Mode.SYSTEM_RAM,
        "movable",
        True,
    )
    assert [r.name for r in policy.rules] == ["hbm-split"]  # rules' names are apart


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("1G", LayoutSize(SizeKind.BYTES, bytes=GiB, text="1G")),
        ("1GiB", LayoutSize(SizeKind.BYTES, bytes=GiB, text="1GiB")),
        ("512M", LayoutSize(SizeKind.BYTES, bytes=512 * MiB, text="512M")),
        ("0x40000000", LayoutSize(SizeKind.BYTES, bytes=GiB, text="0x40000000")),
        ("1073741824", LayoutSize(SizeKind.BYTES, bytes=GiB, text="1073741824")),
        ("25%", LayoutSize(SizeKind.SHARE, percent=Fraction(25), text="25%")),
        ("12.5%", LayoutSize(SizeKind.SHARE, percent=Fraction(25, 2), text="12.5%")),
        ("100%", LayoutSize(SizeKind.SHARE, percent=Fraction(100), text="100%")),
        ("rest", LayoutSize(SizeKind.REST, text="rest")),
    ],
)
def test_sizes(tmp_path: Path, written: str, expected: LayoutSize) -> None:
    (layout,) = load(tmp_path, layout_lines(f"{{size: {written}, mode: devdax}}")).layouts
    assert layout.devices[0].size == expected


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("4K", 4 * KiB),
        ("4k", 4 * KiB),
        ("2M", 2 * MiB),
        ("2MiB", 2 * MiB),
        ("2097152", 2 * MiB),
        ("0x200000", 2 * MiB),
        ("1G", GiB),
        ("1GiB", GiB),
    ],
)
def test_aligns(tmp_path: Path, written: str, expected: int) -> None:
    text = layout_lines(f"{{size: 1G, align: {written}, mode: devdax}}")
    assert load(tmp_path, text).layouts[0].devices[0].align == expected
    assert expected in ALIGNS.values()


def test_every_action_key(tmp_path: Path) -> None:
    text = layout_lines(
        "{name: a, size: 50%, mode: system-ram, zone: normal, memmap_on_memory: true, "
        "online: false}",
        "{name: b, size: rest, mode: devdax}",
    )
    a, b = load(tmp_path, text).layouts[0].devices
    assert (a.name, a.mode, a.zone, a.memmap_on_memory, a.online) == (
        "a",
        Mode.SYSTEM_RAM,
        Zone.NORMAL,
        True,
        False,
    )
    assert (b.name, b.zone, b.memmap_on_memory) == ("b", Zone.MOVABLE, None)


def test_unnamed_layouts_are_counted_over_all_files(tmp_path: Path) -> None:
    write(tmp_path, layout_lines("{size: rest, mode: devdax}", head="  - match: {}\n"))
    dropin = "layouts:\n  - devices:\n      - {size: 1G, mode: devdax}\n"
    write(tmp_path / "policy.d", dropin, "10-more.yaml")
    policy = load_policy(tmp_path / "policy.yaml")
    assert [layout.name for layout in policy.layouts] == ["layout 1", "layout 2"]
    assert policy.layouts[1].location == f"{tmp_path / 'policy.d' / '10-more.yaml'}:2"
    assert str(policy.layouts[0].selector) == "every device"  # `match: {}`: every region


def test_no_layouts(tmp_path: Path) -> None:
    assert load(tmp_path, "layouts:\n").layouts == ()
    assert load(tmp_path, "layouts: []\n").layouts == ()
    assert load(tmp_path, "rules: []\n").layouts == ()


# --- located errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the layout
        (
            "layouts:\n  - name: x\n",
            "P:2:5: this layout has no 'devices'; list them in address order: devices: "
            "[{size: 1G, mode: devdax}, {size: rest, mode: system-ram}]",
        ),
        (
            "layouts:\n  - name: x\n    devices: []\n",
            "P:3:14: 'devices' is empty; a layout has at least one: devices: "
            "[{size: 1G, mode: devdax}, {size: rest, mode: system-ram}]",
        ),
        (
            "layouts:\n  - name: x\n    devices:\n",
            "P:3:5: 'devices' has no value; list the region's devices: devices: "
            "[{size: 1G, mode: devdax}, {size: rest, mode: system-ram}]",
        ),
        (
            "layouts:\n  - name: x\n    devices: {size: 1G, mode: devdax}\n",
            "P:3:14: 'devices' is a list of devices, each starting with '- '; got a mapping",
        ),
        (
            "layouts: {name: x}\n",
            "P:1:10: 'layouts' is a list of layouts, each starting with '- '; got a mapping",
        ),
        ("layouts:\n  -\n", "P:2:4: empty layout; a layout needs at least 'devices:'"),
        (
            "layouts:\n  - 1G\n",
            "P:2:5: a layout is a mapping with keys such as 'devices:', got '1G'",
        ),
        (
            "layouts:\n  - devices:\n      -\n",
            "P:3:8: empty device; a device needs at least 'size:' and 'mode:'",
        ),
        (
            layout_lines("1G"),
            "P:4:9: a device of a layout is a mapping with keys such as 'size:' and 'mode:', "
            "got '1G'",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - name: layout 2\n"),
            "P:2:11: 'layout 2' is how unnamed layouts are called; pick another name",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - name: ''\n"),
            "P:2:11: 'name' must be one line of printable text, got ''",
        ),
        # sizes
        (
            layout_lines("{mode: devdax}"),
            "P:4:9: this device has no 'size'; give a size (1G), a share of the region (25%) "
            "or rest",
        ),
        (
            layout_lines("{size: lots, mode: devdax}"),
            "P:4:16: 'size' must be a size (1G, 512M), a share of the region (25%) or rest; "
            "got 'lots'",
        ),
        (
            layout_lines("{size: Rest, mode: devdax}"),
            "P:4:16: 'size' must be a size (1G, 512M), a share of the region (25%) or rest; "
            "got 'Rest'; 'rest' is written in lower case",
        ),
        (
            layout_lines("{size: 150%, mode: devdax}"),
            "P:4:16: 'size' '150%': a share is more than 0% and at most 100% of the region",
        ),
        (
            layout_lines("{size: 0%, mode: devdax}"),
            "P:4:16: 'size' '0%': a share is more than 0% and at most 100% of the region",
        ),
        (
            layout_lines("{size: 1/4%, mode: devdax}"),
            "P:4:16: 'size' '1/4%' is not a share such as 25% or 12.5%",
        ),
        (
            layout_lines("{size: 0, mode: devdax}"),
            "P:4:16: 'size' must be more than 0 bytes, got 0",
        ),
        (
            layout_lines("{size: 16GB, mode: devdax}"),
            "P:4:16: '16GB': 'GB' is ambiguous; write 16G or 16GiB (daxd units are powers of 1024)",
        ),
        (
            layout_lines("{size: rest, mode: devdax}", "{size: rest, mode: system-ram}"),
            "P:5:16: only one device can take the rest; device 1 already does",
        ),
        (
            layout_lines("{size: 60%, mode: devdax}", "{size: 50%, mode: devdax}"),
            "P:5:16: the shares add up to 110%, more than the whole region",
        ),
        (
            layout_lines("{size: rest, mode: devdax}", "{size: 100%, mode: system-ram}"),
            "P:4:16: the shares take the whole region (100%): nothing is left for 'rest'",
        ),
        (
            layout_lines("{size: 3M, align: 2M, mode: devdax}"),
            "P:4:16: 'size' 3M is not a multiple of its align 2M",
        ),
        (
            layout_lines("{size: 1000, mode: devdax}"),
            "P:4:16: 'size' 1000 is not a multiple of 4K, the smallest align",
        ),
        # align
        (
            layout_lines("{size: 1G, align: 3M, mode: devdax}"),
            "P:4:27: 'align' must be 4K, 2M or 1G (the page sizes /dev/daxX.Y maps with); got '3M'",
        ),
        (
            layout_lines("{size: 1G, align: , mode: devdax}"),
            "P:4:20: 'align' has no value; leave the key out for the region's align",
        ),
        # actions, as in rules
        (
            layout_lines("{size: 1G}"),
            "P:4:9: this device has no 'mode'; add mode: devdax or system-ram",
        ),
        (
            layout_lines("{size: 1G, mode: }"),
            "P:4:20: 'mode' has no value; give devdax or system-ram",
        ),
        (
            layout_lines("{size: 1G, mode: kmem}"),
            "P:4:26: 'mode' must be one of devdax, system-ram, ignore; got 'kmem'; 'kmem' is the "
            "driver, the mode is 'system-ram'",
        ),
        (
            layout_lines("{size: rest, mode: ignore}"),
            "P:4:28: a layout's device is devdax or system-ram, not ignore; to keep part of the "
            "region unused, leave it out of the layout (the sizes need not fill the region)",
        ),
        (
            layout_lines("{size: 1G, mode: devdax, zone: normal}"),
            "P:4:34: 'zone' only applies to mode system-ram; this device's mode is devdax",
        ),
        (
            layout_lines("{size: 1G, mode: system-ram, online: yes}"),
            "P:4:46: 'online' must be true or false, got 'yes' (YAML 1.1's yes/no/on/off are not "
            "booleans in a policy)",
        ),
        (
            layout_lines("{size: 1G, mode: system-ram, allow_pmem_data_loss: true}"),
            "P:4:38: 'allow_pmem_data_loss' does not apply to layouts: they carve hmem and CXL "
            "regions, and pmem regions cannot be carved (they are static)",
        ),
        (
            layout_lines(
                "{name: a, size: 1G, mode: devdax}", "{name: a, size: rest, mode: devdax}"
            ),
            "P:5:16: device name 'a' is already used by device 1 of this layout",
        ),
    ],
)
def test_located_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert first_problem(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "layout:\n  - {devices: []}\n",
            "P:1:1: unknown key 'layout' at the top level; did you mean 'layouts'?",
        ),
        (
            "devices: []\n",
            "P:1:1: unknown key 'devices' at the top level; layouts go in a list under 'layouts:'",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - mach: {}\n"),
            "P:2:5: unknown key 'mach' in a layout; did you mean 'match'?",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - mode: devdax\n"),
            "P:2:5: unknown key 'mode' in a layout; 'mode' is given for each device, under "
            "'devices:'",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - provider: hmem\n"),
            "P:2:5: unknown key 'provider' in a layout; selectors go under 'match:', e.g. match: "
            "{provider: ...}",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - size: 1G\n"),
            "P:2:5: unknown key 'size' in a layout; each device has its 'size', under 'devices:' "
            "(to match regions by their size: match: {size: ...})",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - colour: red\n"),
            "P:2:5: unknown key 'colour' in a layout (known keys: name, match, devices)",
        ),
        (
            layout_lines("{size: 1G, mode: devdax, zoen: movable}"),
            "P:4:34: unknown key 'zoen' in a layout's device; did you mean 'zone'?",
        ),
        (
            layout_lines("{size: 1G, mode: devdax, provider: hmem}"),
            "P:4:34: unknown key 'provider' in a layout's device; a layout's devices have no "
            "selectors: they are placed in the order written, and the layout's 'match:' picks "
            "the region",
        ),
        (
            layout_lines("{size: 1G, share: 25%, mode: devdax}"),
            "P:4:20: unknown key 'share' in a layout's device; a share of the region is a size: "
            "size: 25%",
        ),
        (
            layout_lines("{size: 1G, mode: devdax, colour: red}"),
            "P:4:34: unknown key 'colour' in a layout's device (known keys: name, size, align, "
            "mode, zone, memmap_on_memory, online, allow_pmem_data_loss)",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - match: {provder: hmem}\n"),
            "P:2:13: unknown key 'provder' in 'match'; did you mean 'provider'?",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - match: {align: 1G}\n"),
            "P:2:13: unknown key 'align' in 'match'; 'align' is given for each device, under "
            "'devices:', not under 'match:'",
        ),
        (
            layout_lines("{size: 1G, mode: devdax}", head="  - match: {provider: nvme}\n"),
            "P:2:23: 'provider' must be one of pmem, hmem, cxl, unknown; got 'nvme'",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert first_problem(tmp_path, text) == expected


def test_layout_names_are_unique_across_files(tmp_path: Path) -> None:
    dropin = layout_lines("{size: rest, mode: devdax}", head="  - name: hbm-split\n")
    write(tmp_path / "policy.d", dropin, "10-x.yaml")
    write(tmp_path, HBM)
    report = problems(tmp_path, HBM)  # rewrites the main file the same way
    assert report.split("\n")[0] == (
        f"{tmp_path / 'policy.d' / '10-x.yaml'}:2:11: layout name 'hbm-split' is already used "
        "at P:3"
    )


def test_every_problem_of_a_layout_at_once(tmp_path: Path) -> None:
    text = layout_lines(
        "{size: rest, mode: devdax, zone: normal}",
        "{size: lots, mode: devdax}",
        "{size: 1G, align: 7M, mode: devdax}",
    )
    shown = [line.split(": ", 1)[0] for line in problems(tmp_path, text).split("\n")]
    assert [s for s in shown if s.startswith("P:")] == ["P:4:36", "P:5:16", "P:6:27"]


def test_the_caret_is_under_the_second_rest(tmp_path: Path) -> None:
    text = layout_lines("{size: rest, mode: devdax}", "{size: rest, mode: system-ram}")
    assert problems(tmp_path, text).split("\n")[1:] == [
        "      - {size: rest, mode: system-ram}",
        "               ^",
    ]


# --- built in code -----------------------------------------------------------------------------
def test_a_device_built_in_code_is_checked_as_written() -> None:
    device = LayoutDevice.model_validate({"size": "25%", "mode": "system-ram", "zone": "normal"})
    assert device.size.percent == 25
    with pytest.raises(ValidationError, match="this device's mode is devdax"):
        LayoutDevice.model_validate({"size": "1G", "mode": "devdax", "zone": "normal"})
    assert LayoutDevice(size=LayoutSize(SizeKind.REST), mode=Mode.DEVDAX).align is None


def test_a_rule_built_in_code_takes_every_action_key() -> None:
    # The checks of written actions are not the loaded Rule's: code passes every field.
    entry = LayoutDevice.model_validate({"size": "1G", "mode": "devdax"})
    actions = {k: getattr(entry, k) for k in ("mode", "zone", "memmap_on_memory", "online")}
    assert Rule(name="r", location="P:1", **actions).zone == Zone.MOVABLE


# --- matching a region -------------------------------------------------------------------------
def region(
    region_id: int = 0,
    *,
    provider: Provider = Provider.HMEM,
    size: int = 4 * GiB,
    start: int | None = 4 * GiB,
    target_node: int | None = 2,
    cxl: CxlIdentity | None = None,
) -> DaxRegion:
    return DaxRegion(
        id=region_id,
        parent=f"devices/platform/hmem.{region_id}",
        provider=provider,
        size=size,
        align=2 * MiB,
        available_size=0,
        seed=None,
        dynamic=True,
        start=start,
        devices=(f"dax{region_id}.0",),
        cxl=cxl,
        target_node=target_node,
        numa_node=0,
    )


def expander(serial: int) -> CxlIdentity:
    return CxlIdentity(
        region="region3",
        uuid=None,
        mode="ram",
        interleave_ways=1,
        interleave_granularity=256,
        window="decoder0.0",
        window_start=None,
        memdevs=(CxlMemdev(0, "mem0", serial, "pci0000:0c", 12),),
    )


def test_a_layout_matches_a_region_as_one_device(tmp_path: Path) -> None:
    (layout,) = load(tmp_path, HBM).layouts
    assert layout.matches(region())
    assert not layout.matches(region(target_node=3))
    assert not layout.matches(region(provider=Provider.CXL))


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("{serial: 0x1000}", True),
        ("{serial: 0x1001}", False),
        ("{device: dax3.0}", True),  # the region's whole stands as daxR.0
        ("{region: 3, size: '>= 8G'}", True),
        ("{size: '< 8G'}", False),
        ("{address: 0x200000000}", True),
        ("{address: '> 0x200000000'}", False),
    ],
)
def test_selectors_on_a_region(tmp_path: Path, match: str, expected: bool) -> None:
    text = layout_lines("{size: rest, mode: devdax}", head=f"  - match: {match}\n")
    (layout,) = load(tmp_path, text).layouts
    cxl = region(3, provider=Provider.CXL, size=8 * GiB, start=8 * GiB, cxl=expander(0x1000))
    assert layout.matches(cxl) is expected


def test_address_never_matches_a_region_whose_start_is_unknown(tmp_path: Path) -> None:
    text = layout_lines("{size: rest, mode: devdax}", head="  - match: {address: '>= 0'}\n")
    (layout,) = load(tmp_path, text).layouts
    assert not layout.matches(region(start=None))


def test_layout_for_is_the_first_matching(tmp_path: Path) -> None:
    text = (
        "layouts:\n"
        "  - {name: cxl, match: {provider: cxl}, devices: [{size: rest, mode: devdax}]}\n"
        "  - {name: any, devices: [{size: rest, mode: system-ram}]}\n"
        "  - {name: hmem, match: {provider: hmem}, devices: [{size: rest, mode: devdax}]}\n"
    )
    policy = load(tmp_path, text)
    assert [layout.name for layout in policy.layouts] == ["cxl", "any", "hmem"]
    found = policy.layout_for(region())
    assert found is not None
    assert found.name == "any"
    assert Policy(rules=()).layout_for(region()) is None


# --- fit ---------------------------------------------------------------------------------------
DEVDAX_1G = {"size": "1G", "align": "1G", "mode": "devdax"}
REST_RAM = {"size": "rest", "mode": "system-ram"}


def sizes(result: tuple[Fitted, ...] | str) -> list[int]:
    assert not isinstance(result, str), result
    return [f.size for f in result]


def test_fit_the_hbm_split() -> None:
    layout = make(DEVDAX_1G, REST_RAM)
    fitted = fit(layout, 4 * GiB, 2 * MiB, 128 * MiB)
    assert not isinstance(fitted, str)
    assert fitted == (
        Fitted(0, GiB, GiB, layout.devices[0], "P:4"),
        Fitted(1, 3 * GiB, 2 * MiB, layout.devices[1], "P:5"),
    )


def test_shares_are_of_the_whole_region_and_rounded_down() -> None:
    region_size = 4 * GiB + 64 * MiB
    devdax = make({"size": "25%", "mode": "devdax"}, {"size": "rest", "mode": "devdax"})
    # 25% of 4G+64M is 1G+16M, a multiple of 2M; the rest is the remaining 3G+48M
    assert sizes(fit(devdax, region_size, 2 * MiB, 128 * MiB)) == [
        GiB + 16 * MiB,
        3 * GiB + 48 * MiB,
    ]
    ram = make({"size": "25%", "mode": "system-ram"}, {"size": "rest", "mode": "system-ram"})
    # system-ram: down to whole 128M memory blocks, as kmem adds nothing smaller
    assert sizes(fit(ram, region_size, 2 * MiB, 128 * MiB)) == [GiB, 3 * GiB]
    # without a known block size: the align only
    assert sizes(fit(ram, region_size, 2 * MiB, None)) == [GiB + 16 * MiB, 3 * GiB + 48 * MiB]


def test_a_share_of_an_odd_size_rounds_down_to_the_align() -> None:
    layout = make({"size": "12.5%", "mode": "devdax"}, {"size": "33%", "mode": "devdax"})
    region_size = 10 * GiB  # 12.5% is 1.25G; 33% is 3379.2M, down to 3378M
    assert sizes(fit(layout, region_size, 2 * MiB, None)) == [1280 * MiB, 3378 * MiB]


def test_the_larger_of_align_and_block_wins() -> None:
    layout = make({"size": "rest", "align": "1G", "mode": "system-ram"})
    assert sizes(fit(layout, 3 * GiB + 512 * MiB, 2 * MiB, 128 * MiB)) == [3 * GiB]


def test_sizes_need_not_fill_the_region() -> None:
    layout = make(DEVDAX_1G, {"size": "512M", "mode": "system-ram"})
    assert sizes(fit(layout, 4 * GiB, 2 * MiB, 128 * MiB)) == [GiB, 512 * MiB]


@pytest.mark.parametrize(
    ("devices", "region_size", "region_align", "expected"),
    [
        (
            (DEVDAX_1G, {"size": "3G", "mode": "devdax"}),
            2 * GiB,
            2 * MiB,
            "the layout needs 4G, more than the region's 2G",
        ),
        (
            ({"size": "1G", "align": "4K", "mode": "devdax"},),
            4 * GiB,
            2 * MiB,
            "device 1 (P:4): align 4K is smaller than the region's 2M; a device's align is at "
            "least its region's",
        ),
        (
            ({"size": "3M", "mode": "devdax", "name": "odd"},),
            4 * GiB,
            2 * MiB,
            "device 1 'odd' (P:4): 3M is not a multiple of the region's align 2M",
        ),
        (
            ({"size": "1%", "align": "1G", "mode": "devdax"},),
            4 * GiB,
            2 * MiB,
            "device 1 (P:4): 1% of 4G is 42949672, less than its align 1G",
        ),
        (
            ({"size": "1%", "mode": "system-ram"},),
            4 * GiB,
            2 * MiB,
            "device 1 (P:4): 1% of 4G is 42949672, less than one 128M memory block (kmem adds "
            "whole blocks)",
        ),
        (
            (DEVDAX_1G, DEVDAX_1G, REST_RAM),
            2 * GiB,
            2 * MiB,
            "device 3 (P:6): the other devices take 2G of 2G, which leaves nothing for 'rest'",
        ),
        (
            ({"size": "1984M", "mode": "devdax"}, REST_RAM),
            2 * GiB,
            2 * MiB,
            "device 2 (P:5): the other devices take 1984M of 2G, which leaves 64M, less than one "
            "128M memory block (kmem adds whole blocks), for 'rest'",
        ),
    ],
)
def test_what_does_not_fit(
    devices: tuple[Mapping[str, object], ...], region_size: int, region_align: int, expected: str
) -> None:
    assert fit(make(*devices), region_size, region_align, 128 * MiB) == expected


def test_a_region_align_of_1g_takes_1g_devices_only() -> None:
    layout = make({"size": "2G", "align": "2M", "mode": "devdax"})
    assert isinstance(fit(layout, 4 * GiB, GiB, None), str)
    assert sizes(fit(make({"size": "2G", "mode": "devdax"}), 4 * GiB, GiB, None)) == [2 * GiB]


# --- documented --------------------------------------------------------------------------------
def docs_examples() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Layouts") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)


def test_the_documented_examples_load_and_fit(tmp_path: Path) -> None:
    hbm, expander_a = docs_examples()
    (split,) = load(tmp_path, hbm).layouts
    assert split.matches(region())
    assert sizes(fit(split, 16 * GiB, 2 * MiB, 128 * MiB)) == [GiB, 15 * GiB]
    (quarter,) = load(tmp_path, expander_a).layouts
    cxl = region(3, provider=Provider.CXL, size=16 * GiB, cxl=expander(0x1000))
    assert quarter.matches(cxl)
    assert sizes(fit(quarter, 16 * GiB, 2 * MiB, 256 * MiB)) == [4 * GiB, 12 * GiB]
    assert [d.zone for d in quarter.devices] == [Zone.MOVABLE, Zone.NORMAL]

"""Valid policies load into the expected rules; files and drop-ins are read in their order."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from daxd.kernel.model import Provider
from daxd.policy import Mode, Rule, Selector, Zone, check_policy, load_policy
from daxd.policy.errors import PolicyError
from daxd.policy.units import Interval
from tests.policy.helpers import GiB, device, load, write

EXAMPLE = """\
version: 1
rules:
  - name: cxl-expanders
    match:
      provider: cxl
      size: ">= 16GiB"
    mode: system-ram
    zone: normal
    memmap_on_memory: true
    online: false
  - match: {provider: pmem, region: [0, region1]}
    mode: system-ram
    allow_pmem_data_loss: true
  - match: {device: "dax1.*"}
    mode: devdax
"""


def test_the_example_loads_into_rules(tmp_path: Path) -> None:
    policy = load(tmp_path, EXAMPLE)
    path = str(tmp_path / "policy.yaml")
    assert policy.sources == (path,)
    first, second, third = policy.rules
    assert (first.name, first.location, first.mode) == (
        "cxl-expanders",
        f"{path}:3",
        Mode.SYSTEM_RAM,
    )
    assert (first.zone, first.memmap_on_memory, first.online) == (Zone.NORMAL, True, False)
    assert first.allow_pmem_data_loss is False
    assert [t.value for t in first.selector.provider] == [Provider.CXL]
    assert first.selector.size[0].value == Interval(lo=16 * GiB)
    assert (second.name, second.location) == ("rule 2", f"{path}:11")
    assert [t.value for t in second.selector.region] == [0, 1]
    assert second.allow_pmem_data_loss is True
    assert (third.name, third.mode, third.location) == ("rule 3", Mode.DEVDAX, f"{path}:14")
    assert [t.value for t in third.selector.device] == ["dax1.*"]


def test_defaults_of_a_minimal_rule(tmp_path: Path) -> None:
    (rule,) = load(tmp_path, "rules:\n  - mode: system-ram\n").rules
    assert rule.zone is Zone.MOVABLE
    assert rule.memmap_on_memory is None
    assert rule.online is True
    assert rule.allow_pmem_data_loss is False
    assert rule.selector == Selector()
    assert rule.matches(device(provider=Provider.UNKNOWN, numa_node=None, resource=None))


@pytest.mark.parametrize("match", ["", "\n    match:", "\n    match: {}", "\n    match: null"])
def test_absent_or_empty_match_matches_every_device(tmp_path: Path, match: str) -> None:
    (rule,) = load(tmp_path, f"rules:\n  - mode: devdax{match}\n").rules
    assert rule.selector == Selector()
    assert rule.matches(device("dax7.3", provider=Provider.PMEM))


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "~\n", "version: 1\n", "rules:\n", "rules: []\n"],
)
def test_empty_policies_have_no_rules(tmp_path: Path, text: str) -> None:
    policy = load(tmp_path, text)
    assert policy.rules == ()
    assert policy.match(device()) is None


def test_version_is_optional_and_may_be_quoted(tmp_path: Path) -> None:
    assert load(tmp_path, "version: '1'\nrules:\n  - mode: ignore\n").rules[0].mode is Mode.IGNORE


def test_first_matching_rule_wins_and_unmatched_devices_are_left_alone(tmp_path: Path) -> None:
    policy = load(tmp_path, EXAMPLE)
    assert policy.match(device("dax1.0", provider=Provider.CXL, size=32 * GiB)) is policy.rules[0]
    assert policy.match(device("dax1.0", provider=Provider.CXL, size=8 * GiB)) is policy.rules[2]
    assert policy.match(device("dax0.0", provider=Provider.PMEM, region_id=1)) is policy.rules[1]
    assert policy.match(device("dax2.0", provider=Provider.PMEM, region_id=2)) is None


def test_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    text = b"\xef\xbb\xbfversion: 1\r\nrules:\r\n  - name: a\r\n    mode: devdax\r\n"
    (rule,) = load(tmp_path, text).rules
    assert (rule.name, rule.location) == ("a", f"{tmp_path / 'policy.yaml'}:3")


def test_strings_that_yaml_11_would_convert_stay_text_where_text_is_wanted(tmp_path: Path) -> None:
    text = "rules:\n  - {name: no, mode: devdax}\n  - {name: 010, mode: devdax}\n"
    assert [r.name for r in load(tmp_path, text).rules] == ["no", "010"]


def test_explicit_str_tag_is_allowed(tmp_path: Path) -> None:
    text = "rules:\n  - match: {region: !!str 3}\n    mode: devdax\n"
    assert load(tmp_path, text).rules[0].selector.region[0].value == 3


def test_dropins_follow_the_main_file_in_lexical_order(tmp_path: Path) -> None:
    main = write(tmp_path, "rules:\n  - {name: main, mode: ignore}\n  - mode: ignore\n")
    write(tmp_path, "rules:\n  - mode: devdax\n", "policy.d/20-b.yaml")
    write(tmp_path, "rules:\n  - {name: a, mode: devdax}\n", "policy.d/10-a.yaml")
    write(tmp_path, "rules:\n  - {name: nine, mode: devdax}\n", "policy.d/9-c.yaml")
    write(tmp_path, "", "policy.d/15-empty.yaml")
    write(tmp_path, "not: [yaml", "policy.d/README")
    write(tmp_path, "not: [yaml", "policy.d/.10-a.yaml.swp")
    write(tmp_path, "not: [yaml", "policy.d/.hidden.yaml")
    write(tmp_path, "not: [yaml", "policy.d/30-old.yaml~")
    policy = load_policy(main)
    dropins = tmp_path / "policy.d"
    assert [r.name for r in policy.rules] == ["main", "rule 2", "a", "rule 4", "nine"]
    assert [r.location for r in policy.rules] == [
        f"{main}:2",
        f"{main}:3",
        f"{dropins / '10-a.yaml'}:2",
        f"{dropins / '20-b.yaml'}:2",
        f"{dropins / '9-c.yaml'}:2",
    ]
    names = ["10-a.yaml", "15-empty.yaml", "20-b.yaml", "9-c.yaml"]
    assert policy.sources == (str(main), *(str(dropins / n) for n in names))


def test_dropin_folder_can_be_given(tmp_path: Path) -> None:
    main = write(tmp_path, "rules:\n  - {name: main, mode: ignore}\n")
    write(tmp_path, "rules:\n  - {name: ignored, mode: ignore}\n", "policy.d/10-a.yaml")
    write(tmp_path, "rules:\n  - {name: other, mode: ignore}\n", "elsewhere/10-a.yaml")
    policy = load_policy(main, tmp_path / "elsewhere")
    assert [r.name for r in policy.rules] == ["main", "other"]
    assert [r.name for r in load_policy(main, tmp_path / "missing").rules] == ["main"]


def test_errors_in_dropins_are_located_in_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path, "rules:\n  - {name: a, mode: devdax}\n")
    dropin = write(tmp_path, "rules:\n  - {name: a, mode: dexdax}\n", "policy.d/10-x.yaml")
    with pytest.raises(PolicyError) as caught:
        load_policy(main)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.col) == (str(dropin), 2, 21)
    assert diagnostic.message == (
        "'mode' must be one of devdax, system-ram, ignore; got 'dexdax'; did you mean 'devdax'?"
    )


def test_rule_names_are_unique_across_files(tmp_path: Path) -> None:
    main = write(tmp_path, "rules:\n  - {name: a, mode: devdax}\n")
    write(tmp_path, "rules:\n  - mode: ignore\n  - {name: a, mode: ignore}\n", "policy.d/1.yaml")
    assert check_policy(main)[0].message == f"rule name 'a' is already used at {main}:2"
    assert str(check_policy(main)[0]).startswith(f"{tmp_path / 'policy.d/1.yaml'}:3:12: ")


def test_yml_dropins_are_reported_not_skipped(tmp_path: Path) -> None:
    main = write(tmp_path, "")
    write(tmp_path, "rules: []\n", "policy.d/10-a.yml")
    (diagnostic,) = check_policy(main)
    assert str(diagnostic) == (
        f"{tmp_path / 'policy.d/10-a.yml'}: not loaded: drop-in files must be named *.yaml"
    )


def test_dropin_folder_that_is_a_file(tmp_path: Path) -> None:
    main = write(tmp_path, "")
    write(tmp_path, "", "policy.d")
    assert [str(d) for d in check_policy(main)] == [f"{tmp_path / 'policy.d'}: not a directory"]


def test_check_policy_is_empty_for_a_good_policy(tmp_path: Path) -> None:
    assert check_policy(write(tmp_path, EXAMPLE)) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory, not a policy file"),
        (os.mkfifo, "not a regular file"),
        (
            lambda p: p.write_bytes(b"#" * (256 * 1024 + 1)),
            "larger than 256 KiB; is this a policy file?",
        ),
    ],
)
def test_files_that_cannot_be_policies_are_named(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "policy.yaml"
    make(path)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    assert load(tmp_path, b"#" * (256 * 1024 - 1) + b"\n").rules == ()


def test_a_bad_main_file_does_not_hide_dropin_problems(tmp_path: Path) -> None:
    main = tmp_path / "policy.yaml"
    write(tmp_path, "rules:\n  - mode: sytem-ram\n", "policy.d/10-a.yaml")
    with pytest.raises(PolicyError) as caught:
        load_policy(main)
    assert [(d.file, d.line) for d in caught.value.diagnostics] == [
        (str(main), None),
        (str(tmp_path / "policy.d/10-a.yaml"), 2),
    ]


def test_rules_can_be_built_in_code() -> None:
    rule = Rule(name="r", location="x:1", mode=Mode.DEVDAX)
    assert rule.matches(device())
    assert (rule.zone, rule.memmap_on_memory, rule.online) == (Zone.MOVABLE, None, True)
    cxl = Selector.model_validate({"provider": "cxl"})
    only_cxl = Rule(name="c", location="x:2", mode=Mode.SYSTEM_RAM, selector=cxl)
    assert only_cxl.matches(device(provider=Provider.CXL))
    assert not only_cxl.matches(device(provider=Provider.PMEM))

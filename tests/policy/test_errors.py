"""Bad policies: every problem is reported, located, as FILE:LINE:COL with the line and a caret."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daxd.policy.errors import Diagnostic, PolicyError
from daxd.policy.load import load_policy
from tests.policy.helpers import problems, write


def report(*lines: str) -> str:
    return "\n".join(lines)


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n  - mode: system-ram\n    zon: normal\n") == report(
        "P:3:5: unknown key 'zon' in a rule; did you mean 'zone'?",
        "    zon: normal",
        "    ^",
    )


def test_several_problems_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = """\
version: 1
rules:
  - name: cxl
    match:
      provider: [cxl, nvme]
      regoin: 3
    mode: devdax
    zone: movable
  - mode: system-ram
    online: yes
"""
    assert problems(tmp_path, text) == report(
        "P:5:23: 'provider' must be one of pmem, hmem, cxl, unknown; got 'nvme'",
        "      provider: [cxl, nvme]",
        "                      ^",
        "P:6:7: unknown key 'regoin' in 'match'; did you mean 'region'?",
        "      regoin: 3",
        "      ^",
        "P:8:5: 'zone' only applies to mode system-ram; this rule's mode is devdax",
        "    zone: movable",
        "    ^",
        "P:10:13: 'online' must be true or false, got 'yes' "
        "(YAML 1.1's yes/no/on/off are not booleans in a policy)",
        "    online: yes",
        "            ^",
    )


@pytest.mark.parametrize(
    ("text", "first_line"),
    [
        (
            "rule:\n  - mode: devdax\n",
            "P:1:1: unknown key 'rule' at the top level; did you mean 'rules'?",
        ),
        (
            "mode: devdax\n",
            "P:1:1: unknown key 'mode' at the top level; rules go in a list under 'rules:'",
        ),
        (
            "rules:\n  - mode: devdax\n    provider: cxl\n",
            "P:3:5: unknown key 'provider' in a rule; selectors go under 'match:', "
            "e.g. match: {provider: ...}",
        ),
        (
            "rules:\n  - match: {mode: devdax}\n    mode: devdax\n",
            "P:2:13: unknown key 'mode' in 'match'; 'mode' belongs to the rule, next to 'match:', "
            "not under it",
        ),
        (
            "rules:\n  - mode: devdax\n    colour: red\n",
            "P:3:5: unknown key 'colour' in a rule (known keys: name, match, mode, zone, "
            "memmap_on_memory, online, allow_pmem_data_loss)",
        ),
        (
            "rules:\n  - mode: devdax\n    <<: {zone: normal}\n",
            "P:3:5: unknown key '<<' in a rule; YAML merge keys are not supported",
        ),
        (
            "rules:\n  - mode: devdax\n    Memmap-On-Memory: true\n",
            "P:3:5: unknown key 'Memmap-On-Memory' in a rule; did you mean 'memmap_on_memory'?",
        ),
        (
            "rules:\n  - match: {provider: cxl}\n",
            "P:2:5: this rule has no 'mode'; add mode: devdax, system-ram or ignore",
        ),
        (
            "rules:\n  - mode: kmem\n",
            "P:2:11: 'mode' must be one of devdax, system-ram, ignore; got 'kmem'; 'kmem' is the "
            "driver, the mode is 'system-ram'",
        ),
        (
            "rules:\n  - mode: System_RAM\n",
            "P:2:11: 'mode' must be one of devdax, system-ram, ignore; got 'System_RAM'; did you "
            "mean 'system-ram'?",
        ),
        (
            "rules:\n  - mode: 1\n",
            "P:2:11: 'mode' must be one of devdax, system-ram, ignore; got 1",
        ),
        (
            "rules:\n  - mode: system-ram\n    zone: online_movable\n",
            "P:3:11: 'zone' must be one of movable, normal, auto; got 'online_movable'; did you "
            "mean 'movable'?",
        ),
        (
            "rules:\n  - mode: ignore\n    online: true\n",
            "P:3:5: 'online' only applies to mode system-ram; this rule's mode is ignore",
        ),
        (
            "rules:\n  - mode: devdax\n    allow_pmem_data_loss: false\n",
            "P:3:5: 'allow_pmem_data_loss' only applies to mode system-ram; this rule's mode is "
            "devdax",
        ),
        ("rules:\n  - mode:\n", "P:2:5: 'mode' has no value; give devdax, system-ram or ignore"),
        (
            "rules:\n  - mode: system-ram\n    zone: ~\n",
            "P:3:11: 'zone' has no value; leave the key out for the default",
        ),
        (
            "rules:\n  - mode: system-ram\n    online: 'true'\n",
            "P:3:13: 'online' must be true or false, got 'true' (write it without quotes)",
        ),
        (
            "rules:\n  - mode: system-ram\n    online: 1\n",
            "P:3:13: 'online' must be true or false, got 1",
        ),
        ("rules:\n  -\n", "P:2:4: empty rule; a rule needs at least 'mode:'"),
        (
            "rules:\n  - devdax\n",
            "P:2:5: a rule is a mapping with keys such as 'match:' and 'mode:', got 'devdax'",
        ),
        (
            "rules:\n  mode: devdax\n",
            "P:2:3: 'rules' is a list of rules, each starting with '- '; got a mapping",
        ),
        (
            "- mode: devdax\n",
            "P:1:1: a policy is a mapping with 'version:' and 'rules:', got a list; put 'rules:' "
            "above the list",
        ),
        (
            "rules:\n  - match: cxl\n    mode: devdax\n",
            "P:2:12: 'match' takes selectors such as 'provider: cxl', got 'cxl'",
        ),
        ("version: 2\n", "P:1:10: policy version 2 is not supported; this daxd reads version 1"),
        ("rules:\n  - {name: [a], mode: ignore}\n", "P:2:12: 'name' must be a text, got a list"),
        (
            "rules:\n  - {name: rule 2, mode: ignore}\n",
            "P:2:12: 'rule 2' is how unnamed rules are called; pick another name",
        ),
    ],
)
def test_single_problems(tmp_path: Path, text: str, first_line: str) -> None:
    lines = problems(tmp_path, text).split("\n")
    assert lines[0] == first_line
    assert len(lines) == 3  # the message, the offending line, the caret


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            "region: 010",
            "a region must be a whole number such as 3 or region3, got '010'; leading zeros are "
            "not allowed (YAML 1.1 would read '010' as octal)",
        ),
        (
            "region: 09",
            "a region must be a whole number such as 3 or region3, got '09'; leading zeros are "
            "not allowed",
        ),
        (
            "region: 0o10",
            "a region must be a whole number such as 3 or region3, got '0o10'; octal numbers are "
            "not supported",
        ),
        ("region: -1", "a region must not be negative, got -1"),
        ("region: regionx", "a region must be a whole number such as 3 or region3, got 'x'"),
        ("region: true", "a region must be a whole number such as 3 or region3, got true"),
        (
            "numa_node: 1_000",
            "a NUMA node must be a whole number, got '1_000'; write numbers without '_' separators",
        ),
        (
            "numa_node: 1:20",
            "a NUMA node must be a whole number, got '1:20'; YAML 1.1 would read '1:20' as a "
            "base-60 number, daxd does not",
        ),
        (
            "target_node: 1.0",
            "a NUMA node must be a whole number, got '1.0'; a whole number is needed",
        ),
        (
            "size: 16GB",
            "'16GB': 'GB' is ambiguous; write 16G or 16GiB (daxd units are powers of 1024)",
        ),
        (
            "size: 16Q",
            "'16Q': unknown unit 'Q'; use B, K, M, G, T or P (or KiB, MiB, GiB, TiB, PiB)",
        ),
        ("size: 1.3B", "'1.3B' is not a whole number of bytes"),
        ("size: 8G..4G", "'8G..4G' is an empty range: its start is above its end"),
        ("size: '< 0'", "'< 0' matches nothing"),
        ("size: '>='", "expected a size such as 16GiB, '>= 8G' or '8GiB..64GiB', got '>='"),
        ("size: ..", "expected a size such as 16GiB, '>= 8G' or '8GiB..64GiB', got '..'"),
        ("size: -1", "a size must not be negative, got -1"),
        (
            "address: 0xfoo",
            "expected an address such as 0x1012000000, '>= 0x100000000' or "
            "'0x100000000..0x1ffffffff', got '0xfoo'",
        ),
        ("uuid: 1234", "expected a namespace or CXL region uuid such as 9d2e0b1c-..., got 1234"),
        ("device: /dev/dax0.0", "write device names without /dev/, e.g. 'dax0.0'"),
        ("device: 0", "expected a name or pattern such as 'dax1.*', got 0"),
        ("provider: []", "empty list; remove 'provider' to match any device"),
        ("provider:", "'provider' has no value; remove it to match any device"),
        ("provider: {cxl: 1}", "'provider' takes a value or a list of values, not a mapping"),
    ],
)
def test_selector_value_problems(tmp_path: Path, selector: str, message: str) -> None:
    text = f"rules:\n  - mode: devdax\n    match:\n      {selector}\n"
    first = problems(tmp_path, text).split("\n")[0]
    assert first.split(": ", 1)[1] == message
    assert first.startswith("P:4:")


def test_a_bad_list_item_is_located_at_the_item(tmp_path: Path) -> None:
    text = 'rules:\n  - mode: devdax\n    match:\n      size: [16G, "8G..4G", 1_000]\n'
    assert problems(tmp_path, text) == report(
        "P:4:19: '8G..4G' is an empty range: its start is above its end",
        '      size: [16G, "8G..4G", 1_000]',
        "                  ^",
        "P:4:29: expected a size such as 16GiB, '>= 8G' or '8GiB..64GiB', got '1_000'; "
        "write numbers without '_' separators",
        '      size: [16G, "8G..4G", 1_000]',
        "                            ^",
    )


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "OFF"])
def test_yaml_11_booleans_are_not_booleans(tmp_path: Path, word: str) -> None:
    text = f"rules:\n  - mode: system-ram\n    memmap_on_memory: {word}\n"
    assert problems(tmp_path, text).split("\n")[0] == (
        f"P:3:23: 'memmap_on_memory' must be true or false, got '{word}' "
        "(YAML 1.1's yes/no/on/off are not booleans in a policy)"
    )


@pytest.mark.parametrize("word", ["true", "True", "TRUE"])
def test_yaml_12_booleans_are(tmp_path: Path, word: str) -> None:
    write(tmp_path, f"rules:\n  - mode: system-ram\n    online: {word}\n")
    assert load_policy(tmp_path / "policy.yaml").rules[0].online is True


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = "rules:\n  - mode: devdax\n    name: a\n    mode: system-ram\n"
    assert problems(tmp_path, text) == report(
        "P:4:5: duplicate key 'mode' (first given on line 2)",
        "    mode: system-ram",
        "    ^",
    )


def test_anchors_and_aliases_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n  - mode: *m\n") == report(
        "P:2:11: aliases (*m) are not supported in a policy; write the value out",
        "  - mode: *m",
        "          ^",
    )
    assert problems(tmp_path, "x: &m devdax\n").split("\n")[0] == (
        "P:1:4: anchors (&m) are not supported in a policy; write values out"
    )


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines.append("rules: *a9")
    started = time.monotonic()
    text = problems(tmp_path, "\n".join(lines) + "\n")
    assert time.monotonic() - started < 1
    assert text.startswith("P:1:5: anchors (&a0) are not supported")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "!!python/object/apply:os.system ['true']",
            "YAML tags such as '!!python/object/apply:os.system' are not supported in a policy",
        ),
        ("!!binary aGVsbG8=", "YAML tags such as '!!binary' are not supported in a policy"),
        ("!!int 3", "YAML tags such as '!!int' are not supported in a policy"),
        ("!pmem", "unquoted '!pmem' is a YAML tag; to negate a value, quote it: \"!pmem\""),
    ],
)
def test_tags_are_refused(tmp_path: Path, value: str, message: str) -> None:
    text = f"rules:\n  - mode: devdax\n    match:\n      provider: {value}\n"
    assert problems(tmp_path, text).split("\n")[0] == f"P:4:17: {message}"


def test_a_tag_in_a_flow_mapping_gets_the_quoting_hint(tmp_path: Path) -> None:
    text = "rules:\n  - match: {provider: !pmem}\n    mode: devdax\n"
    assert problems(tmp_path, text).split("\n")[0] == (
        "P:2:28: invalid YAML: expected ' ', but found '}' (while scanning a tag); "
        'to negate a value, quote it: "!pmem"'
    )


def test_a_second_document_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules: []\n---\nrules: []\n") == report(
        "P:2:1: a second YAML document starts here; a policy file holds exactly one",
        "---",
        "^",
    )


def test_syntax_errors_are_located(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n\t- mode: devdax\n") == report(
        "P:2:1: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token); indent with spaces, YAML does not allow tabs there",
        "\t- mode: devdax",
        "^",
    )
    assert problems(tmp_path, "rules:\n  - mode: devdax\n   zone: x\n") == report(
        "P:3:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection on line 2)",
        "   zone: x",
        "   ^",
    )


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    text = problems(tmp_path, "rules: " + "[" * 5000 + "]" * 5000 + "\n")
    assert text.split("\n")[0] == "P:1:23: nested more than 16 levels deep"


def test_non_utf8_bytes_are_located(tmp_path: Path) -> None:
    assert problems(tmp_path, b"rules:\n  - mode: d\xe9vdax\n") == report(
        "P:2:12: not UTF-8 text (byte 0xe9); a policy file must be UTF-8",
        "  - mode: d\ufffdvdax",
        "           ^",
    )


def test_a_byte_order_mark_does_not_shift_columns(tmp_path: Path) -> None:
    assert problems(tmp_path, b"\xef\xbb\xbfversion: 2\n") == report(
        "P:1:10: policy version 2 is not supported; this daxd reads version 1",
        "version: 2",
        "         ^",
    )


def test_control_characters_are_located_and_not_echoed(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n  - mode: dev\x1b[2Jdax\n") == report(
        "P:2:14: the file contains the control character U+001B; a policy is plain text",
        "  - mode: dev?[2Jdax",
        "             ^",
    )


def test_binary_junk_is_a_located_error_shown_safely(tmp_path: Path) -> None:
    message, line, caret = problems(tmp_path, bytes(range(256))).split("\n")
    # \n and \r end lines 1 and 2; 0x80 is the first byte that is not UTF-8.
    assert message == "P:3:115: not UTF-8 text (byte 0x80); a policy file must be UTF-8"
    assert len(line) == 100
    assert all(ch.isprintable() or ch == "\t" for ch in line)
    assert caret.endswith("^")


def test_messages_escape_what_they_quote(tmp_path: Path) -> None:
    text = problems(tmp_path, "rules:\n  - mode: \u202edevdax\n")
    assert text.split("\n")[0] == (
        "P:2:11: 'mode' must be one of devdax, system-ram, ignore; got '\\u202edevdax'; "
        "did you mean 'devdax'?"
    )
    assert text.split("\n")[1] == "  - mode: ?devdax"


def test_diagnostics_carry_their_parts(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - mode: devdax\n    zon: normal\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.diagnostics == [
        Diagnostic(
            str(path), 3, 5, "unknown key 'zon' in a rule; did you mean 'zone'?", "    zon: normal"
        )
    ]


def test_many_problems_are_capped_per_file(tmp_path: Path) -> None:
    text = "rules:\n" + "".join(f"  - mode: bad{i}\n" for i in range(60))
    lines = problems(tmp_path, text).split("\n")
    assert len(lines) == 50 * 3 + 1
    assert lines[-1] == "P: 10 more problems not shown"


def test_long_lines_are_shown_around_the_column() -> None:
    line = "x" * 300 + "!" + "y" * 300
    shown = str(Diagnostic("f", 1, 301, "here", line)).split("\n")
    assert shown[1] == "x" * 50 + "!" + "y" * 49
    assert shown[2] == " " * 50 + "^"


def test_the_caret_keeps_the_tabs_of_the_line() -> None:
    assert str(Diagnostic("f", 1, 4, "here", "\tx !")).split("\n")[2] == "\t  ^"


def test_whole_file_diagnostics_have_no_caret() -> None:
    assert str(Diagnostic("f", None, None, "no such file")) == "f: no such file"
    assert str(Diagnostic("f", 3, None, "somewhere here", "text")) == "f:3: somewhere here"

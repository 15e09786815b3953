"""Policy fuzzing: whatever the file holds, ``load_policy`` gives a Policy or a located PolicyError.

Five generators, each run for ``CASES`` examples (``DAXD_FUZZ=long``: ten times as many), with
a fixed seed (``derandomize``) so that CI runs are repeatable:

- structured: near-valid documents built from the policy's own keys and values, with wrong
  types, unknown keys, typos, bad values, nulls and nested junk mixed in, written in block or
  flow style;
- mutated: a valid policy with byte flips, truncations, deleted/duplicated/re-indented lines and
  YAML syntax inserted (anchors, aliases, merge keys, tags, document markers, flow brackets,
  block scalars, tabs, directives);
- hostile: deep nesting (flow and block), alias bombs, tag payloads, duplicate keys, many
  documents, long lines, many rules (kept small here: the full-size versions of these are
  measured one by one below);
- junk: random bytes, non-UTF-8 encodings, control characters, BOMs, NULs;
- text: random Unicode.

Every case must end within ``CASE_TIME`` seconds, in a Policy or a PolicyError whose every
diagnostic starts ``FILE:LINE:COL: `` or ``FILE: `` with a line inside the file.  The memory and
time of the two classic attacks (100k-deep nesting, a 2^30 alias bomb) are measured on their own.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daxd.policy.document import RULE_KEYS, SELECTOR_KEYS, TOP_KEYS
from daxd.policy.errors import PolicyError
from daxd.policy.load import MAX_FILE_SIZE, load_policy
from daxd.policy.model import Policy
from tests.policy.test_fuzz import VALID as BASE_VALID

LONG = os.environ.get("DAXD_FUZZ") == "long"
CASES = 25_000 if LONG else 2_500
CASE_TIME = 2.0  # seconds; a 256 KiB file parses in well under 1 s
GENERATORS = 5

# The policy tests' fully-featured policy, plus a catch-all rule.
VALID = BASE_VALID + "  - name: rest\n    mode: ignore\n"
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML's line breaks, as daxd counts them


@dataclass
class Tally:
    cases: int = 0
    policies: int = 0
    errors: int = 0
    slowest: float = 0.0
    seconds: float = 0.0
    by_generator: dict[str, int] = field(default_factory=dict)
    seconds_by_generator: dict[str, float] = field(default_factory=dict)


TALLY = Tally()


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(tmp_path_factory.mktemp("policy-fuzz"))
    return folder / "policy.yaml"


def load_checked(path: Path, data: bytes, generator: str) -> Policy | PolicyError:
    """Load ``data``; anything but a Policy or a well-located PolicyError, in time, fails."""
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        outcome: Policy | PolicyError = load_policy(path, path.parent / "no-policy.d")
    except PolicyError as caught:
        outcome = caught
    elapsed = time.perf_counter() - start
    TALLY.cases += 1
    TALLY.seconds += elapsed
    TALLY.slowest = max(TALLY.slowest, elapsed)
    TALLY.by_generator[generator] = TALLY.by_generator.get(generator, 0) + 1
    spent = TALLY.seconds_by_generator.get(generator, 0.0) + elapsed
    TALLY.seconds_by_generator[generator] = spent
    assert elapsed < CASE_TIME, f"took {elapsed:.2f} s"
    if isinstance(outcome, Policy):
        TALLY.policies += 1
        return outcome
    TALLY.errors += 1
    check_located(outcome, path, data)
    return outcome


def check_located(error: PolicyError, path: Path, data: bytes) -> None:
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    lines = len(_BREAKS.split(text))
    prefix = re.compile(rf"^{re.escape(str(path))}(?::([0-9]+):([0-9]+))?: \S")
    assert error.diagnostics
    for diagnostic in error.diagnostics:
        first = str(diagnostic).split("\n", 1)[0]
        m = prefix.match(first)
        assert m, f"not located: {first[:200]!r}"
        if m.group(1):
            assert 1 <= int(m.group(1)) <= lines, first[:200]
            assert int(m.group(2)) >= 1, first[:200]
        assert "Traceback" not in str(diagnostic)
    assert str(error).split("\n", 1)[0] == str(error.diagnostics[0]).split("\n", 1)[0]


FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_generator(name: str, strategy: st.SearchStrategy[bytes], path: Path) -> Callable[[], None]:
    @FUZZ
    @given(data=strategy)
    def fuzz(data: bytes) -> None:
        load_checked(path, data, name)

    return fuzz


def fuzz_and_count(name: str, strategy: st.SearchStrategy[bytes], path: Path) -> None:
    before = TALLY.cases
    run_generator(name, strategy, path)()
    ran = TALLY.cases - before
    # Hypothesis may stop early only when it has seen every input the strategy can make.
    assert ran >= CASES * 0.9, f"only {ran} cases ran"


# --- structured: near-valid documents -----------------------------------------------------------

_WORDS = [
    "cxl",
    "pmem",
    "hmem",
    "unknown",
    "devdax",
    "system-ram",
    "ignore",
    "movable",
    "normal",
    "auto",
    "dax0.0",
    "dax1.*",
    "region1",
    "namespace0.0",
    "16GiB",
    ">= 4G",
    "..4G",
    "0x1000..0x2000",
    "!pmem",
    "!dax0.0",
    "16GB",
    "1.5T",
    "0x",
    "",
    " ",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "off",
    "010",
    "0o10",
    "1_000",
    "1:20",
    "1e3",
    "-1",
    "9" * 40,
    "zone",
    "mode",
    "match",
    "rule 1",
    "a\tb",
    "x" * 100,
    "é",
    "\u202e",
]
_KEYS = [
    *TOP_KEYS,
    *RULE_KEYS,
    *SELECTOR_KEYS,
    "zon",
    "Mode",
    "memmap-on-memory",
    "<<",
    "rule",
    "matches",
    "provider ",
    "",
    "1",
    "!pmem",
    "name\x85",
]

_scalars = st.one_of(
    st.sampled_from(_WORDS),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)


def _values(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return _scalars
    inner = _values(depth - 1)
    return st.one_of(
        _scalars,
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    )


_selectors = st.dictionaries(
    st.one_of(st.sampled_from(SELECTOR_KEYS), st.sampled_from(_KEYS)),
    st.one_of(_values(1), st.lists(st.sampled_from(_WORDS), max_size=3)),
    max_size=5,
)
_rules = st.dictionaries(
    st.one_of(st.sampled_from(RULE_KEYS), st.sampled_from(_KEYS)),
    st.one_of(_values(1), _selectors),
    max_size=8,
)
_documents = st.one_of(
    st.fixed_dictionaries(
        {"rules": st.lists(st.one_of(_rules, _values(1)), max_size=5)},
        optional={"version": _values(0)},
    ),
    st.dictionaries(st.sampled_from(_KEYS), _values(2), max_size=4),
    _values(2),
)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    doc = draw(_documents)
    style = draw(st.sampled_from([False, True, None]))
    text = yaml.safe_dump(doc, default_flow_style=style, allow_unicode=draw(st.booleans()))
    return text.encode("utf-8", errors="surrogatepass")


# --- mutated: a valid policy, damaged -----------------------------------------------------------

_SYNTAX = [
    "&a ",
    "*a",
    "&a [x, *a]",
    "<<: ",
    "<<: *a\n",
    "!!python/object/apply:os.system ['id']",
    "!!binary aGk=",
    "!!str ",
    "!!int ",
    "!!map ",
    "!pmem",
    "! ",
    "!<tag:x> ",
    "? ",
    "--- ",
    "---\n",
    "...\n",
    "%YAML 1.1\n---\n",
    "%TAG ! tag:x:\n",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "- ",
    "|\n",
    ">-\n",
    "'",
    '"',
    "\\",
    "#",
    "\t",
    "  ",
    "\n",
    "\r",
    "\r\n",
    "\x85",
    "\u2028",
    "\x00",
    "\x1b[31m",
    "\ufeff",
    "@",
    "`",
    "%",
    "~",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID.encode())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "line", "indent"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(_SYNTAX)).encode("utf-8", errors="surrogatepass")
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "line":
                lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            else:
                lines[i] = b" " * draw(st.integers(0, 9)) + lines[i].lstrip(b" ")
            data = bytearray(b"\n".join(lines))
    return bytes(data)


# --- hostile: what an attacker would try ---------------------------------------------------------


def _nesting(kind: str, depth: int) -> str:
    if kind == "flow-seq":
        return "rules: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow-map":
        return "rules: " + "{a: " * depth + "x" + "}" * depth + "\n"
    if kind == "block-seq":
        return "rules:\n" + "- " * depth + "x\n"
    if kind == "unclosed":
        return "rules: " + "[" * depth + "\n"
    lines = ["rules:"] + [" " * (i + 1) + "a:" for i in range(min(depth, 100))]
    return "\n".join(lines) + " x\n"  # block mappings: indentation grows with depth


def _alias_bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + f"\nrules: *a{levels - 1}\n"


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["nesting", "bomb", "tags", "duplicates", "documents", "long-line", "many-rules"]
        )
    )
    if kind == "nesting":
        shape = draw(st.sampled_from(["flow-seq", "flow-map", "block-seq", "unclosed", "block"]))
        text = _nesting(shape, draw(st.integers(1, 5_000)))
    elif kind == "bomb":
        text = _alias_bomb(draw(st.integers(2, 40)), draw(st.integers(2, 10)))
    elif kind == "tags":
        tag = draw(
            st.sampled_from(
                [
                    "!!python/object/apply:os.system",
                    "!!python/name:os.system",
                    "!!binary",
                    "!!set",
                    "!!omap",
                    "!!timestamp",
                    "!!float",
                    "!custom",
                    "!<tag:yaml.org,2002:str>",
                    "!!merge",
                    "!!null",
                    "!!bool",
                ]
            )
        )
        where = draw(st.sampled_from(["top", "rules", "rule", "key", "value", "match"]))
        text = {
            "top": f"{tag} {{rules: []}}\n",
            "rules": f"rules: {tag} []\n",
            "rule": f"rules:\n  - {tag} {{mode: devdax}}\n",
            "key": f"rules:\n  - {tag} mode: devdax\n",
            "value": f"rules:\n  - mode: {tag} devdax\n",
            "match": f"rules:\n  - match: {{provider: {tag} pmem}}\n    mode: devdax\n",
        }[where]
    elif kind == "duplicates":
        key = draw(st.sampled_from([*TOP_KEYS, *RULE_KEYS, *SELECTOR_KEYS]))
        times = draw(st.integers(2, 200))
        body = "".join(f"    {key}: x\n" for _ in range(times))
        text = (
            f"rules:\n  - mode: devdax\n    match:\n{body}"
            if key in SELECTOR_KEYS
            else (f"rules:\n  -\n{body}" if key in RULE_KEYS else f"{key}: 1\n" * times)
        )
    elif kind == "documents":
        text = "---\nrules: []\n" * draw(st.integers(2, 200))
    elif kind == "long-line":
        text = "rules: [" + "x, " * draw(st.integers(1, 1_000)) + "\n"
    else:
        count = draw(st.integers(1, 40))
        rule = "  - {name: 'r%d', match: {provider: cxl}, mode: system-ram, zone: movable}\n"
        text = "rules:\n" + "".join(rule % i for i in range(count))
    data = text.encode()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data[: MAX_FILE_SIZE + draw(st.integers(-1, 1))] if len(data) > MAX_FILE_SIZE else data


# --- junk ---------------------------------------------------------------------------------------

_ENCODINGS = ["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis", "utf-7"]


@st.composite
def junk(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "encoded", "controls", "bom"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "encoded":
        text = VALID + draw(st.text(alphabet="éßü€漢字", max_size=10))
        encoding = draw(st.sampled_from(_ENCODINGS))
        return text.encode(encoding, errors="replace")
    if kind == "controls":
        control = draw(st.sampled_from([chr(c) for c in [*range(0, 32), 127, *range(128, 160)]]))
        at = draw(st.integers(0, len(VALID)))
        return (VALID[:at] + control + VALID[at:]).encode("utf-8")
    bom = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf" * 2]))
    return bom + VALID.encode()


_text = st.text(max_size=400).map(lambda t: t.encode("utf-8", errors="surrogatepass"))


# --- the tests ------------------------------------------------------------------------------------


def test_the_unmutated_policy_is_valid(path: Path) -> None:
    assert isinstance(load_checked(path, VALID.encode(), "valid"), Policy)


def test_structured(path: Path) -> None:
    fuzz_and_count("structured", structured(), path)


def test_mutated(path: Path) -> None:
    fuzz_and_count("mutated", mutated(), path)


def test_hostile(path: Path) -> None:
    fuzz_and_count("hostile", hostile(), path)


def test_junk(path: Path) -> None:
    fuzz_and_count("junk", junk(), path)


def test_random_text(path: Path) -> None:
    fuzz_and_count("text", _text, path)


def test_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """The counts docs/reliability.md cites (when the whole module ran)."""
    with capsys.disabled():
        print(
            f"\npolicy fuzz: {TALLY.cases} cases ({TALLY.policies} policies, {TALLY.errors} "
            f"errors), {TALLY.seconds:.1f} s loading, slowest {TALLY.slowest * 1000:.0f} ms, "
            f"by generator {TALLY.by_generator}, seconds "
            f"{ {g: round(t, 1) for g, t in TALLY.seconds_by_generator.items()} }"
        )
    if len(TALLY.by_generator) > GENERATORS:  # every generator ran (plus the valid policy)
        assert TALLY.cases >= GENERATORS * CASES * 0.9 >= 10_000


# --- the classic attacks, measured ----------------------------------------------------------------

MEMORY_BOUND = 64 << 20  # bytes; a 256 KiB file may not cost more than this to reject
TIME_BOUND = 5.0  # seconds, on a loaded CI machine


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_nesting("flow-seq", 100_000), id="100k-deep-flow-sequence"),
        pytest.param(_nesting("flow-map", 100_000), id="100k-deep-flow-mapping"),
        pytest.param(_nesting("block-seq", 100_000), id="100k-deep-block-sequence"),
        pytest.param(_nesting("unclosed", 100_000), id="100k-unclosed-brackets"),
        pytest.param(_alias_bomb(31, 2), id="alias-bomb-2^30"),
        pytest.param(_alias_bomb(10, 9), id="billion-laughs-9^9"),
        pytest.param("rules: [" + "x, " * 90_000 + "]\n", id="270k-long-line"),
        pytest.param("#" * (10 << 20), id="10MiB-comment"),
        pytest.param("---\nrules: []\n" * 18_000, id="18k-documents"),
        pytest.param("rules:\n  -\n" + "    mode: devdax\n" * 15_000, id="15k-duplicate-keys"),
    ],
)
def test_attacks_fail_fast_in_bounded_memory(path: Path, text: str) -> None:
    data = text.encode()
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        load_policy(path, path.parent / "no-policy.d")
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND, f"{elapsed:.2f} s"
    tracemalloc.start()  # once more, for memory (tracing makes it several times slower)
    try:
        with pytest.raises(PolicyError):
            load_policy(path, path.parent / "no-policy.d")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"peak {peak >> 20} MiB"
    check_located(caught.value, path, data)
    message = str(caught.value)
    expected = ("nested more than", "aliases", "anchors", "larger than", "second YAML document")
    assert any(word in message for word in (*expected, "duplicate key")), message[:300]


def test_a_full_size_valid_policy_loads_in_time(path: Path) -> None:
    rule = "  - {name: 'r%d', match: {provider: cxl}, mode: system-ram, zone: movable}\n"
    text = "rules:\n"
    i = 0
    while len(text) + len(rule) + 8 < MAX_FILE_SIZE:
        text += rule % i
        i += 1
    path.write_text(text)
    start = time.perf_counter()
    policy = load_policy(path, path.parent / "no-policy.d")
    elapsed = time.perf_counter() - start
    assert len(policy.rules) == i > 3000
    assert elapsed < TIME_BOUND

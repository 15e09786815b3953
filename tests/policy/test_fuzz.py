"""Whatever the bytes, loading gives a Policy or a PolicyError with located diagnostics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy
from daxd.policy.model import Policy

VALID = """\
version: 1
regions:
  - name: pair
    memdevs: [0x1000, {serial: 4097}, {host_bridge: pci0000:34}, {host_bridge: 12}]
    interleave_ways: 4
    granularity: 4K
    size: 4G
    window: "decoder0.*"
  - {name: gone, memdevs: [0x1002], type: ram, state: absent}
rules:
  - name: cxl
    match:
      provider: [cxl, "!pmem"]
      size: ">= 16GiB"
      region: [0, region1]
      device: "dax*.0"
      numa_node: 0
      target_node: "!2"
      uuid: 9d2e0b1c-5c7a-4d2e-8f31-6a0d4c1b2e3f
      namespace: namespace0.*
      address: "0x100000000..0x1ffffffff"
    mode: system-ram
    zone: movable
    memmap_on_memory: true
    online: true
    allow_pmem_data_loss: false
  - match: {device: "dax1.*"}
    mode: devdax
"""
# Characters that mean something to YAML or to the policy, to make mutations interesting.
_ALPHABET = ":-[]{},!&*#'\"\n \t|>?%@`~.0123456789abcdefgmprxyzGT\x00\x85\u2028\ufeff"


@st.composite
def mutations(draw: st.DrawFn) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        span = draw(st.integers(0, 12))
        piece = draw(st.text(alphabet=_ALPHABET, max_size=6))
        op = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + span :]
        elif op == "replace":
            text = text[:at] + piece + text[at + span :]
        else:
            text = text[:at] + text[at : at + span] * 3 + text[at:]
    return text


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "policy.yaml"


def load_or_explain(path: Path, data: bytes) -> Policy | PolicyError:
    """Load ``data``; anything but a Policy or a well-formed PolicyError fails the test."""
    path.write_bytes(data)
    try:
        return load_policy(path, path.parent / "no-dropins")
    except PolicyError as caught:
        error = caught
    text = data.decode("utf-8", errors="replace")
    lines = len(re.split("\r\n|[\r\n\x85\u2028\u2029]", text))  # YAML's line breaks
    assert error.diagnostics
    for diagnostic in error.diagnostics:
        assert diagnostic.file == str(path)
        assert diagnostic.line is None or 1 <= diagnostic.line <= lines
        assert diagnostic.message
    assert str(error)
    return error


@settings(max_examples=100, deadline=None)
@given(text=mutations())
def test_mutated_policies(path: Path, text: str) -> None:
    load_or_explain(path, text.encode("utf-8"))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text(path: Path, text: str) -> None:
    load_or_explain(path, text.encode("utf-8", errors="surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes(path: Path, data: bytes) -> None:
    load_or_explain(path, data)


def test_the_unmutated_policy_is_valid(path: Path) -> None:
    policy = load_or_explain(path, VALID.encode())
    assert isinstance(policy, Policy)
    assert [r.name for r in policy.regions] == ["pair", "gone"]

"""The shipped /etc/daxd/policy.yaml changes nothing, and each of its examples is valid."""

from __future__ import annotations

import re
from pathlib import Path

from daxd.policy.document import RULE_KEYS, SELECTOR_KEYS
from daxd.policy.load import load_policy
from daxd.policy.model import Mode
from tests.policy.helpers import write

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "daxd" / "policy.yaml"


def test_the_shipped_policy_has_no_rules() -> None:
    assert load_policy(SHIPPED, SHIPPED.parent / "no-such-folder").rules == ()


def test_the_shipped_examples_are_valid_and_cover_the_language(tmp_path: Path) -> None:
    # Uncommenting an example means removing the "#" of its lines, which start with "#  ".
    text = re.sub(r"(?m)^#(?=  )", "", SHIPPED.read_text(encoding="utf-8"))
    rules = load_policy(write(tmp_path, text)).rules
    assert {rule.mode for rule in rules} == set(Mode)
    used = {key for rule in rules for key in SELECTOR_KEYS if getattr(rule.selector, key)}
    assert used == set(SELECTOR_KEYS)
    written = set(re.findall(r"(?m)^#  +-? ?([a-z_]+):", SHIPPED.read_text(encoding="utf-8")))
    assert set(RULE_KEYS) <= written

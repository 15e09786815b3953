"""The shape of one policy file, validated from the plain values yamlload produced."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daxd.policy.layouts import LayoutDevice, LayoutEntry
from daxd.policy.model import WrittenActions
from daxd.policy.regions import MemdevRef, RegionEntry
from daxd.policy.selectors import Selector
from daxd.policy.values import FieldProblem, parse_count, parse_name, quote

SUPPORTED_VERSION = 1
_AUTO_NAME = re.compile(r"rule [0-9]+")  # what load.py calls unnamed rules


class RuleSpec(WrittenActions):
    """One item of ``rules:`` as written."""

    name: str | None = None
    selector: Selector = Field(default_factory=Selector, alias="match")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        name = parse_name(value)
        if _AUTO_NAME.fullmatch(name):
            raise FieldProblem(f"{quote(name)} is how unnamed rules are called; pick another name")
        return name

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: object) -> object:
        return {} if value is None else value  # `match:` with nothing under it: every device


class PolicyDocument(BaseModel):
    """A whole file: ``version`` (optional, must be 1), ``regions``, ``layouts`` and ``rules``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = SUPPORTED_VERSION
    regions: tuple[RegionEntry, ...] = ()
    layouts: tuple[LayoutEntry, ...] = ()
    rules: tuple[RuleSpec, ...] = ()

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: object) -> int:
        version = parse_count(value, "'version'")
        if version != SUPPORTED_VERSION:
            raise FieldProblem(
                f"policy version {version} is not supported; this daxd reads version "
                f"{SUPPORTED_VERSION}"
            )
        return version

    @field_validator("regions", "layouts", "rules", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return () if value is None else value  # `rules:` with every example commented out


def keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a model takes in YAML."""
    return tuple(f.alias or name for name, f in model.model_fields.items())


def _first(keys: tuple[str, ...], *leading: str) -> tuple[str, ...]:
    """The keys with ``leading`` first, in the order an item is written in."""
    return (*leading, *(k for k in keys if k not in leading))


TOP_KEYS = keys_of(PolicyDocument)
RULE_KEYS = _first(keys_of(RuleSpec), "name", "match")
SELECTOR_KEYS = keys_of(Selector)
REGION_KEYS = keys_of(RegionEntry)
MEMDEV_KEYS = keys_of(MemdevRef)
LAYOUT_KEYS = _first(keys_of(LayoutEntry), "name", "match")
LAYOUT_DEVICE_KEYS = _first(keys_of(LayoutDevice), "name", "size", "align")

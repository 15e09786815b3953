"""The shape of one policy file, validated from the plain values yamlload produced."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from daxd.policy.model import Actions, Mode
from daxd.policy.regions import MemdevRef, RegionEntry
from daxd.policy.selectors import Selector
from daxd.policy.values import FieldProblem, parse_count, parse_name, quote

SUPPORTED_VERSION = 1
_AUTO_NAME = re.compile(r"rule [0-9]+")  # what load.py calls unnamed rules


class RuleSpec(Actions):
    """One item of ``rules:`` as written."""

    name: str | None = None
    selector: Selector = Field(default_factory=Selector, alias="match")

    @field_validator(
        "mode", "zone", "memmap_on_memory", "online", "allow_pmem_data_loss", mode="before"
    )
    @classmethod
    def _present(cls, value: object, info: ValidationInfo) -> object:
        # Leaving a key out is how to get its default; an empty value is more likely a slip.
        if value is None:
            what = (
                "give devdax, system-ram or ignore"
                if info.field_name == "mode"
                else "leave the key out for the default"
            )
            raise FieldProblem(f"{info.field_name!r} has no value; {what}")
        return value

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

    @field_validator("zone", "memmap_on_memory", "online", "allow_pmem_data_loss")
    @classmethod
    def _needs_system_ram(cls, value: object, info: ValidationInfo) -> object:
        # Only keys actually written get here (defaults are not validated).
        mode = info.data.get("mode")
        if mode is not None and mode != Mode.SYSTEM_RAM:
            raise FieldProblem(
                f"{info.field_name!r} only applies to mode system-ram; this rule's mode is {mode}",
                at_key=True,
            )
        return value


class PolicyDocument(BaseModel):
    """A whole file: ``version`` (optional, must be 1), ``regions`` and ``rules``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = SUPPORTED_VERSION
    regions: tuple[RegionEntry, ...] = ()
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

    @field_validator("regions", "rules", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return () if value is None else value  # `rules:` with every example commented out


def keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a model takes in YAML."""
    return tuple(f.alias or name for name, f in model.model_fields.items())


TOP_KEYS = keys_of(PolicyDocument)
# name and match first, the order a rule is written in
RULE_KEYS = tuple(sorted(keys_of(RuleSpec), key=lambda k: k not in ("name", "match")))
SELECTOR_KEYS = keys_of(Selector)
REGION_KEYS = keys_of(RegionEntry)
MEMDEV_KEYS = keys_of(MemdevRef)

"""Sizes and physical addresses as operators write them.

A quantity is a decimal number with an optional unit (``16G``, ``16GiB``, ``1.5T``, ``4096``) or
a hexadecimal number (``0x1012000000``).  K, M, G, T, P and KiB, MiB, GiB, TiB, PiB all mean
powers of 1024, as in the kernel and ndctl; decimal units such as ``GB`` are refused because
readers disagree on what they mean.  An item is a quantity, a comparison (``>= 16GiB``) or an
inclusive range (``8GiB..64GiB``; either end may be left open).
"""

from __future__ import annotations

import re
from fractions import Fraction

from pydantic import BaseModel, ConfigDict

from daxd.policy.values import FieldProblem, describe, number_hint, quote

_SHIFT = {"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20, "g": 30, "gib": 30}
_SHIFT |= {"t": 40, "tib": 40, "p": 50, "pib": 50}
_DECIMAL_UNITS = {"kb", "mb", "gb", "tb", "pb"}
# Bounded digit counts keep int() away from Python's huge-number limits.
_HEX = re.compile(r"0[xX](?P<hex>[0-9a-fA-F]{1,16})")
_DECIMAL = re.compile(r"(?P<num>[0-9]{1,20}(?:\.[0-9]{1,20})?)\s*(?P<unit>[A-Za-z]{0,3})")
_COMPARISON = re.compile(r"(?P<op>>=|<=|>|<)\s*(?P<rest>.*)", re.DOTALL)

SIZE_EXAMPLES = "16GiB, '>= 8G' or '8GiB..64GiB'"
ADDRESS_EXAMPLES = "0x1012000000, '>= 0x100000000' or '0x100000000..0x1ffffffff'"


class Interval(BaseModel):
    """Inclusive bounds; None leaves that side open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lo: int | None = None
    hi: int | None = None

    def __contains__(self, value: int) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)


def parse_quantity(text: str) -> int | None:
    """Bytes, or None when the text is not a quantity at all.  Raises FieldProblem for a
    quantity with a wrong unit or a fraction of a byte."""
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        hexadecimal = _HEX.fullmatch(text)
        return None if hexadecimal is None else int(hexadecimal["hex"], 16)
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    unit = match["unit"].lower()
    if unit in _DECIMAL_UNITS:
        short = unit[0].upper()
        raise FieldProblem(
            f"{quote(text)}: {match['unit']!r} is ambiguous; write {match['num']}{short} or "
            f"{match['num']}{short}iB (daxd units are powers of 1024)"
        )
    if unit not in _SHIFT:
        raise FieldProblem(
            f"{quote(text)}: unknown unit {match['unit']!r}; use B, K, M, G, T or P "
            "(or KiB, MiB, GiB, TiB, PiB)"
        )
    value = Fraction(match["num"]) * (1 << _SHIFT[unit])
    if value.denominator != 1:
        raise FieldProblem(f"{quote(text)} is not a whole number of bytes")
    return int(value)


def parse_interval(raw: object, what: str, examples: str) -> Interval:
    """An exact value, comparison or range of quantities; ``what`` names it in messages."""

    def quantity(text: str) -> int:
        value = parse_quantity(text)
        if value is None:
            hint = number_hint(text)
            raise FieldProblem(f"expected {what} such as {examples}, got {quote(raw_text)}{hint}")
        return value

    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise FieldProblem(f"{what} must not be negative, got {raw}")
        return Interval(lo=raw, hi=raw)
    if not isinstance(raw, str):
        raise FieldProblem(f"expected {what} such as {examples}, got {describe(raw)}")
    raw_text = raw
    text = raw.strip()
    comparison = _COMPARISON.fullmatch(text)
    if comparison is not None:
        op, bound = comparison["op"], quantity(comparison["rest"])
        if op == "<" and bound == 0:
            raise FieldProblem(f"{quote(raw)} matches nothing")
        return {
            ">": Interval(lo=bound + 1),
            ">=": Interval(lo=bound),
            "<": Interval(hi=bound - 1),
            "<=": Interval(hi=bound),
        }[op]
    if ".." in text:
        left, right = (part.strip() for part in text.split("..", 1))
        if not left and not right:
            raise FieldProblem(f"expected {what} such as {examples}, got {quote(raw)}")
        lo = quantity(left) if left else None
        hi = quantity(right) if right else None
        if lo is not None and hi is not None and lo > hi:
            raise FieldProblem(f"{quote(raw)} is an empty range: its start is above its end")
        return Interval(lo=lo, hi=hi)
    value = quantity(text)
    return Interval(lo=value, hi=value)

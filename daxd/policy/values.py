"""Reading single policy values strictly, with messages written for the operator."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)

_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_DECIMAL = re.compile(r"[0-9]{1,30}")
NAME_LIMIT = 80


class FieldProblem(ValueError):
    """A value the policy cannot use.  ``at_key`` points the diagnostic at the key instead of the
    value (the key itself is the mistake, e.g. ``zone`` in a devdax rule)."""

    def __init__(self, message: str, *, at_key: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.at_key = at_key


def quote(value: str, limit: int = 60) -> str:
    """repr() escapes control characters, so user text cannot mess with the terminal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def describe(value: object) -> str:
    """How a parsed YAML value reads back to the operator."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A suggestion that survives case, '-' for '_' and small typos."""

    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    known = {norm(c): c for c in candidates}
    close = known.get(norm(word))
    if close is None:
        matches = difflib.get_close_matches(norm(word), list(known), n=1, cutoff=0.6)
        close = known[matches[0]] if matches else None
    return f"; did you mean {close!r}?" if close else ""


def number_hint(text: str) -> str:
    """Why a string that looks like a number is not read as one (YAML 1.1 would have)."""
    t = text.strip().lstrip("+-")
    if re.fullmatch(r"0[0-7]+", t):
        return f"; leading zeros are not allowed (YAML 1.1 would read {text!r} as octal)"
    if re.fullmatch(r"0[0-9]+", t):
        return "; leading zeros are not allowed"
    if re.fullmatch(r"0o[0-7]+", t):
        return "; octal numbers are not supported"
    if re.fullmatch(r"[0-9][0-9_]*_[0-9_]*", t):
        return "; write numbers without '_' separators"
    if re.fullmatch(r"[0-9]+(:[0-5]?[0-9])+", t):
        return f"; YAML 1.1 would read {text!r} as a base-60 number, daxd does not"
    if re.fullmatch(r"[0-9]*\.[0-9]+([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+", t):
        return "; a whole number is needed"
    return ""


def parse_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    message = f"{key!r} must be true or false, got {describe(value)}"
    if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        message += " (YAML 1.1's yes/no/on/off are not booleans in a policy)"
    elif isinstance(value, str) and value.lower() in ("true", "false"):
        message += " (write it without quotes)"
    raise FieldProblem(message)


def parse_name(value: object) -> str:
    """A rule's or a region's ``name``: one line of printable text (a number reads as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise FieldProblem(f"'name' must be a text, got {describe(value)}")
    name = value.strip()
    if not name or not name.isprintable():
        raise FieldProblem(f"'name' must be one line of printable text, got {describe(value)}")
    if len(name) > NAME_LIMIT:
        raise FieldProblem(f"'name' is longer than {NAME_LIMIT} characters")
    return name


def parse_count(value: object, what: str, example: str = "") -> int:
    """A non-negative decimal integer; quoted digits are fine, YAML 1.1 number forms are not."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FieldProblem(f"{what} must not be negative, got {value}")
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value) and not number_hint(value):
        return int(value)
    hint = number_hint(value) if isinstance(value, str) else ""
    raise FieldProblem(f"{what} must be a whole number{example}, got {describe(value)}{hint}")


def parse_choice(value: object, enum: type[E], key: str, hints: dict[str, str] | None = None) -> E:
    """One of the enum's values, exactly as written in the docs."""
    names = [member.value for member in enum]
    if isinstance(value, str):
        for member in enum:
            if value == member.value:
                return member
        hint = (hints or {}).get(value.lower()) or did_you_mean(value, names)
    else:
        hint = ""
    allowed = ", ".join(names)
    raise FieldProblem(f"{key!r} must be one of {allowed}; got {describe(value)}{hint}")

"""What D-Bus command-line clients print, as typed values the tests can compare.

Every client's output becomes the same JSON-shaped form: a variant is ``[signature, value]``
(recursively), a dictionary a ``dict`` with string keys, an array or a struct a ``list``.  So
the objects busctl, gdbus, dbus-send and GLib decoded can be compared with each other and with
the types the API documents.  (gdbus prints GVariant text, which GLib's own parser reads back
with its types: tests/service/glib_client.py ``parse``.)

dbus-send prints an empty array as ``array [ ]``, without its element type: such an array comes
out as ``a?``, which :func:`same_type` takes for any array type.
"""

from __future__ import annotations

import re
from typing import Any

_BASIC = "ybnqiuxtdhsogv"
_DBUS_SEND_NUMBERS = {
    "byte": "y",
    "int16": "n",
    "uint16": "q",
    "int32": "i",
    "uint32": "u",
    "int64": "x",
    "uint64": "t",
    "double": "d",
}
_DBUS_SEND_STRINGS = {"string": "s", "object path": "o", "signature": "g"}


def complete_types(signature: str) -> list[str]:
    """``"sa{sv}(ii)"`` -> ``["s", "a{sv}", "(ii)"]``."""
    out: list[str] = []
    i = 0
    while i < len(signature):
        end = _type_end(signature, i)
        out.append(signature[i:end])
        i = end
    return out


def _type_end(signature: str, i: int) -> int:
    char = signature[i]
    if char in _BASIC:
        return i + 1
    if char == "a":
        return _type_end(signature, i + 1)
    if char in "({":
        close = ")" if char == "(" else "}"
        j = i + 1
        while signature[j] != close:
            j = _type_end(signature, j)
        return j + 1
    raise ValueError(f"not a D-Bus signature: {signature!r} (at {i})")


def same_type(expected: str, got: str) -> bool:
    """``got`` is ``expected``, where dbus-send's ``a?`` (an empty array) is any array."""
    if "?" not in got:
        return got == expected
    pattern = re.escape(got).replace(r"a\?", "a.+")
    return re.fullmatch(pattern, expected) is not None


# --- busctl --json=short --------------------------------------------------------------------------


def from_busctl(signature: str, data: Any) -> Any:
    """A value of busctl's JSON (variants as {"type", "data"}) in the common form."""
    if signature == "v":
        inner = data["type"]
        return [inner, from_busctl(inner, data["data"])]
    if signature.startswith("a{"):
        _, value = complete_types(signature[2:-1])
        return {str(k): from_busctl(value, v) for k, v in data.items()}
    if signature.startswith("a"):
        return [from_busctl(signature[1:], item) for item in data]
    if signature.startswith("("):
        return [
            from_busctl(t, v) for t, v in zip(complete_types(signature[1:-1]), data, strict=True)
        ]
    return data


def busctl_reply(document: dict[str, Any]) -> list[list[Any]]:
    """``busctl --json=short call``'s reply: ``[[signature, value], ...]`` per returned value."""
    signature: str = document["type"]
    return [
        [t, from_busctl(t, v)]
        for t, v in zip(complete_types(signature), document["data"], strict=True)
    ]


# --- dbus-send --print-reply ----------------------------------------------------------------------


def dbus_send_error(stderr: str) -> tuple[str, str]:
    """(error name, message) of dbus-send's ``Error NAME: MESSAGE``."""
    match = re.search(r"^Error ([\w.]+): (.*)$", stderr, re.M | re.S)
    assert match, f"not a D-Bus error from dbus-send: {stderr!r}"
    return match[1], match[2].strip()


def from_dbus_send(stdout: str) -> list[list[Any]]:
    """``dbus-send --print-reply``'s reply: ``[[signature, value], ...]`` per returned value."""
    lines = stdout.splitlines()
    assert lines, stdout
    assert lines[0].startswith("method return "), stdout
    tokens: list[str] = []
    for line in lines[1:]:
        text = line.strip()
        while text.startswith("variant"):  # "variant   <the value, on the same line>"
            tokens.append("variant")
            text = text[len("variant") :].strip()
        if text:
            tokens.append(text)
    parser = _DbusSendParser(tokens)
    values = []
    while not parser.done():
        values.append(list(parser.value()))
    return values


class _DbusSendParser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.at = 0

    def done(self) -> bool:
        return self.at >= len(self.tokens)

    def take(self) -> str:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def value(self) -> tuple[str, Any]:
        token = self.take()
        if token == "variant":
            signature, inner = self.value()
            return "v", [signature, inner]
        if token == "array [":
            items: list[tuple[str, Any]] = []
            while self.tokens[self.at] != "]":
                items.append(self.value())
            self.take()
            return self._array(items)
        if token == "dict entry(":
            key = self.value()
            value = self.value()
            assert self.take() == ")", self.tokens[self.at - 1]
            return "{" + key[0] + value[0] + "}", (key[1], value[1])
        if token == "struct {":
            fields: list[tuple[str, Any]] = []
            while self.tokens[self.at] != "}":
                fields.append(self.value())
            self.take()
            return "(" + "".join(t for t, _ in fields) + ")", [v for _, v in fields]
        for word, signature in _DBUS_SEND_STRINGS.items():
            if token.startswith(f'{word} "') and token.endswith('"'):
                return signature, token[len(word) + 2 : -1]
        word, _, rest = token.partition(" ")
        if word in _DBUS_SEND_NUMBERS:
            signature = _DBUS_SEND_NUMBERS[word]
            return signature, float(rest) if signature == "d" else int(rest)
        if word == "boolean" and rest in ("true", "false"):
            return "b", rest == "true"
        raise ValueError(f"dbus-send printed something this parser does not know: {token!r}")

    @staticmethod
    def _array(items: list[tuple[str, Any]]) -> tuple[str, Any]:
        if not items:
            return "a?", []
        known = [t for t, _ in items if "?" not in t]
        element = known[0] if known else items[0][0]
        if element.startswith("{"):
            return "a" + element, {str(k): v for _, (k, v) in items}
        return "a" + element, [v for _, v in items]


# --- gdbus introspect -----------------------------------------------------------------------------

_NODE = re.compile(r"^\s*node (\S+) \{$")
_INTERFACE = re.compile(r"^\s*interface (\S+) \{$")
_PROPERTY = re.compile(r"^\s*(?:@\S+\s+)*(readonly|readwrite|writeonly) (\S+) (\w+)(?: = (.*))?;$")


def gdbus_properties(text: str) -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """``gdbus introspect --recurse --only-properties``: path -> interface -> property ->
    (its type as introspected, its value as GVariant text); every property is read-only."""
    out: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    path = ""
    interface = ""
    for line in text.splitlines():
        if match := _NODE.match(line):
            path = match[1]
            out.setdefault(path, {})
        elif match := _INTERFACE.match(line):
            interface = match[1]
            out[path].setdefault(interface, {})
        elif match := _PROPERTY.match(line):
            access, signature, name, value = match.groups()
            assert access == "readonly", line
            out[path][interface][name] = (signature, value or "")
    return out

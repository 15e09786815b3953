"""YAML text → plain values, with the position of every key and value.

PyYAML only composes the node graph (SafeLoader underneath, and nothing is ever constructed from a
tag); scalars are resolved here with a deliberately small schema, so YAML 1.1 surprises cannot
change what a policy means:

- booleans are ``true``/``false`` only (also ``True``/``TRUE``...), never yes/no/on/off/y/n;
- numbers are decimal integers without leading zeros; ``010``, ``0o10``, ``0x10``, ``1_000``,
  ``1:20`` and ``1.5`` stay strings and the field that wanted a number explains why;
- ``null``, ``~`` and nothing are None; anything else, quoted or not, is a string.

Anchors and aliases are refused (no billion laughs), as are explicit tags other than ``!!str``,
duplicate keys, a second document and deep nesting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from daxd.policy.errors import Diagnostic
from daxd.policy.source import Source

Loc = tuple[str | int, ...]  # a path into the document, as pydantic reports it
Pos = tuple[int, int]  # 1-based line, column

# A policy is at most root → rules → rule → match → list → item deep; leave room for mistakes.
MAX_DEPTH = 16

_PLAIN = "tag:daxd,2024:plain"  # an untagged, unquoted scalar: resolved by _plain_value
_STR = "tag:yaml.org,2002:str"
_ALLOWED_TAGS = {_PLAIN, _STR, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}

_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# Bounded length: Python refuses int() of very long digit strings, and no field needs them.
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]{0,30})")


def _plain_value(text: str) -> object:
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text):
        return int(text)
    return text


def _index(mark: object) -> int:
    """The character index of a PyYAML mark (typed loosely in the stubs)."""
    return int(getattr(mark, "index", 0))


class _Refused(Exception):
    def __init__(self, message: str, mark: object) -> None:
        super().__init__(message)
        self.message = message
        self.index = _index(mark)


class _Loader(yaml.SafeLoader):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        # Called for untagged nodes only; explicit tags are checked by _Converter.
        if kind is yaml.ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                f"aliases (*{event.anchor}) are not supported in a policy; write the value out",
                event.start_mark,
            )
        if event.anchor is not None:
            raise _Refused(
                f"anchors (&{event.anchor}) are not supported in a policy; write values out",
                event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class Document:
    """A parsed file: its value and where each part of it is written."""

    value: object
    values: dict[Loc, Pos] = field(default_factory=dict)
    keys: dict[Loc, Pos] = field(default_factory=dict)
    # Values already reported while parsing (a refused tag): later checks stay quiet about them.
    reported: set[Loc] = field(default_factory=set)

    def value_pos(self, loc: Loc) -> Pos:
        """Where the value at ``loc`` is written, or the nearest enclosing value (a scalar given
        where a list was allowed is validated as if it were the list's item 0)."""
        for end in range(len(loc), -1, -1):
            pos = self.values.get(loc[:end])
            if pos is not None:
                return pos
        return (1, 1)

    def key_pos(self, loc: Loc) -> Pos:
        return self.keys.get(loc) or self.value_pos(loc)

    def was_reported(self, loc: Loc) -> bool:
        return any(loc[:end] in self.reported for end in range(len(loc) + 1))


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


class _Converter:
    def __init__(self, source: Source, doc: Document, diagnostics: list[Diagnostic]) -> None:
        self.source = source
        self.doc = doc
        self.diagnostics = diagnostics

    def pos(self, mark: yaml.Mark) -> Pos:
        return self.source.position(mark.index)

    def error(self, pos: Pos, message: str) -> None:
        self.diagnostics.append(self.source.diagnostic(*pos, message))

    def convert(self, node: yaml.Node, loc: Loc, key_pos: Pos | None) -> object:
        pos = self.pos(node.start_mark)
        if key_pos is not None and node.tag == _PLAIN and node.value == "":
            pos = key_pos  # an empty value is best shown at its key, not at the next line
        self.doc.values[loc] = pos
        if node.tag not in _ALLOWED_TAGS:
            self.doc.reported.add(loc)
            self.error(pos, self._tag_message(node))
            return None
        if isinstance(node, yaml.ScalarNode):
            text = str(node.value)
            return _plain_value(text) if node.tag == _PLAIN else text
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*loc, i), None) for i, item in enumerate(node.value)]
        return self.mapping(node, loc)

    def mapping(self, node: yaml.Node, loc: Loc) -> dict[str, object]:
        result: dict[str, object] = {}
        seen: dict[str, Pos] = {}
        for key_node, value_node in node.value:
            kpos = self.pos(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_PLAIN, _STR):
                self.error(kpos, "a key must be a plain name such as 'mode'")
                continue
            key = str(key_node.value)
            if key in seen:
                self.error(kpos, f"duplicate key {key!r} (first given on line {seen[key][0]})")
                continue
            seen[key] = kpos
            self.doc.keys[(*loc, key)] = kpos
            result[key] = self.convert(value_node, (*loc, key), kpos)
        return result

    @staticmethod
    def _tag_message(node: yaml.Node) -> str:
        tag = _tag_name(node.tag)
        if isinstance(node, yaml.ScalarNode) and tag.startswith("!") and not tag.startswith("!!"):
            # `provider: !pmem` is a local tag in YAML, not a negated value.
            written = tag + (f" {node.value}" if node.value else "")
            return f'unquoted {written!r} is a YAML tag; to negate a value, quote it: "{written}"'
        return f"YAML tags such as {tag!r} are not supported in a policy"


def _syntax_error(source: Source, err: yaml.MarkedYAMLError) -> Diagnostic:
    mark = err.problem_mark or err.context_mark
    message = f"invalid YAML: {err.problem or err.context}"
    if err.problem and err.context:
        where = ""
        if err.context_mark and mark and err.context_mark.line != mark.line:
            where = f" on line {source.position(err.context_mark.index)[0]}"
        message += f" ({err.context}{where})"
    if "'\\t'" in message:
        message += "; indent with spaces, YAML does not allow tabs there"
    elif err.context == "while scanning a tag":
        message += '; to negate a value, quote it: "!pmem"'

    if mark is None:
        return Diagnostic(source.name, None, None, message)
    return source.diagnostic_at(mark.index, message)


def _reader_error(source: Source, err: yaml.reader.ReaderError) -> Diagnostic:
    # PyYAML checks the whole text up front and reports the first non-printable character.
    char = err.character if isinstance(err.character, int) else 0
    message = f"the file contains the control character U+{char:04X}; a policy is plain text"
    return source.diagnostic_at(int(err.position), message)


def parse(source: Source) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one file; a document is returned whenever the YAML itself could be read (its
    diagnostics may still hold duplicate keys or refused tags)."""
    diagnostics: list[Diagnostic] = []
    try:
        loader = _Loader(source.text)
    except yaml.reader.ReaderError as err:
        return None, [_reader_error(source, err)]
    try:
        loader.get_event()  # type: ignore[no-untyped-call]  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return Document(None), []
        node = loader.compose_document()
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.peek_event()  # type: ignore[no-untyped-call]
            message = "a second YAML document starts here; a policy file holds exactly one"
            return None, [source.diagnostic_at(_index(event.start_mark), message)]
    except _Refused as err:
        return None, [source.diagnostic_at(err.index, err.message)]
    except yaml.MarkedYAMLError as err:
        return None, [_syntax_error(source, err)]
    except yaml.reader.ReaderError as err:
        return None, [_reader_error(source, err)]
    finally:
        loader.dispose()
    doc = Document(None)
    if node is not None:
        doc.value = _Converter(source, doc, diagnostics).convert(node, (), None)
    return doc, diagnostics

"""The text of one policy file, and positions in it."""

from __future__ import annotations

import re
from bisect import bisect_right

from daxd.policy.errors import Diagnostic

# The line breaks PyYAML counts, so our line numbers and source lines agree with its marks.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class Source:
    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._starts = [0, *(m.end() for m in _BREAK.finditer(text))]

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of a character index."""
        row = bisect_right(self._starts, index) - 1
        return row + 1, index - self._starts[row] + 1

    def line(self, number: int) -> str:
        if not 1 <= number <= len(self._starts):
            return ""
        start = self._starts[number - 1]
        end = self._starts[number] if number < len(self._starts) else len(self.text)
        return _BREAK.sub("", self.text[start:end])

    def diagnostic(self, line: int, col: int, message: str) -> Diagnostic:
        return Diagnostic(self.name, line, col, message, self.line(line))

    def diagnostic_at(self, index: int, message: str) -> Diagnostic:
        return self.diagnostic(*self.position(index), message)

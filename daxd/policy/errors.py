"""Located policy diagnostics and the one exception the policy loader raises."""

from __future__ import annotations

from dataclasses import dataclass

# Long lines (minified or binary junk) are cut to a window around the column.
_WINDOW = 100


def _printable(text: str) -> str:
    """Replace what a terminal would interpret (controls, bidi overrides) one-for-one, so the
    caret below still lines up."""
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)


@dataclass(frozen=True)
class Diagnostic:
    """One problem in one policy file; ``line``/``col`` are 1-based, None when it is about the
    whole file (missing, unreadable, too large)."""

    file: str
    line: int | None
    col: int | None
    message: str
    source_line: str | None = None  # the offending line as written, without its line break

    @property
    def position(self) -> str:
        if self.line is None:
            return self.file
        if self.col is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"

    def __str__(self) -> str:
        text = f"{self.position}: {self.message}"
        if self.source_line is None or self.col is None:
            return text
        line, col = self.source_line, self.col - 1
        if len(line) > _WINDOW:
            start = max(0, min(col - _WINDOW // 2, len(line) - _WINDOW))
            line, col = line[start : start + _WINDOW], col - start
        # Keep the tabs of the prefix so the caret sits under the same character.
        pad = "".join("\t" if ch == "\t" else " " for ch in line[:col])
        return f"{text}\n{_printable(line)}\n{pad}^"


class PolicyError(Exception):
    """The policy cannot be used; ``diagnostics`` holds every problem found, in file order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

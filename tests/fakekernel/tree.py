"""Real files, directories and relative symlinks below a fake sysfs (or procfs) root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # What was last written where: re-rendering an unchanged attribute costs no file I/O.
        # (A test that edits a file behind the Tree's back keeps its edit until it changes.)
        self._written: dict[str, tuple[str, int]] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def dir(self, rel: str) -> None:
        self.path(rel).mkdir(parents=True, exist_ok=True)

    def attr(self, rel: str, value: str, mode: int = 0o444) -> None:
        """An attribute file as the kernel shows it: the value and a newline, with its mode."""
        self.raw(rel, value + "\n" if value else "", mode)

    def raw(self, rel: str, content: str, mode: int = 0o444) -> None:
        if self._written.get(rel) == (content, mode):
            return
        self._written[rel] = (content, mode)
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists():
            os.chmod(p, 0o600)  # so a non-root test run can rewrite a 0444 file
        p.write_text(content)
        os.chmod(p, mode)

    def link(self, rel: str, target: str) -> None:
        """A relative symlink rel -> target (both relative to the root), replacing an old one."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(p):
            p.unlink()
        os.symlink(os.path.relpath(self.path(target), p.parent), p)

    def remove(self, rel: str) -> None:
        prefix = rel + "/"
        for key in [k for k in self._written if k == rel or k.startswith(prefix)]:
            del self._written[key]
        p = self.path(rel)
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)

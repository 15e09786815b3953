"""A progress line per device on a terminal while `daxd apply` runs (stderr, rewritten in place).

Converting a large device takes minutes: the line says how far it got. Only on a terminal, at
most every ``interval`` seconds, and cleared before the outcome is printed, so that redirected
output and ``--json`` are never mixed with it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from daxd.apply.executor import StepResult

INTERVAL = 0.2


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self._out = stream if stream is not None else sys.stderr
        self._on = self._out.isatty()
        self._interval = INTERVAL if interval is None else interval
        self._last = float("-inf")  # the first line shows at once, however long ago boot was
        self._shown = False
        self._writes: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return self._on

    def step(self, device: str, result: StepResult) -> None:
        """After each write of a local apply (ApplyOptions.on_step)."""
        n = self._writes[device] = self._writes.get(device, 0) + 1
        step = result.step
        what = f"memory{step.block}" if step.block is not None else str(step.path)
        status = "ok" if result.ok else "FAILED"
        self.show(f"{device}: {n} writes; last: {step.value} > {what} {status}")

    def device(self, props: Mapping[str, Any]) -> None:
        """A device's D-Bus properties as the daemon publishes them while it works."""
        name = props.get("Name", "?")
        online, total = props.get("BlocksOnline", 0), props.get("BlocksTotal", 0)
        line = f"{name}: {props.get('State', '?')}, {online}/{total} blocks online"
        if "BlocksMovable" in props:
            line += f" ({props['BlocksMovable']} movable, {props.get('BlocksNormal', 0)} normal)"
        self.show(line)

    def show(self, line: str, force: bool = False) -> None:
        if not self._on:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        self._out.write(f"\r\033[K{line[:200]}")
        self._out.flush()
        self._shown = True

    def clear(self) -> None:
        if self._on and self._shown:
            self._out.write("\r\033[K")
            self._out.flush()
            self._shown = False

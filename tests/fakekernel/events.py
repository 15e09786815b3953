"""Uevents in the order the kernel emits them, with the properties udev shows for them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Uevent:
    action: str  # add / remove / bind / unbind / online / offline
    subsystem: str  # dax / memory
    devpath: str  # "/devices/...", as in DEVPATH
    sysname: str  # "dax0.0", "memory33"
    properties: Mapping[str, str] = field(default_factory=dict)


class EventLog:
    def __init__(self) -> None:
        self.events: list[Uevent] = []
        self.listener: Callable[[Uevent], None] | None = None
        self._seqnum = 0

    def emit(self, action: str, subsystem: str, devpath: str, **extra: str) -> Uevent:
        self._seqnum += 1
        props = {
            "ACTION": action,
            "DEVPATH": "/" + devpath,
            "SUBSYSTEM": subsystem,
            "SEQNUM": str(self._seqnum),
            **extra,
        }
        event = Uevent(action, subsystem, "/" + devpath, devpath.rsplit("/", 1)[-1], props)
        self.events.append(event)
        if self.listener is not None:
            self.listener(event)
        return event

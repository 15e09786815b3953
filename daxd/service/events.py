"""Kernel events as hints: which device to re-read. Sources expose a real fd for the event loop."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from daxd.kernel.layout import DEVICE_NAME, block_index

log = logging.getLogger("daxd.events")


SUBSYSTEMS = ("dax", "memory", "cxl")
# On the cxl bus only memdevs and regions coming or going matter (the policy's regions).
_CXL_NEWS = re.compile(r"^(mem|region)[0-9]+\Z")


@dataclass(frozen=True)
class Event:
    action: str  # add / remove / bind / unbind / change / online / offline
    subsystem: str  # dax / memory / cxl
    name: str  # dax0.0 / memory33

    @property
    def device(self) -> str | None:
        return self.name if self.subsystem == "dax" and DEVICE_NAME.match(self.name) else None

    @property
    def block(self) -> int | None:
        return block_index(self.name) if self.subsystem == "memory" else None

    @property
    def cxl(self) -> bool:
        """A memdev or region added or removed on the cxl bus."""
        return (
            self.subsystem == "cxl"
            and self.action in ("add", "remove")
            and _CXL_NEWS.match(self.name) is not None
        )


class Overflow(Exception):
    """Events were lost (netlink receive buffer overrun): everything must be re-read."""


class EventSource(Protocol):
    def fileno(self) -> int: ...

    def drain(self) -> list[Event]:
        """Events ready now, without blocking; raises Overflow when some were lost.

        A source may return only some of them: the loop calls again while its fd is readable.
        """
        ...

    def close(self) -> None: ...


class UdevSource:
    """udev's netlink monitor for the dax and memory subsystems, read without helper threads."""

    # A CXL device brings hundreds of memory block events at once; do not drop them.
    RECEIVE_BUFFER = 64 * 1024 * 1024
    # Events per drain(): a burst of thousands is taken in slices (the kernel buffer holds the
    # rest), so it never sits in memory at once nor keeps the loop from D-Bus and the watchdog.
    BATCH = 256

    def __init__(self) -> None:
        import pyudev

        self._context = pyudev.Context()
        self._monitor: Any = pyudev.Monitor.from_netlink(self._context)
        for subsystem in SUBSYSTEMS:
            self._monitor.filter_by(subsystem)
        try:
            self._monitor.set_receive_buffer_size(self.RECEIVE_BUFFER)
        except OSError as e:  # needs CAP_NET_ADMIN past rmem_max; a smaller buffer still works
            log.warning("cannot enlarge the udev receive buffer: %s", e)
        self._monitor.start()

    def fileno(self) -> int:
        fd: int = self._monitor.fileno()
        return fd

    def drain(self) -> list[Event]:
        out: list[Event] = []
        while len(out) < self.BATCH:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as e:
                raise Overflow(str(e)) from None
            if device is None:
                break
            action = device.action or "change"
            out.append(Event(action, device.subsystem or "", device.sys_name or ""))
        return out

    def close(self) -> None:
        try:
            self._monitor.stop()
        except Exception:
            log.debug("closing the udev monitor failed", exc_info=True)

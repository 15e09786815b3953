"""systemd notification through sdnotify: READY, RELOADING, STATUS, WATCHDOG, STOPPING."""

from __future__ import annotations

import os
import time

import sdnotify

SEND_TIMEOUT = 2.0  # seconds


class Notifier:
    """Sends sd_notify datagrams; does nothing when not started by systemd (no NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        if self._notifier is not None and self._notifier.socket is not None:
            # The datagram blocks while the receiver's queue is full (net.unix.max_dgram_qlen):
            # a busy systemd must not freeze the event loop.  A send that times out is dropped.
            self._notifier.socket.settimeout(SEND_TIMEOUT)

    @property
    def active(self) -> bool:
        return self._notifier is not None

    def send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={ascii_status(status)}")

    def reloading(self) -> None:
        # systemd ≥ 253 needs MONOTONIC_USEC with RELOADING=1 to match the reload to this signal.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={ascii_status(status)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")


def ascii_status(text: str) -> str:
    """One printable ASCII line: STATUS= ends at a newline and systemd shows it verbatim."""
    line = " ".join(text.split())
    return line.encode("ascii", "replace").decode("ascii")[:200]


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, when systemd asked this process for watchdog pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None

"""Wiring for `daxd run`: the daemon, udev, the system bus and systemd, put together."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from daxd.kernel.roots import Roots
from daxd.service.daemon import Daemon, DaemonConfig, NoSuchDevice, PolicyRejected
from daxd.service.events import EventSource
from daxd.service.notify import Notifier

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

log = logging.getLogger("daxd")


class _Controller:
    """What D-Bus callers may ask of the daemon, with the daemon's errors in D-Bus terms."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def reload(self) -> None:
        from daxd.service.dbus_api import PolicyInvalidError

        try:
            # Not RELOADING=1: the caller is typically ExecReload= (see Daemon.reload).
            await self.daemon.reload(notify_reloading=False)
        except PolicyRejected as e:
            raise PolicyInvalidError(str(e)) from None

    async def reconcile(self) -> None:
        await self.daemon.reconcile()

    async def apply(
        self, devices: list[str], offline_timeout: float | None
    ) -> Sequence[Mapping[str, Any]]:
        from daxd.service.dbus_api import NoSuchDeviceError, PolicyInvalidError

        try:
            return await self.daemon.apply(devices, offline_timeout)
        except PolicyRejected as e:
            raise PolicyInvalidError(str(e)) from None
        except NoSuchDevice as e:
            raise NoSuchDeviceError(str(e)) from None

    async def reconcile_device(
        self, device: str, offline_timeout: float | None
    ) -> Mapping[str, Any]:
        from daxd.service.dbus_api import NoSuchDeviceError

        try:
            return await self.daemon.reconcile_device(device, offline_timeout)
        except NoSuchDevice as e:
            raise NoSuchDeviceError(str(e)) from None

    def plan_records(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.plan_records()


async def _exit_without_bus(bus: MessageBus, daemon: Daemon) -> None:
    """A daemon no client can reach is of no use: when the bus connection is lost (the bus
    restarted, or dbus-fast gave up on a full socket), exit for systemd to start daxd again."""
    try:
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        reason = "disconnected"
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
    daemon.fail(f"lost the system bus ({reason})")


def setup_logging(verbose: bool) -> None:
    """Journal-friendly lines: systemd adds the time; <N> prefixes carry the priority."""
    import os

    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JournalFormatter()
        if under_systemd
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class _JournalFormatter(logging.Formatter):
    """sd-daemon(3) priority prefixes, so the journal files each line at the right level."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def run(
    *,
    roots: Roots,
    policy: Path,
    policy_dir: Path | None,
    strict_policy: bool,
    offline_timeout: float,
    use_bus: bool,
    use_udev: bool,
) -> int:
    config = DaemonConfig(
        policy_path=policy,
        roots=roots,
        policy_dir=policy_dir,
        strict_policy=strict_policy,
        offline_timeout=offline_timeout,
    )
    events: EventSource | None = None
    if use_udev:
        from daxd.service.events import UdevSource

        try:
            events = UdevSource()
        except Exception as e:  # pyudev raises several kinds; all mean "no udev here"
            log.error("cannot listen to udev: %s", e)
            return 1
    daemon = Daemon(config, events=events, notifier=Notifier())
    return asyncio.run(serve(daemon, use_bus))


async def serve(daemon: Daemon, use_bus: bool) -> int:
    """Run the daemon, published on the system bus when ``use_bus``."""
    api = None
    watchers: set[asyncio.Task[None]] = set()

    async def bus_setup(d: Daemon) -> None:
        nonlocal api
        from daxd.service.dbus_api import BusNameError, DBusApi, connect_system_bus

        try:
            bus = await connect_system_bus()
        except OSError as e:
            raise SystemExit(f"daxd: cannot connect to the system bus: {e}") from None
        api = DBusApi(_Controller(d), d.manager_status())
        d.publisher = api
        try:
            await api.start(bus)
        except BusNameError as e:
            raise SystemExit(f"daxd: {e}") from None
        watchers.add(asyncio.get_running_loop().create_task(_exit_without_bus(bus, d)))

    try:
        return await daemon.run(bus_setup if use_bus else None)
    finally:
        if api is not None:
            await api.stop()

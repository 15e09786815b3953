"""The command as a client of the running daemon: `daxd apply` asks it to do the work.

One writer at a time: while daxd.service runs it holds the writer lock, and `daxd apply` on the
running system goes through it (``org.daxd.Daxd1.Manager.Apply``) rather than writing sysfs
itself. No daemon on the bus (no bus socket, nobody owns ``org.daxd.Daxd1``): None, and the
command acts itself, under the lock.

Light on purpose: dbus-fast and daxd's bus names only, no policy language (pydantic, PyYAML) and
no udev, so that a command that leaves the work to the daemon starts fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# A conversion offlines memory block after block, each for up to its offline timeout: it can
# take minutes. The reply is awaited this long (the bus itself sets no limit on the system bus).
CALL_TIMEOUT = 24 * 3600.0
CONNECT_TIMEOUT = 10.0  # connecting and asking who owns the name: the bus answers at once

ERROR_NO_SUCH_DEVICE = "org.daxd.Daxd1.Error.NoSuchDevice"
ERROR_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
# The call never reached a daemon: the name lost its owner after NameHasOwner said it had one.
_NOT_DELIVERED = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


class DaemonError(Exception):
    """The daemon (or the bus) answered the call with a D-Bus error: ``name`` and ``text``."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


def apply_via_daemon(
    devices: Sequence[str],
    *,
    offline_timeout: float | None = None,
    call_timeout: float = CALL_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> str | None:
    """Ask the daemon to apply its policy to ``devices`` (all when empty) and wait for it.

    Returns the "apply" JSON document (daxd/apply/report.py ``document``), the same that local
    `daxd apply --json` prints, made of the daemon's records (one per device, turned back into
    entries by daxd/service/dbus_values.py) and its ``Hotplug`` and ``Diagnostics`` properties
    as they are after the apply; None when no daemon is on the system bus
    (``$DBUS_SYSTEM_BUS_ADDRESS``, else the standard socket). Raises DaemonError for an error
    reply (``org.daxd.Daxd1.Error.PolicyInvalid``, ``.NoSuchDevice``, ``.PermissionDenied``,
    ``org.freedesktop.DBus.Error.AccessDenied``, ...) or a daemon that left without answering.

    ``progress``: called with a device's properties (plain values) each time the daemon
    publishes a change of them while the apply runs.
    """
    options: dict[str, Any] = {}
    if offline_timeout is not None:
        from dbus_fast import Variant

        options["offline-timeout"] = Variant("d", float(offline_timeout))
    return asyncio.run(_apply(list(devices), options, call_timeout, connect_timeout, progress))


async def _apply(
    devices: list[str],
    options: dict[str, Any],
    call_timeout: float,
    connect_timeout: float,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> str | None:
    from dbus_fast import Message, MessageType

    from daxd.service.bus_names import (
        BUS_NAME,
        MANAGER_INTERFACE,
        MANAGER_PATH,
        connect_client,
        manager_properties,
    )

    try:
        bus = await asyncio.wait_for(connect_client(), connect_timeout)
    except Exception:  # no socket, refused, a bad address, AuthError: no daemon to ask
        return None
    try:
        try:
            owned = await asyncio.wait_for(
                bus.call(
                    Message(
                        destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus",
                        member="NameHasOwner",
                        signature="s",
                        body=[BUS_NAME],
                    )
                ),
                connect_timeout,
            )
        except Exception:  # the bus went away or does not answer: nobody to ask
            return None
        if (
            owned is None
            or owned.message_type is not MessageType.METHOD_RETURN
            or owned.body != [True]
        ):
            return None
        if progress is not None:
            await _follow_devices(bus, progress, connect_timeout)
        try:
            reply = await asyncio.wait_for(
                bus.call(
                    Message(
                        destination=BUS_NAME,
                        path=MANAGER_PATH,
                        interface=MANAGER_INTERFACE,
                        member="Apply",
                        signature="asa{sv}",
                        body=[devices, options],
                    )
                ),
                call_timeout,
            )
        except TimeoutError:
            raise DaemonError(
                "timeout", f"the daemon did not answer within {call_timeout:g} s"
            ) from None
        except Exception as e:  # dbus-fast passes on what broke the connection
            raise DaemonError(
                "disconnected", f"the bus connection broke before the daemon answered: {e}"
            ) from None
        manager = (await manager_properties(bus, connect_timeout) or {}) if _returned(reply) else {}
    finally:
        bus.disconnect()
    if reply is None:
        raise DaemonError("disconnected", "the bus connection closed before the daemon answered")
    if reply.message_type is MessageType.ERROR:
        name = reply.error_name or "unknown"
        if name in _NOT_DELIVERED:
            return None
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DaemonError(name, text)
    if reply.message_type is not MessageType.METHOD_RETURN or reply.signature != "aa{sv}":
        raise DaemonError("unexpected", f"the daemon answered Apply with {reply.signature!r}")
    records: list[dict[str, Any]] = reply.body[0]
    for record in records:
        if not {"name", "outcome"} <= set(record):
            raise DaemonError("unexpected", "the daemon answered Apply with a record lacking "
                              "name or outcome")  # fmt: skip
    return _document(records, manager)


async def _follow_devices(
    bus: Any, progress: Callable[[Mapping[str, Any]], None], timeout: float
) -> None:
    """Pass each device's properties to ``progress`` whenever the daemon changes them.

    Best effort: a progress line that cannot be had is no reason to fail the apply.
    """
    from dbus_fast import Message, MessageType

    from daxd.service.bus_names import (
        BUS_NAME,
        DEVICE_INTERFACE,
        DEVICES_PATH,
        MANAGER_PATH,
        OBJECT_MANAGER_INTERFACE,
        PROPERTIES_INTERFACE,
    )
    from daxd.service.dbus_values import unwrap

    rule = (
        f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_INTERFACE}',"
        f"member='PropertiesChanged',path_namespace='{DEVICES_PATH}'"
    )
    known: dict[str, dict[str, Any]] = {}

    def on_message(msg: Any) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.member == "PropertiesChanged"
            and msg.body
            and msg.body[0] == DEVICE_INTERFACE
        ):
            props = known.setdefault(msg.path, {})
            props.update({k: unwrap(v) for k, v in msg.body[1].items()})
            progress(props)

    try:
        objects = await asyncio.wait_for(
            bus.call(
                Message(
                    destination=BUS_NAME,
                    path=MANAGER_PATH,
                    interface=OBJECT_MANAGER_INTERFACE,
                    member="GetManagedObjects",
                )
            ),
            timeout,
        )
        if objects is not None and objects.message_type is MessageType.METHOD_RETURN:
            for path, interfaces in objects.body[0].items():
                props = interfaces.get(DEVICE_INTERFACE, {})
                known[path] = {k: unwrap(v) for k, v in props.items()}
        await asyncio.wait_for(
            bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            ),
            timeout,
        )
    except Exception:
        return
    bus.add_message_handler(on_message)


def _returned(reply: Any) -> bool:
    from dbus_fast import MessageType

    return reply is not None and reply.message_type is MessageType.METHOD_RETURN


def _document(records: list[Any], manager: dict[str, Any]) -> str:
    """The "apply" document of the daemon's answer."""
    from daxd.apply.report import document
    from daxd.service.dbus_values import apply_entries_from_dbus, hotplug_from_dbus, unwrap

    hotplug = unwrap(manager.get("Hotplug"))
    diagnostics = unwrap(manager.get("Diagnostics"))
    return document(
        "apply",
        hotplug_from_dbus(hotplug if isinstance(hotplug, dict) else {}),
        apply_entries_from_dbus(records),
        diagnostics=[str(d) for d in diagnostics] if isinstance(diagnostics, list) else [],
    )

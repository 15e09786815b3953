"""daxd's names on the bus and a plain connection: all a client needs.

Kept apart from the service's interface classes (daxd/service/dbus_objects.py), whose creation
costs the command a noticeable share of its start under emulation, so that `daxd apply` and
`daxd status` import no more than dbus-fast's client side.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

BUS_NAME = "org.daxd.Daxd1"
MANAGER_PATH = "/org/daxd/Daxd1"
DEVICES_PATH = MANAGER_PATH + "/devices"
REGIONS_PATH = MANAGER_PATH + "/regions"
MANAGER_INTERFACE = "org.daxd.Daxd1.Manager"
DEVICE_INTERFACE = "org.daxd.Daxd1.Device"
REGION_INTERFACE = "org.daxd.Daxd1.Region"
OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

ERROR_FAILED = "org.daxd.Daxd1.Error.Failed"
ERROR_POLICY_INVALID = "org.daxd.Daxd1.Error.PolicyInvalid"
ERROR_PERMISSION_DENIED = "org.daxd.Daxd1.Error.PermissionDenied"
ERROR_NO_SUCH_DEVICE = "org.daxd.Daxd1.Error.NoSuchDevice"

DEFAULT_SYSTEM_BUS_ADDRESS = "unix:path=/run/dbus/system_bus_socket"


def system_bus_address(address: str | None = None) -> str:
    """``address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the standard system bus."""
    return address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS_ADDRESS


async def connect_client(address: str | None = None) -> Any:
    """A client's connection to the system bus (a dbus-fast aio MessageBus)."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    return await MessageBus(
        bus_address=system_bus_address(address), bus_type=BusType.SYSTEM
    ).connect()


async def manager_properties(bus: Any, timeout: float) -> dict[str, Any] | None:
    """The manager's properties as dbus-fast Variants, or None when the daemon does not say."""
    from dbus_fast import Message, MessageType

    try:
        reply = await asyncio.wait_for(
            bus.call(
                Message(
                    destination=BUS_NAME,
                    path=MANAGER_PATH,
                    interface=PROPERTIES_INTERFACE,
                    member="GetAll",
                    signature="s",
                    body=[MANAGER_INTERFACE],
                )
            ),
            timeout,
        )
    except Exception:
        return None
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
        return None
    if reply.signature != "a{sv}":
        return None
    properties: dict[str, Any] = reply.body[0]
    return properties

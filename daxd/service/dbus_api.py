"""daxd's D-Bus API on the system bus (``org.daxd.Daxd1``), on top of dbus-fast's asyncio bus.

The daemon owns the state; this module only publishes it and forwards requests:

    bus = await connect_system_bus()            # honours DBUS_SYSTEM_BUS_ADDRESS
    api = DBusApi(controller, manager_status)   # controller: see Controller
    api.set_device(device_status)               # may be called before start() too
    await api.start(bus)                        # exports the objects, then takes the name
    ...
    api.set_manager(status)                     # PropertiesChanged with only what changed
    api.set_device(status)                      # new: object + InterfacesAdded; else the diff
    api.remove_device("dax0.0")                 # object gone + InterfacesRemoved
    api.set_region(region_status)               # a region of the policy: as set_device
    api.remove_region("pair")
    api.action_completed("dax0.0", "online", "ok", "")
    ...
    await api.stop()

All of ``set_*``/``remove_*``/``action_completed`` are plain synchronous calls that must be
made from the event loop thread that runs the bus.

Objects: ``/org/daxd/Daxd1`` is the ``org.freedesktop.DBus.ObjectManager`` and carries
``org.daxd.Daxd1.Manager``; each device is ``/org/daxd/Daxd1/devices/<escaped name>`` with
``org.daxd.Daxd1.Device`` (see :func:`device_object_path`); each region of the policy is
``/org/daxd/Daxd1/regions/<escaped name>`` with ``org.daxd.Daxd1.Region`` (see
:func:`region_object_path`).

dbus-fast treats every exported path as an object manager of its own and, on export/unexport,
emits ``InterfacesAdded``/``InterfacesRemoved`` from the exported object's own path (and for the
manager object itself).  Clients such as GDBusObjectManagerClient and sd-bus only listen on the
manager's path, so this module suppresses those and emits the signals itself, from
``/org/daxd/Daxd1``, for device and region objects only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dbus_fast import (
    BusType,
    DBusError,
    ErrorType,
    Message,
    MessageFlag,
    MessageType,
    NameFlag,
    RequestNameReply,
    Variant,
)
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as aio_message_bus
from dbus_fast.service import ServiceInterface

from daxd import __version__
from daxd.service.bus_names import (
    BUS_NAME,
    DEVICE_INTERFACE,
    DEVICES_PATH,
    ERROR_FAILED,
    ERROR_NO_SUCH_DEVICE,
    ERROR_PERMISSION_DENIED,
    ERROR_POLICY_INVALID,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    OBJECT_MANAGER_INTERFACE,
    REGION_INTERFACE,
    REGIONS_PATH,
    system_bus_address,
)
from daxd.service.dbus_objects import (
    GENERIC_FAILURE,
    DeviceInterface,
    InvalidOptionsError,
    ManagerInterface,
    NoSuchDeviceError,
    PolicyInvalidError,
    RegionInterface,
    RegionValues,
    StatusInterface,
    checked_options,
    method_signatures,
)
from daxd.service.dbus_values import to_dbus
from daxd.service.malloc import pin_thresholds
from daxd.service.status import DeviceStatus, ManagerStatus

if TYPE_CHECKING:
    from daxd.service.regions import RegionStatus

__all__ = [
    "BUS_NAME",
    "DEVICES_PATH",
    "DEVICE_INTERFACE",
    "ERROR_FAILED",
    "ERROR_NO_SUCH_DEVICE",
    "ERROR_PERMISSION_DENIED",
    "ERROR_POLICY_INVALID",
    "MANAGER_INTERFACE",
    "MANAGER_PATH",
    "REGIONS_PATH",
    "REGION_INTERFACE",
    "BusNameError",
    "Controller",
    "DBusApi",
    "NoSuchDeviceError",
    "PolicyInvalidError",
    "connect_system_bus",
    "device_object_path",
    "region_name",
    "region_object_path",
]

POLICY_FILE = "/usr/share/dbus-1/system.d/org.daxd.Daxd1.conf"

# Methods that change the system: only uid 0 may call them (the bus policy says so too).
PRIVILEGED_METHODS = frozenset(
    {
        (MANAGER_INTERFACE, "Reload"),
        (MANAGER_INTERFACE, "Reconcile"),
        (MANAGER_INTERFACE, "Apply"),
        (DEVICE_INTERFACE, "Reconcile"),
    }
)
_MAX_APPLY_DEVICES = 4096

_MAX_ERROR_TEXT = 16 * 1024
_PEER_INTERFACE = "org.freedesktop.DBus.Peer"
_PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
# D-Bus names are at most 255 characters; none of daxd's object paths is longer than this.
_MAX_NAME = 255
_MAX_PATH = 1024
# The arguments of any method call daxd receives, as on the wire: calls over these limits are
# refused with InvalidArgs before anything reads them (nothing is quoted back, nothing kept).
# The largest call daxd needs is Manager.Apply(as, a{sv}) with at most 4096 device names of at
# most 255 characters: about 1 MiB, half the total allowed.  Properties names are held to
# _MAX_NAME further down.
_MAX_ARGS_SIZE = 2 << 20  # bytes in all
_MAX_STRING = 4096  # characters in one string, object path or signature (PATH_MAX)
_MAX_ITEMS = 4096  # entries in one array or dict
_TOO_LARGE = (
    f"arguments too large: daxd takes at most {_MAX_ARGS_SIZE >> 20} MiB of arguments, "
    f"strings of at most {_MAX_STRING} characters and arrays of at most {_MAX_ITEMS} entries"
)
# After a message this large, dbus-fast's reader is made to let go of it (see _release_reader).
_RELEASE_SIZE = 256 << 10
# Messages dbus-fast's reader handles before the event loop gets a turn (see _ReaderInTurns).
_READ_BATCH = 32
_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_PATH_CHARS = frozenset(string.ascii_letters + string.digits)
_HEX = frozenset("0123456789abcdef")
_OWN_INTERFACES = frozenset({MANAGER_INTERFACE, DEVICE_INTERFACE, REGION_INTERFACE})

_log = logging.getLogger(__name__)


class Controller(Protocol):
    """What the D-Bus API needs from the daemon."""

    async def reload(self) -> None:
        """Re-read the policy and apply it; raise PolicyInvalidError if it cannot be used."""

    async def reconcile(self) -> None:
        """Re-scan the devices and apply the policy in force."""

    async def apply(
        self, devices: list[str], offline_timeout: float | None
    ) -> Sequence[Mapping[str, Any]]:
        """Take the policy on disk, reconcile the devices (all when none), return the apply
        entries (daxd/apply/report.py result_entry); PolicyInvalidError / NoSuchDeviceError
        when it cannot."""

    async def reconcile_device(
        self, device: str, offline_timeout: float | None
    ) -> Mapping[str, Any]:
        """Reconcile one device with the policy in force, as asked for; its apply entry.
        NoSuchDeviceError when the dax bus does not have it."""

    def plan_records(self) -> Sequence[Mapping[str, Any]]:
        """What reconciling now would do, one plain record per step (Manager.Plan's keys;
        None: left out), as of the last pass; must not read or change anything.  The same
        object until the plan changes (the API converts it once)."""


class BusNameError(RuntimeError):
    """``org.daxd.Daxd1`` could not be owned (another daxd runs, or the bus policy forbids it)."""


def device_object_path(name: str) -> str:
    """The object path of a device: ``dax0.0`` -> ``/org/daxd/Daxd1/devices/dax0_0``.

    ``.`` becomes ``_``; any other character an object path cannot hold becomes ``_xx`` per
    UTF-8 byte (lower-case hex).  Clients should read the ``Name`` property rather than decode.
    """
    if not name:
        raise ValueError("a device name cannot be empty")
    parts: list[str] = []
    for char in name:
        if char in _PATH_CHARS:
            parts.append(char)
        elif char == ".":
            parts.append("_")
        else:
            parts.extend(f"_{byte:02x}" for byte in char.encode())
    return f"{DEVICES_PATH}/{''.join(parts)}"


def region_object_path(name: str) -> str:
    """The object path of a policy region: ``/org/daxd/Daxd1/regions/<escaped name>``.

    As sd_bus_path_encode(): every UTF-8 byte outside [A-Za-z0-9] becomes ``_xx`` (lower-case
    hex), ``_`` itself included, and the empty name ``_``; so the path is one valid element for
    any name and :func:`region_name` gives the name back.  ``cxl pair`` -> ``cxl_20pair``.
    """
    if not name:
        return f"{REGIONS_PATH}/_"
    parts = [chr(byte) if chr(byte) in _PATH_CHARS else f"_{byte:02x}" for byte in name.encode()]
    return f"{REGIONS_PATH}/{''.join(parts)}"


def region_name(path: str) -> str:
    """The region name of :func:`region_object_path`'s ``path`` (sd_bus_path_decode());
    ValueError for a path it does not make."""
    prefix = REGIONS_PATH + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path[:64]!r} is not below {REGIONS_PATH}")
    element = path[len(prefix) :]
    if element == "_":
        return ""
    out = bytearray()
    i = 0
    try:
        while i < len(element):
            escaped = element[i + 1 : i + 3]
            if element[i] in _PATH_CHARS:
                out.append(ord(element[i]))
                i += 1
            elif element[i] == "_" and len(escaped) == 2 and set(escaped) <= _HEX:
                out.append(int(escaped, 16))
                i += 3
            else:
                raise ValueError(element)
        name: str | None = out.decode()
    except ValueError:  # UnicodeDecodeError too
        name = None
    # One path per name: "_41" is not "A", nor "__" the empty name.
    if name is None or region_object_path(name) != path:
        raise ValueError(f"{path[:64]!r} is not the path of a region")
    return name


def _machine_id() -> str | None:
    """This machine's D-Bus id (sd-id128 / dbus-uuidgen format), or None."""
    for name in _MACHINE_ID_FILES:
        try:
            with open(name, encoding="ascii") as f:
                value = f.read(64).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[0-9a-f]{32}", value):
            return value
    return None


async def connect_system_bus(address: str | None = None) -> MessageBus:
    """Connect to ``address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the standard system bus."""
    bus = MessageBus(bus_address=system_bus_address(address), bus_type=BusType.SYSTEM)
    with _reading_in_turns(bus):
        await bus.connect()
    _tolerate_full_socket(bus)
    return bus


@contextlib.contextmanager
def _reading_in_turns(bus: MessageBus) -> Iterator[None]:
    """While ``bus`` connects, have its socket read by :class:`_ReaderInTurns`.

    dbus-fast's reader (5.x) goes on handling messages for as long as its buffer holds the
    start of another one, which under a flood of calls from any local user is for as long as
    the flood lasts: udev events, timers, the watchdog and the worker thread's results all
    waited (a device hot-added during a 12 s flood was applied after it, instead of 0.1 s
    after its uevent).  dbus-fast makes its reader while it connects, with the module's
    ``build_message_reader``: that is where it is swapped.
    """
    module = vars(aio_message_bus)
    original = module.get("build_message_reader")
    if original is None:
        _log.debug("dbus-fast reader not found; the loop may starve under a flood")
        yield
        return

    def build(
        sock: socket.socket | None,
        process: Callable[[Message], None],
        finalize: Callable[[Exception | None], None],
        negotiate_unix_fd: bool,
    ) -> Callable[[], None]:
        reader: Callable[[], None] = original(sock, process, finalize, negotiate_unix_fd)
        args = reader.args if isinstance(reader, functools.partial) else ()
        unmarshaller = args[0] if args else None
        if sock is None or not callable(getattr(unmarshaller, "unmarshall", None)):
            _log.debug("dbus-fast reader not recognised; the loop may starve under a flood")
            return reader
        return _ReaderInTurns(bus, sock.fileno(), unmarshaller, process, finalize).readable

    module["build_message_reader"] = build
    try:
        yield
    finally:
        module["build_message_reader"] = original


class _ReaderInTurns:
    """dbus-fast's reader, but at most _READ_BATCH messages at a time, and at most half the time.

    After a full batch (the caller is flooding), the socket is left alone for as long as that
    batch took: udev events, timers and the worker thread (which needs the GIL the loop thread
    holds while it answers calls) get the other half, and so do the other processes on the
    machine, the flooding clients included, which then send less.
    """

    def __init__(
        self,
        bus: MessageBus,
        fd: int,
        unmarshaller: Any,
        process: Callable[[Message], None],
        finalize: Callable[[Exception | None], None],
    ) -> None:
        self._bus = bus
        self._fd = fd
        self._unmarshaller = unmarshaller
        self._process = process
        self._finalize = finalize

    def readable(self) -> None:
        """The socket is readable (asyncio's reader callback)."""
        start = time.monotonic()
        try:
            for _ in range(_READ_BATCH):
                message = self._unmarshaller.unmarshall()
                if message is None:  # the socket has nothing more for now
                    return
                try:
                    self._process(message)
                except Exception:
                    _log.exception("unexpected error while handling a D-Bus message")
        except Exception as exc:  # the connection is lost or broken: what dbus-fast does
            self._finalize(exc)
            return
        if self._bus.connected:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.call_later(time.monotonic() - start, self._resume)

    def _resume(self) -> None:
        if self._bus.connected:  # else dbus-fast has removed its reader for good
            asyncio.get_running_loop().add_reader(self._fd, self.readable)
            self.readable()  # what is read already does not make the socket readable


class _SendWhenWritable:
    """The bus socket, with "would block" turned into "sent nothing yet".

    dbus-fast's writer (2.x to 5.x, inherited from dbus-next) takes EAGAIN from a full socket
    buffer as a broken connection and drops off the bus: a burst of reads by any local user
    would take daxd off the bus for good.  Reporting 0 bytes sent instead makes the writer keep
    the message and wait for the socket to become writable, which is what it does for short
    writes.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            sent: int = self._sock.send(data)
        except BlockingIOError:
            return 0
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _tolerate_full_socket(bus: MessageBus) -> None:
    writer = getattr(bus, "_writer", None)
    if writer is not None and hasattr(writer, "sock"):
        writer.sock = _SendWhenWritable(writer.sock)
    else:  # a dbus-fast without that writer: the daemon's disconnect watch still restarts it
        _log.debug("dbus-fast writer not found; full-socket tolerance not installed")


def _export_quietly(bus: MessageBus, path: str, interface: ServiceInterface) -> None:
    """``bus.export()`` without dbus-fast's own (wrongly placed) ``InterfacesAdded``.

    dbus-fast skips that signal while the bus counts as disconnected; ``export`` is synchronous,
    so nothing else can observe the flag in between.
    """
    was_disconnected = bus._disconnected
    bus._disconnected = True
    try:
        bus.export(path, interface)
    finally:
        bus._disconnected = was_disconnected


def _unexport_quietly(bus: MessageBus, path: str, interface: ServiceInterface) -> None:
    """``bus.unexport()`` without dbus-fast's own ``InterfacesRemoved`` (see above)."""
    was_disconnected = bus._disconnected
    bus._disconnected = True
    try:
        bus.unexport(path, interface)
    finally:
        bus._disconnected = was_disconnected


def _wire_size(body: list[Any], limit: int) -> int:
    """Roughly the bytes ``body`` takes on the wire, or more than ``limit`` if it is over it.

    Stops counting as soon as the count passes ``limit`` or one string or array passes its own
    limit, so a 20 MiB string or a million-entry array costs one ``len()``.  Every value counts
    at least 4 bytes, so the walk is never longer than what dbus-fast already unmarshalled.
    """
    size = 0
    pending: list[Any] = list(body)
    while pending:
        value = pending.pop()
        if isinstance(value, str):  # s, o, g
            if len(value) > _MAX_STRING:
                return limit + 1
            size += 5 + len(value)
        elif isinstance(value, bytes | bytearray):  # ay
            size += 4 + len(value)
        elif isinstance(value, Variant):
            size += 3 + len(value.signature)
            pending.append(value.value)
        elif isinstance(value, dict):
            if len(value) > _MAX_ITEMS:
                return limit + 1
            size += 4 + 8 * len(value)
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):  # arrays and structs
            if len(value) > _MAX_ITEMS:
                return limit + 1
            size += 4
            pending.extend(value)
        else:  # numbers, booleans, fd indexes
            size += 8
        if size > limit:
            return size
    return size


def _checked_values(interface: StatusInterface, what: str) -> dict[str, Variant]:
    """The wire values, or ValueError when one does not fit its D-Bus type."""
    try:
        return interface.dbus_values()
    except Exception as exc:
        raise ValueError(f"{what} cannot be published: {exc}") from exc


def _changed(old: dict[str, Variant], new: dict[str, Variant]) -> dict[str, Any]:
    """Properties whose value differs, as plain values for ``emit_properties_changed``."""
    return {name: value.value for name, value in new.items() if old.get(name) != value}


class DBusApi:
    """Publishes daxd's state on D-Bus and forwards Reload/Reconcile/Plan to a Controller."""

    def __init__(self, controller: Controller, manager: ManagerStatus | None = None) -> None:
        self._controller = controller
        self._manager = ManagerInterface(
            manager or ManagerStatus(__version__, "", "", 0, ""), controller.plan_records
        )
        _checked_values(self._manager, "the manager status")  # fail here, not in GetAll
        self._devices: dict[str, DeviceInterface] = {}  # by object path
        self._paths: dict[str, str] = {}  # device name -> object path
        self._regions: dict[str, RegionInterface] = {}  # by object path (one per name)
        self._bus: MessageBus | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._method_signatures = self._own_method_signatures()
        self._releasing = False  # a _release_reader() round trip is under way

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def bus(self) -> MessageBus | None:
        """The bus the API is exported on, ``None`` when not started."""
        return self._bus

    async def start(self, bus: MessageBus) -> None:
        """Export every object on ``bus``, then request ``org.daxd.Daxd1``.

        Raises BusNameError (with everything undone) when the name cannot be owned.
        """
        if self._bus is not None:
            raise RuntimeError("the D-Bus API is already started")
        pin_thresholds()  # before the first message: see daxd/service/malloc.py
        self._bus = bus
        bus.add_message_handler(self._filter)
        _export_quietly(bus, MANAGER_PATH, self._manager)
        for path, device in self._devices.items():
            _export_quietly(bus, path, device)
        for path, region in self._regions.items():
            _export_quietly(bus, path, region)
        try:
            reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:
            self._detach(bus)
            if exc.type == ErrorType.ACCESS_DENIED.value:
                raise BusNameError(
                    f"the bus does not let this process own {BUS_NAME}: {exc.text} "
                    f"(daxd must run as root and {POLICY_FILE} must be installed)"
                ) from None
            raise BusNameError(f"could not request {BUS_NAME}: {exc.type}: {exc.text}") from None
        except BaseException:
            self._detach(bus)
            raise
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            owner = await self._name_owner(bus)
            self._detach(bus)
            raise BusNameError(
                f"{BUS_NAME} is already owned by {owner or 'another connection'} "
                f"({reply.name}); is another daxd running?"
            )
        _log.info("D-Bus API ready as %s on %s", BUS_NAME, bus.unique_name)

    async def stop(self) -> None:
        """Release the name and remove every object (no signals: clients see the name go).

        Reload/Reconcile calls in flight are not cancelled (the controller's work is the
        daemon's to stop); their replies are dropped.
        """
        bus = self._bus
        if bus is None:
            return
        if bus.connected:
            try:
                await bus.release_name(BUS_NAME)
            except Exception:
                _log.warning("could not release %s", BUS_NAME, exc_info=True)
        self._detach(bus)

    def _detach(self, bus: MessageBus) -> None:
        bus.remove_message_handler(self._filter)
        _unexport_quietly(bus, MANAGER_PATH, self._manager)
        for path, device in self._devices.items():
            _unexport_quietly(bus, path, device)
        for path, region in self._regions.items():
            _unexport_quietly(bus, path, region)
        self._bus = None

    @staticmethod
    async def _name_owner(bus: MessageBus) -> str:
        try:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="GetNameOwner",
                    signature="s",
                    body=[BUS_NAME],
                )
            )
        except Exception:
            return ""
        if reply.message_type != MessageType.METHOD_RETURN:
            return ""
        return str(reply.body[0])

    # -- state pushed in by the daemon -------------------------------------------------------

    @property
    def device_names(self) -> list[str]:
        return [device.status.name for device in self._devices.values()]

    def published_device(self, name: str) -> DeviceStatus | None:
        """What is published of device ``name``; None when it has no object."""
        path = self._paths.get(name)
        return None if path is None else self._devices[path].status

    def set_manager(self, status: ManagerStatus) -> None:
        """Publish the daemon's own status; emits PropertiesChanged with what changed."""
        old = self._manager.dbus_values()
        previous = self._manager.status
        self._manager.status = status
        try:
            new = _checked_values(self._manager, "the manager status")
        except ValueError:
            self._manager.status = previous
            raise
        self._emit_changed(self._manager, old, new)

    def set_device(self, status: DeviceStatus) -> None:
        """Add or update a device.

        A new device gets its object and ``InterfacesAdded`` (from ``/org/daxd/Daxd1``) plus a
        ``Devices`` change on the manager; a known one gets ``PropertiesChanged`` with only the
        properties whose value changed (nothing when nothing changed).  Values that do not fit
        their D-Bus type (e.g. a negative size) raise ValueError and change nothing.
        """
        path = device_object_path(status.name)
        device = self._devices.get(path)
        if device is not None and device.status.name != status.name:
            raise ValueError(
                f"devices {device.status.name!r} and {status.name!r} map to the same object path"
            )
        if device is None:
            device = DeviceInterface(status)
            values = _checked_values(device, f"device {status.name!r}")
            self._devices[path] = device
            self._paths[status.name] = path
            if self._bus is not None:
                _export_quietly(self._bus, path, device)
                self._send_object_manager_signal(
                    "InterfacesAdded", "oa{sa{sv}}", [path, {DEVICE_INTERFACE: values}]
                )
            self._publish_devices()
            return
        old = device.dbus_values()
        previous = device.status
        device.status = status
        try:
            new = _checked_values(device, f"device {status.name!r}")
        except ValueError:
            device.status = previous
            raise
        self._emit_changed(device, old, new)

    def remove_device(self, name: str) -> None:
        """Remove a device's object (``InterfacesRemoved``); unknown names are ignored."""
        path = self._paths.pop(name, None)
        if path is None:
            return
        device = self._devices.pop(path)
        if self._bus is not None:
            _unexport_quietly(self._bus, path, device)
            self._send_object_manager_signal("InterfacesRemoved", "oas", [path, [DEVICE_INTERFACE]])
        self._publish_devices()

    @property
    def region_names(self) -> list[str]:
        return [region.values.name for region in self._regions.values()]

    def published_region(self, name: str) -> RegionValues | None:
        """What is published of the policy region ``name``; None when it has no object."""
        region = self._regions.get(region_object_path(name))
        return None if region is None else region.values

    def set_region(self, status: RegionStatus) -> None:
        """Add or update a region of the policy, as :meth:`set_device` does a device (without a
        manager property listing them: the ObjectManager does).  ValueError, and nothing
        changed, for values that do not fit their D-Bus type or a name whose path is longer
        than the Properties calls daxd answers."""
        values = RegionValues.of(status)
        path = region_object_path(status.name)
        if len(path) > _MAX_PATH:
            raise ValueError(f"region {status.name[:64]!r}: its object path is too long")
        region = self._regions.get(path)
        if region is None:
            region = RegionInterface(values)
            wire = _checked_values(region, f"region {status.name!r}")
            self._regions[path] = region
            if self._bus is not None:
                _export_quietly(self._bus, path, region)
                self._send_object_manager_signal(
                    "InterfacesAdded", "oa{sa{sv}}", [path, {REGION_INTERFACE: wire}]
                )
            return
        old = region.dbus_values()
        previous = region.values
        region.values = values
        try:
            new = _checked_values(region, f"region {status.name!r}")
        except ValueError:
            region.values = previous
            raise
        self._emit_changed(region, old, new)

    def remove_region(self, name: str) -> None:
        """Remove a region's object (``InterfacesRemoved``); unknown names are ignored."""
        path = region_object_path(name)
        region = self._regions.pop(path, None)
        if region is None:
            return
        if self._bus is not None:
            _unexport_quietly(self._bus, path, region)
            self._send_object_manager_signal("InterfacesRemoved", "oas", [path, [REGION_INTERFACE]])

    def action_completed(self, device: str, action: str, result: str, message: str) -> None:
        """Emit ``ActionCompleted(device, action, result, message)`` on the manager object."""
        if self._bus is not None:
            try:
                self._manager.ActionCompleted(device, action, result, message)
            except Exception:
                _log.warning("could not emit ActionCompleted for %s", device, exc_info=True)

    def _publish_devices(self) -> None:
        old = self._manager.dbus_values()
        self._manager.device_paths = sorted(self._devices)
        self._emit_changed(self._manager, old, self._manager.dbus_values())

    def _emit_changed(
        self, interface: ServiceInterface, old: dict[str, Variant], new: dict[str, Variant]
    ) -> None:
        changed = _changed(old, new)
        if changed and self._bus is not None:
            try:
                interface.emit_properties_changed(changed)
            except Exception:
                _log.warning(
                    "could not emit PropertiesChanged on %s", interface.name, exc_info=True
                )

    def _send_object_manager_signal(self, member: str, signature: str, body: list[Any]) -> None:
        assert self._bus is not None
        try:
            self._bus.send(
                Message.new_signal(MANAGER_PATH, OBJECT_MANAGER_INTERFACE, member, signature, body)
            )
        except Exception:
            _log.warning("could not emit %s for %s", member, body[0], exc_info=True)

    # -- incoming calls that dbus-fast cannot route the way we need ---------------------------

    @staticmethod
    def _own_method_signatures() -> dict[tuple[str, str], str]:
        """(interface, method) -> input signature, of the manager's and a device's methods."""
        return {
            (interface, name): signature
            for interface, cls in (
                (MANAGER_INTERFACE, ManagerInterface),
                (DEVICE_INTERFACE, DeviceInterface),
            )
            for name, signature in method_signatures(cls).items()
        }

    def _filter(self, msg: Message) -> bool:
        """Runs before dbus-fast's dispatch for every incoming message; True = answered here."""
        size = _wire_size(msg.body, _MAX_ARGS_SIZE) if msg.body else 0
        if size > _RELEASE_SIZE:
            self._release_reader()
        if msg.message_type != MessageType.METHOD_CALL or msg.path is None or msg.member is None:
            return False
        if size > _MAX_ARGS_SIZE:
            msg.body = []  # dbus-fast's reader keeps the last message until the next one
            self._reply(msg, Message.new_error(msg, ErrorType.INVALID_ARGS.value, _TOO_LARGE))
            return True
        if msg.interface == _PEER_INTERFACE and msg.member == "GetMachineId" and not msg.signature:
            # dbus-fast would ask the bus, which the system bus policy forbids, and pass the
            # refusal -- this process's pid, uid and command line -- back to the caller.
            machine_id = _machine_id()
            self._reply(
                msg,
                Message.new_method_return(msg, "s", [machine_id])
                if machine_id is not None
                else Message.new_error(msg, ERROR_FAILED, "this machine has no machine id"),
            )
            return True
        if msg.interface == _PROPERTIES_INTERFACE and (
            len(msg.path) > _MAX_PATH
            or any(isinstance(arg, str) and len(arg) > _MAX_NAME for arg in msg.body[:2])
        ):
            # dbus-fast's errors quote the path and names back: a caller sending 30 MiB of
            # them got 30 MiB errors, and a few of those knocked daxd off the bus.
            self._reply(
                msg,
                Message.new_error(
                    msg,
                    ErrorType.INVALID_ARGS.value,
                    f"interface and property names have at most {_MAX_NAME} characters",
                ),
            )
            return True
        if (
            msg.interface == _PROPERTIES_INTERFACE
            and msg.member == "GetAll"
            and msg.signature == "s"
            and msg.body[0] == ""
        ):
            # The specification lets an empty interface name mean every interface; dbus-fast
            # answers NotSupported.
            self._reply(msg, self._get_all(msg))
            return True
        if msg.path == MANAGER_PATH:
            own = MANAGER_INTERFACE
        elif msg.path in self._devices:
            own = DEVICE_INTERFACE
        elif msg.path in self._regions:
            own = REGION_INTERFACE
        else:
            return False
        interface = msg.interface or own
        if interface in _OWN_INTERFACES and interface != own:
            # Each object has its own interface's methods: a device object must not answer
            # Manager.Reload, nor the manager or a region Device.Reconcile (dbus-fast says no
            # such method).
            return False
        expected = self._method_signatures.get((interface, msg.member))
        if expected is None:
            return False
        if msg.signature != expected:
            self._reply(
                msg,
                Message.new_error(
                    msg,
                    ErrorType.INVALID_ARGS.value,
                    f"{interface}.{msg.member} takes arguments of type '{expected}', "
                    f"not '{msg.signature}'",
                ),
            )
            return True
        if (interface, msg.member) in PRIVILEGED_METHODS:
            task = asyncio.get_running_loop().create_task(self._privileged_call(msg, interface))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        return False

    def _get_all(self, msg: Message) -> Message:
        """Properties.GetAll(""): every property of every interface at ``msg.path``."""
        path = msg.path or ""
        interface: StatusInterface | None = self._manager if path == MANAGER_PATH else None
        if interface is None:
            interface = self._devices.get(path)
        if interface is None:
            interface = self._regions.get(path)
        if interface is None:
            return Message.new_error(msg, ErrorType.UNKNOWN_OBJECT.value, "no object at this path")
        try:
            values = interface.dbus_values()  # the standard interfaces have no properties
        except Exception:
            _log.exception("D-Bus GetAll failed")
            return Message.new_error(msg, ERROR_FAILED, GENERIC_FAILURE)
        return Message.new_method_return(msg, "a{sv}", [values])

    def _release_reader(self) -> None:
        """Make dbus-fast's reader let go of the large message it has just read.

        Its unmarshaller keeps the last message and the raw bytes it came in (twice the
        argument's size: 40 MiB for a 20 MiB string) until the next message arrives, which on
        a quiet system bus may be hours away.  Any reply will do: ask the bus for its id.  One
        round trip at a time: whatever arrives while it is under way is followed by its reply.
        """
        bus = self._bus
        if bus is None or self._releasing:
            return
        self._releasing = True

        async def round_trip() -> None:
            try:
                await bus.call(
                    Message(
                        destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus",
                        member="GetId",
                    )
                )
            except Exception:
                _log.debug("GetId after a large message failed", exc_info=True)
            finally:
                self._releasing = False

        task = asyncio.get_running_loop().create_task(round_trip())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _privileged_call(self, msg: Message, interface: str) -> None:
        try:
            if not await self._sent_by_root(msg):
                reply = Message.new_error(
                    msg, ERROR_PERMISSION_DENIED, f"{msg.member} is only allowed for root"
                )
            else:
                reply = await self._privileged(msg, interface)
        except InvalidOptionsError as exc:
            reply = Message.new_error(msg, ErrorType.INVALID_ARGS.value, str(exc))
        except PolicyInvalidError as exc:
            reply = Message.new_error(msg, ERROR_POLICY_INVALID, exc.text[:_MAX_ERROR_TEXT])
        except NoSuchDeviceError as exc:
            reply = Message.new_error(msg, ERROR_NO_SUCH_DEVICE, str(exc)[:_MAX_ERROR_TEXT])
        except Exception:
            _log.exception("D-Bus %s() failed", msg.member)
            reply = Message.new_error(msg, ERROR_FAILED, GENERIC_FAILURE)
        self._reply(msg, reply)

    async def _privileged(self, msg: Message, interface: str) -> Message:
        """A root's call, signature checked: the controller's answer (errors raise)."""
        member = msg.member or ""
        options = checked_options(interface, member, msg.body[-1])
        timeout = options.get("offline-timeout")
        if interface == DEVICE_INTERFACE:  # Reconcile
            device = self._devices.get(msg.path or "")
            if device is None:  # removed while the uid was asked for
                raise NoSuchDeviceError(f"no such DAX device: {msg.path}")
            entry = await self._controller.reconcile_device(device.status.name, timeout)
            return Message.new_method_return(msg, "a{sv}", [to_dbus(entry)])
        if member == "Apply":
            return await self._apply(msg, timeout)
        if member == "Reload":
            await self._controller.reload()
        else:
            await self._controller.reconcile()
        return Message.new_method_return(msg)

    async def _apply(self, msg: Message, offline_timeout: float | None) -> Message:
        devices = msg.body[0]
        if len(devices) > _MAX_APPLY_DEVICES or any(len(d) > _MAX_NAME for d in devices):
            return Message.new_error(
                msg,
                ErrorType.INVALID_ARGS.value,
                f"Apply takes at most {_MAX_APPLY_DEVICES} device names of at most "
                f"{_MAX_NAME} characters",
            )
        entries = await self._controller.apply(list(devices), offline_timeout)
        return Message.new_method_return(msg, "aa{sv}", [[to_dbus(e) for e in entries]])

    async def _sent_by_root(self, msg: Message) -> bool:
        """Ask the bus who sent ``msg``; anything but uid 0 (or not knowing) is refused."""
        bus = self._bus
        uid: int | None = None
        why = "no sender"
        if bus is not None and msg.sender:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="GetConnectionUnixUser",
                    signature="s",
                    body=[msg.sender],
                )
            )
            if reply.message_type == MessageType.METHOD_RETURN:
                uid = int(reply.body[0])
                why = f"uid {uid}"
            else:  # typically: the caller has disconnected already
                why = f"uid unknown: {reply.error_name}"
        if uid != 0:
            _log.warning("refused D-Bus %s() from %s (%s)", msg.member, msg.sender, why)
        return uid == 0

    def _reply(self, msg: Message, reply: Message) -> None:
        bus = self._bus
        if bus is None or not bus.connected or msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return
        bus.send(reply)

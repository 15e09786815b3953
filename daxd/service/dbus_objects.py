"""The D-Bus objects daxd exports: names, error names and the two service interfaces.

No ``from __future__ import annotations`` here on purpose: dbus-fast reads the D-Bus signature
from each member's annotations at class-creation time.  The signatures are written as
plain signature strings ("s", "ao") at run time, which every dbus-fast reads (Debian 13 ships
2.44, PyPI 5.x), and as the matching Python types for mypy (see the TYPE_CHECKING block).

The interfaces only hold values; :mod:`daxd.service.dbus_api` decides what to publish and when.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbus_fast import DBusError, PropertyAccess, Variant
from dbus_fast.service import ServiceInterface, dbus_property, method, signal

from daxd.service.status import DeviceStatus, ManagerStatus

BUS_NAME = "org.daxd.Daxd1"
MANAGER_PATH = "/org/daxd/Daxd1"
DEVICES_PATH = MANAGER_PATH + "/devices"
MANAGER_INTERFACE = "org.daxd.Daxd1.Manager"
DEVICE_INTERFACE = "org.daxd.Daxd1.Device"
OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"

ERROR_FAILED = "org.daxd.Daxd1.Error.Failed"
ERROR_POLICY_INVALID = "org.daxd.Daxd1.Error.PolicyInvalid"
ERROR_PERMISSION_DENIED = "org.daxd.Daxd1.Error.PermissionDenied"
ERROR_NO_SUCH_DEVICE = "org.daxd.Daxd1.Error.NoSuchDevice"

GENERIC_FAILURE = "daxd failed to handle the request; the daemon's log has the details"

if TYPE_CHECKING:
    DBusStr = str
    DBusInt32 = int
    DBusUInt32 = int
    DBusUInt64 = int
    DBusObjectPaths = list[str]
    DBusStrings = list[str]
    DBusOptions = dict[str, Variant]
    ActionCompletedArgs = list[str]
else:
    DBusStr = "s"
    DBusInt32 = "i"
    DBusUInt32 = "u"
    DBusUInt64 = "t"
    DBusObjectPaths = "ao"
    DBusStrings = "as"
    DBusOptions = "a{sv}"
    ActionCompletedArgs = "ssss"

_log = logging.getLogger(__name__)


class PolicyInvalidError(Exception):
    """The policy cannot be used; ``text`` lists the located errors (``file:line:col: what``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoSuchDeviceError(Exception):
    """Apply named a device that does not exist; ``str()`` names it."""


class StatusInterface(ServiceInterface):
    """A service interface whose properties are all read-only views of one status value."""

    def dbus_values(self) -> dict[str, Variant]:
        """Every property as it goes on the wire (GetAll, InterfacesAdded)."""
        return {
            prop.name: Variant(prop.signature, getattr(self, prop.name))
            for prop in self.introspect().properties
        }


class DeviceInterface(StatusInterface):
    """``org.daxd.Daxd1.Device``: what daxd knows and wants about one DAX device."""

    def __init__(self, status: DeviceStatus) -> None:
        super().__init__(DEVICE_INTERFACE)
        self.status = status

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.status.name

    @dbus_property(access=PropertyAccess.READ)
    def Provider(self) -> DBusStr:
        return self.status.provider

    @dbus_property(access=PropertyAccess.READ)
    def Size(self) -> DBusUInt64:
        return self.status.size

    @dbus_property(access=PropertyAccess.READ)
    def NumaNode(self) -> DBusInt32:
        return self.status.numa_node

    @dbus_property(access=PropertyAccess.READ)
    def TargetNode(self) -> DBusInt32:
        return self.status.target_node

    @dbus_property(access=PropertyAccess.READ)
    def Driver(self) -> DBusStr:
        return self.status.driver

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> DBusStr:
        return self.status.mode

    @dbus_property(access=PropertyAccess.READ)
    def Zone(self) -> DBusStr:
        return self.status.zone

    @dbus_property(access=PropertyAccess.READ)
    def MemmapOnMemory(self) -> DBusStr:
        return self.status.memmap_on_memory

    @dbus_property(access=PropertyAccess.READ)
    def BlocksOnline(self) -> DBusUInt32:
        return self.status.blocks_online

    @dbus_property(access=PropertyAccess.READ)
    def BlocksTotal(self) -> DBusUInt32:
        return self.status.blocks_total

    @dbus_property(access=PropertyAccess.READ)
    def Rule(self) -> DBusStr:
        return self.status.rule

    @dbus_property(access=PropertyAccess.READ)
    def DesiredMode(self) -> DBusStr:
        return self.status.desired_mode

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.status.state.value

    @dbus_property(access=PropertyAccess.READ)
    def LastError(self) -> DBusStr:
        return self.status.last_error

    @dbus_property(access=PropertyAccess.READ)
    def LastChange(self) -> DBusUInt64:
        return self.status.last_change


class ManagerInterface(StatusInterface):
    """``org.daxd.Daxd1.Manager``: the daemon itself.

    ``Reload``, ``Reconcile`` and ``Apply`` are declared here so that they are introspectable,
    but calls to them are answered by :class:`daxd.service.dbus_api.DBusApi` before they get
    here, because they need the caller's identity, which dbus-fast does not pass to method
    handlers.
    """

    def __init__(self, status: ManagerStatus, plan_json: Callable[[], str]) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.status = status
        self.device_paths: list[str] = []
        self._plan_json = plan_json

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return self.status.version

    @dbus_property(access=PropertyAccess.READ)
    def PolicyPath(self) -> DBusStr:
        return self.status.policy_path

    @dbus_property(access=PropertyAccess.READ)
    def PolicyError(self) -> DBusStr:
        return self.status.policy_error

    @dbus_property(access=PropertyAccess.READ)
    def PolicyLoadedAt(self) -> DBusUInt64:
        return self.status.policy_loaded_at

    @dbus_property(access=PropertyAccess.READ)
    def Devices(self) -> DBusObjectPaths:
        return list(self.device_paths)

    @dbus_property(access=PropertyAccess.READ)
    def Summary(self) -> DBusStr:
        return self.status.summary

    @dbus_property(access=PropertyAccess.READ)
    def Conflicts(self) -> DBusStrings:
        return list(self.status.conflicts)

    @method()
    def Reload(self) -> None:
        # Only reachable if the privileged-call dispatch in dbus_api was bypassed: fail closed.
        raise DBusError(ERROR_PERMISSION_DENIED, "Reload is not available")

    @method()
    def Reconcile(self) -> None:
        raise DBusError(ERROR_PERMISSION_DENIED, "Reconcile is not available")

    @method()
    def Apply(self, devices: DBusStrings, options: DBusOptions) -> DBusStr:
        raise DBusError(ERROR_PERMISSION_DENIED, "Apply is not available")

    @method()
    def Plan(self) -> DBusStr:
        try:
            return self._plan_json()
        except PolicyInvalidError as exc:
            raise DBusError(ERROR_POLICY_INVALID, exc.text) from None
        except Exception:
            _log.exception("D-Bus Plan() failed")
            raise DBusError(ERROR_FAILED, GENERIC_FAILURE) from None

    @signal()
    def ActionCompleted(
        self, device: str, action: str, result: str, message: str
    ) -> ActionCompletedArgs:
        return [device, action, result, message]  # dbus-fast 2.x wants a list body


def _name_signal_args(signal: Any, *names: str) -> None:
    """Give a signal's arguments names in the introspection data (dbus-fast leaves them blank)."""
    args = signal.__dict__["__DBUS_SIGNAL"].introspection.args
    if len(args) != len(names):
        raise AssertionError(f"signal has {len(args)} arguments, {len(names)} names given")
    for arg, name in zip(args, names, strict=True):
        arg.name = name


def _name_method_outputs(method: Any, *names: str) -> None:
    args = method.__dict__["__DBUS_METHOD"].introspection.out_args
    if len(args) != len(names):
        raise AssertionError(f"method has {len(args)} results, {len(names)} names given")
    for arg, name in zip(args, names, strict=True):
        arg.name = name


_name_signal_args(ManagerInterface.ActionCompleted, "device", "action", "result", "message")
_name_method_outputs(ManagerInterface.Plan, "plan")
_name_method_outputs(ManagerInterface.Apply, "outcome")

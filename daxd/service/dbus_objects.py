"""The D-Bus objects daxd exports: names, error names, option keys and the two service interfaces.

No ``from __future__ import annotations`` here on purpose: dbus-fast reads the D-Bus signature
from each member's annotations at class-creation time.  The signatures are written as
plain signature strings ("s", "ao") at run time, which every dbus-fast reads (Debian 13 ships
2.44, PyPI 5.x), and as the matching Python types for mypy (see the TYPE_CHECKING block).

Every interface, property, method, argument and signal carries its documentation as an
``org.gtk.GDBus.DocString`` annotation (:func:`documented`), attached to dbus-fast's own
introspection data: what the daemon introspects and the installed interface files
(:mod:`daxd.service.dbus_xml`) come from this one source.  docs/dbus.md says the same at length.

The interfaces only hold values; :mod:`daxd.service.dbus_api` decides what to publish and when.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dbus_fast import DBusError, ErrorType, PropertyAccess, Variant
from dbus_fast import introspection as intr
from dbus_fast.service import ServiceInterface, dbus_property, method, signal

from daxd.kernel.view import cxl_record
from daxd.service.bus_names import (
    DEVICE_INTERFACE,
    ERROR_FAILED,
    ERROR_PERMISSION_DENIED,
    ERROR_POLICY_INVALID,
    MANAGER_INTERFACE,
    REGION_INTERFACE,
)
from daxd.service.dbus_values import hotplug_record, to_dbus
from daxd.service.status import DeviceStatus, ManagerStatus

GENERIC_FAILURE = "daxd failed to handle the request; the daemon's log has the details"
DOC_ANNOTATION = "org.gtk.GDBus.DocString"

if TYPE_CHECKING:
    DBusStr = str
    DBusBool = bool
    DBusInt32 = int
    DBusUInt32 = int
    DBusUInt64 = int
    DBusObjectPaths = list[str]
    DBusStrings = list[str]
    DBusOptions = dict[str, Variant]
    DBusRecord = dict[str, Variant]
    DBusRecords = list[dict[str, Variant]]
    ActionCompletedArgs = list[str]

    # Not at run time: it brings the policy and pydantic, which `make build/interfaces`
    # (daxd.service.dbus_xml) must do without.
    from daxd.service.regions import RegionStatus
else:
    DBusStr = "s"
    DBusBool = "b"
    DBusInt32 = "i"
    DBusUInt32 = "u"
    DBusUInt64 = "t"
    DBusObjectPaths = "ao"
    DBusStrings = "as"
    DBusOptions = "a{sv}"
    DBusRecord = "a{sv}"
    DBusRecords = "aa{sv}"
    ActionCompletedArgs = "ssss"

_log = logging.getLogger(__name__)

Member = TypeVar("Member")


# --- options --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """An option key a method takes: its D-Bus signature, a check of the value, what is valid."""

    signature: str
    check: Callable[[Any], bool]
    what: str


OFFLINE_TIMEOUT = Option("d", lambda v: 0 < v <= 86400, "seconds, more than 0 and at most 86400")
# (interface, method) -> the option keys it takes.  Every method takes a trailing a{sv}.
OPTIONS: dict[tuple[str, str], dict[str, Option]] = {
    (MANAGER_INTERFACE, "Reload"): {},
    (MANAGER_INTERFACE, "Reconcile"): {},
    (MANAGER_INTERFACE, "Apply"): {"offline-timeout": OFFLINE_TIMEOUT},
    (MANAGER_INTERFACE, "Plan"): {},
    (DEVICE_INTERFACE, "Reconcile"): {"offline-timeout": OFFLINE_TIMEOUT},
}


class InvalidOptionsError(Exception):
    """A method's options have an unknown key or a value of the wrong type; str() says which."""


def checked_options(interface: str, member: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options' plain values, or InvalidOptionsError (sent as InvalidArgs)."""
    known = OPTIONS[(interface, member)]
    values: dict[str, Any] = {}
    for key, variant in options.items():
        option = known.get(key)
        if option is None:
            accepted = ", ".join(sorted(known)) or "none"
            raise InvalidOptionsError(f"{member}: unknown option {key[:64]!r} (known: {accepted})")
        if (
            not isinstance(variant, Variant)
            or variant.signature != option.signature
            or not option.check(variant.value)
        ):
            raise InvalidOptionsError(
                f"{member}: option {key!r} takes '{option.signature}': {option.what}"
            )
        values[key] = variant.value
    return values


# --- documentation --------------------------------------------------------------------------------


def _introspection(member: Any) -> Any:
    """dbus-fast's introspection object of a decorated member (the same in 2.x and 5.x)."""
    if isinstance(member, property):  # dbus_property's _Property
        return member.introspection  # type: ignore[attr-defined]
    for key in ("__DBUS_METHOD", "__DBUS_SIGNAL"):
        found = member.__dict__.get(key)
        if found is not None:
            return found.introspection
    raise TypeError(f"{member!r} is not a D-Bus member")


def method_signatures(cls: type[ServiceInterface]) -> dict[str, str]:
    """The D-Bus methods a service interface class declares: name -> input signature."""
    found: dict[str, str] = {}
    for value in vars(cls).values():
        dbus_method = getattr(value, "__dict__", {}).get("__DBUS_METHOD")
        if dbus_method is not None:
            intro = dbus_method.introspection
            found[intro.name] = "".join(arg.signature for arg in intro.in_args)
    return found


def documented(text: str, **args: str) -> Callable[[Member], Member]:
    """Attach ``text`` to a D-Bus member as its DocString, and each of ``args`` to the argument
    of that name.  A method's results and a signal's arguments have no names in dbus-fast:
    ``args`` names them, in order, after the method's own parameters."""

    def attach(member: Member) -> Member:
        intro = _introspection(member)
        intro.annotations[DOC_ANNOTATION] = text
        if isinstance(intro, intr.Property):
            if args:
                raise AssertionError("a property has no arguments")
            return member
        if isinstance(intro, intr.Method):
            named = {arg.name: arg for arg in intro.in_args}
            unnamed = list(intro.out_args)
        else:
            named = {}
            unnamed = list(intro.args)
        rest = [name for name in args if name not in named]
        if len(rest) != len(unnamed):
            raise AssertionError(f"{intro.name}: {len(unnamed)} unnamed arguments, {rest} given")
        for arg, name in zip(unnamed, rest, strict=True):
            arg.name = name
            named[name] = arg
        for name, doc in args.items():
            named[name].annotations[DOC_ANNOTATION] = doc
        return member

    return attach


class PolicyInvalidError(Exception):
    """The policy cannot be used; ``text`` lists the located errors (``file:line:col: what``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoSuchDeviceError(Exception):
    """Apply named a device that does not exist; ``str()`` names it."""


OPTIONS_DOC = (
    "Options: a dictionary of option keys to values; an unknown key or a value of the wrong "
    "type is refused with org.freedesktop.DBus.Error.InvalidArgs naming it."
)
RECORD_DOC = (
    "The outcome of one device: the entry `daxd apply --json` prints (docs/cli.md), as a "
    "dictionary: name s, outcome s (applied, in-sync, failed, refused, unmanaged, ignored, gone, "
    "stopped), error s, the device as it was before (provider s, size t, numa_node i, "
    "target_node i, mode s, driver s, zone s, memmap_on_memory b (in effect), "
    "memmap_on_memory_attribute b (as it reads), blocks a{sv}, rule s, ...), "
    "plan a{sv}, steps aa{sv} (every write made, with ok b, error s, errno x, rollback b) and "
    "final a{sv} (what was read back afterwards). A key whose value is null in JSON is left out."
)


class StatusInterface(ServiceInterface):
    """A service interface whose properties are all read-only views of one status value."""

    DOC: ClassVar[str] = ""

    def introspect(self) -> intr.Interface:
        """dbus-fast's introspection, plus the interface's own DocString (dbus-fast has none)."""
        intro = super().introspect()
        intro.annotations = {DOC_ANNOTATION: self.DOC}
        return intro

    def dbus_values(self) -> dict[str, Variant]:
        """Every property as it goes on the wire (GetAll, InterfacesAdded)."""
        return {
            prop.name: Variant(prop.signature, getattr(self, prop.name))
            for prop in self.introspect().properties
        }


class DeviceInterface(StatusInterface):
    """``org.daxd.Daxd1.Device``: what daxd knows and wants about one DAX device.

    ``Reconcile`` is declared here so that it is introspectable; calls to it are answered by
    :class:`daxd.service.dbus_api.DBusApi` before they get here (it needs the caller's uid).
    """

    DOC = (
        "One DAX device on the dax bus (/sys/bus/dax/devices/<Name>): what the kernel shows of "
        "it as of daxd's last look, what the policy wants, and how far daxd got. Every property "
        "emits PropertiesChanged with its value."
    )

    def __init__(self, status: DeviceStatus) -> None:
        super().__init__(DEVICE_INTERFACE)
        self.status = status

    @documented("The device's name on the dax bus, e.g. dax0.0.")
    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.status.name

    @documented("Where the memory comes from: pmem, hmem, cxl or unknown.")
    @dbus_property(access=PropertyAccess.READ)
    def Provider(self) -> DBusStr:
        return self.status.provider

    @documented("Size in bytes.")
    @dbus_property(access=PropertyAccess.READ)
    def Size(self) -> DBusUInt64:
        return self.status.size

    @documented(
        "The NUMA node the device is attached to (its own allocations). -1: no NUMA node: the "
        "device's numa_node reads -1 (NUMA_NO_NODE, as CXL dax devices show) or is absent "
        "(no CONFIG_NUMA); the JSON documents have null, and records leave numa_node out."
    )
    @dbus_property(access=PropertyAccess.READ)
    def NumaNode(self) -> DBusInt32:
        return self.status.numa_node

    @documented(
        "The NUMA node the memory joins as System RAM (kmem). -1: none (the kernel hides "
        "target_node when it is negative); the JSON documents have null, and records leave "
        "target_node out."
    )
    @dbus_property(access=PropertyAccess.READ)
    def TargetNode(self) -> DBusInt32:
        return self.status.target_node

    @documented("The bound driver (device_dax, kmem, ...); empty: unbound.")
    @dbus_property(access=PropertyAccess.READ)
    def Driver(self) -> DBusStr:
        return self.status.driver

    @documented(
        "What the device is now: devdax (device_dax, /dev/daxX.Y), system-ram (kmem), unbound, "
        "or other (another driver: see Driver)."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> DBusStr:
        return self.status.mode

    @documented(
        "The zone of the online blocks: movable (all in ZONE_MOVABLE), normal (all in a kernel "
        "zone), mixed (some in each, or in a zone the kernel does not name), none (no block "
        "online)."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Zone(self) -> DBusStr:
        return self.status.zone

    @documented(
        "Whether the memmap (struct pages) of the device's memory lives on the device itself "
        "(in effect): its memmap_on_memory attribute reads 1 and memory_hotplug.memmap_on_memory "
        "is not off (a kernel that does not show the parameter: the attribute counts). False "
        "when either is off (on CXL the attribute reads 1 by default even when the global "
        "parameter is off) or the kernel has no such attribute (before 6.8). Apply records carry "
        "the attribute as it reads as memmap_on_memory_attribute."
    )
    @dbus_property(access=PropertyAccess.READ)
    def MemmapOnMemory(self) -> DBusBool:
        return self.status.memmap_on_memory

    @documented("Memory blocks of the device that are online.")
    @dbus_property(access=PropertyAccess.READ)
    def BlocksOnline(self) -> DBusUInt32:
        return self.status.blocks_online

    @documented("Memory blocks of the device (0 while it is not System RAM).")
    @dbus_property(access=PropertyAccess.READ)
    def BlocksTotal(self) -> DBusUInt32:
        return self.status.blocks_total

    @documented("Online blocks in ZONE_MOVABLE.")
    @dbus_property(access=PropertyAccess.READ)
    def BlocksMovable(self) -> DBusUInt32:
        return self.status.blocks_movable

    @documented("Online blocks in a kernel zone (Normal, DMA32, ...): not offlined at will.")
    @dbus_property(access=PropertyAccess.READ)
    def BlocksNormal(self) -> DBusUInt32:
        return self.status.blocks_normal

    @documented(
        "A CXL region's device: what identifies it beyond names the kernel hands out again "
        "(memN, regionN, daxN.M): region (s, regionN now), uuid (s; RAM regions have none), "
        "mode (s: ram, pmem), interleave_ways (u), interleave_granularity (u, bytes), window "
        "(s: the root decoder, decoder0.N), window_start (s, hex address), memdevs (aa{sv}, in "
        "interleave position order: position u, memdev s (memN now), serial t, host_bridge s "
        "(pci0000:0c), host_bridge_uid u (as in target_list)); the cxl object of `daxd list "
        "--json`, key for key. A key the kernel did not show is left out. Empty for other "
        "devices."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Cxl(self) -> DBusRecord:
        return to_dbus(cxl_record(self.status.cxl) or {})

    @documented("The name of the policy rule that matches the device; empty: none.")
    @dbus_property(access=PropertyAccess.READ)
    def Rule(self) -> DBusStr:
        return self.status.rule

    @documented("What the rule wants: devdax, system-ram or ignore; empty: no rule matches.")
    @dbus_property(access=PropertyAccess.READ)
    def DesiredMode(self) -> DBusStr:
        return self.status.desired_mode

    @documented(
        "applied (matches its rule), pending (a change is planned or under way), failed (the "
        "last attempt failed: LastError), drifted (changed by someone else, not restored yet), "
        "unmanaged (no rule, or the rule says ignore), refused (acting would be unsafe, or the "
        "kernel cannot do part of the rule, whose rest is applied: LastError says why)."
    )
    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.status.state.value

    @documented("Why the device is failed, refused or drifted; empty: nothing to say.")
    @dbus_property(access=PropertyAccess.READ)
    def LastError(self) -> DBusStr:
        return self.status.last_error

    @documented("When State or LastError last changed: microseconds of CLOCK_REALTIME; 0: never.")
    @dbus_property(access=PropertyAccess.READ)
    def LastChange(self) -> DBusUInt64:
        return self.status.last_change

    @documented(
        "Root only. Reconcile this device now with the policy in force (the file is not read "
        "again: that is Manager.Apply), as asked for, so never taken for drift: a restore that "
        "takes memory offline is done too. Returns when done.",
        options=OPTIONS_DOC + " Keys: offline-timeout (d): give up offlining one memory block "
        "after this many seconds (default: the daemon's).",
        record=RECORD_DOC,
    )
    @method()
    def Reconcile(self, options: DBusOptions) -> DBusRecord:
        # Only reachable if the privileged-call dispatch in dbus_api was bypassed: fail closed.
        raise DBusError(ERROR_PERMISSION_DENIED, "Reconcile is not available")


@dataclass(frozen=True)
class RegionValues:
    """A region of the policy as org.daxd.Daxd1.Region publishes it: what the daemon keeps
    (daxd.service.regions.RegionStatus), with "" and 0 where it has nothing."""

    name: str
    location: str = ""
    state: str = ""
    reason: str = ""
    region: str = ""
    window: str = ""
    memdevs: tuple[str, ...] = ()
    size: int = 0
    devices: tuple[str, ...] = ()
    last_error: str = ""
    last_change: int = 0

    @classmethod
    def of(cls, status: "RegionStatus") -> "RegionValues":
        return cls(
            name=status.name,
            location=status.location,
            state=status.state,
            reason=status.reason,
            region=status.region or "",
            window=status.window or "",
            memdevs=tuple(status.memdevs),
            size=status.size or 0,
            devices=tuple(status.devices),
            last_error=status.last_error,
            last_change=status.last_change,
        )


class RegionInterface(StatusInterface):
    """``org.daxd.Daxd1.Region``: one CXL region of the policy (its ``regions:`` section) and
    how far daxd got with it.  Read-only: the policy file is what changes a region."""

    DOC = (
        "One CXL region of the policy's regions: section, as daxd last found or left it: "
        "built (present), torn down as asked (absent), or why not. Every property emits "
        "PropertiesChanged with its value."
    )

    def __init__(self, values: RegionValues) -> None:
        super().__init__(REGION_INTERFACE)
        self.values = values

    @documented("The region's name in the policy (any printable text).")
    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.values.name

    @documented("Where the policy describes it: FILE:LINE.")
    @dbus_property(access=PropertyAccess.READ)
    def Location(self) -> DBusStr:
        return self.values.location

    @documented(
        "present (built as described), absent (state: absent in the policy, and not there), "
        "waiting (a memdev it names is not on the cxl bus yet), refused (cannot be built or "
        "torn down as described: Reason says why), failed (the last build or teardown failed: "
        "LastError), releasing (state: absent, its memory is being taken offline first)."
    )
    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.values.state

    @documented(
        "Why, in words (e.g. 'waiting for serial 0x1001: not on the cxl bus', or what was "
        "built: 'create region2: 512M in decoder0.2, 2 ways, granularity 8K'); empty: nothing "
        "to say."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> DBusStr:
        return self.values.reason

    @documented(
        "The kernel's region now (region2: a name the kernel hands out again, never in the "
        "policy), existing or the one being built; empty: none."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Region(self) -> DBusStr:
        return self.values.region

    @documented(
        "The root decoder (CXL window) the region is or would be in, decoder0.2; empty: none."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Window(self) -> DBusStr:
        return self.values.window

    @documented(
        "Its memdevs in interleave position order, as the name now and the serial number: "
        "'mem1 (serial 0x1000)'."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Memdevs(self) -> DBusStrings:
        return list(self.values.memdevs)

    @documented("Size in bytes; 0: not known (e.g. while waiting for a memdev).")
    @dbus_property(access=PropertyAccess.READ)
    def Size(self) -> DBusUInt64:
        return self.values.size

    @documented("The DAX devices the region brings (dax2.0), each an org.daxd.Daxd1.Device object.")
    @dbus_property(access=PropertyAccess.READ)
    def Devices(self) -> DBusStrings:
        return list(self.values.devices)

    @documented("Why the last build or teardown failed; empty: it did not.")
    @dbus_property(access=PropertyAccess.READ)
    def LastError(self) -> DBusStr:
        return self.values.last_error

    @documented(
        "When State, Reason or LastError last changed, or daxd last wrote to the region: "
        "microseconds of CLOCK_REALTIME; 0: never."
    )
    @dbus_property(access=PropertyAccess.READ)
    def LastChange(self) -> DBusUInt64:
        return self.values.last_change


class ManagerInterface(StatusInterface):
    """``org.daxd.Daxd1.Manager``: the daemon itself.

    ``Reload``, ``Reconcile`` and ``Apply`` are declared here so that they are introspectable,
    but calls to them are answered by :class:`daxd.service.dbus_api.DBusApi` before they get
    here, because they need the caller's identity, which dbus-fast does not pass to method
    handlers.
    """

    DOC = (
        "The daxd daemon: the policy in force, the devices it publishes (one "
        "org.daxd.Daxd1.Device object each) and the CXL regions of the policy (one "
        "org.daxd.Daxd1.Region object each), listed by the ObjectManager on this object, and "
        "the calls that change them (root only). Version 1 of the API: within it nothing is "
        "removed or renamed and no type changes; keys, members and enum values may be added."
    )

    def __init__(
        self, status: ManagerStatus, plan_records: Callable[[], Sequence[Mapping[str, Any]]]
    ) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.status = status
        self.device_paths: list[str] = []
        self._plan_records = plan_records
        self._plan_source: Sequence[Mapping[str, Any]] | None = None
        self._plan_wire: list[dict[str, Variant]] = []

    @documented("daxd's version.")
    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return self.status.version

    @documented("The policy file, e.g. /etc/daxd/policy.yaml (drop-ins: policy.d beside it).")
    @dbus_property(access=PropertyAccess.READ)
    def PolicyPath(self) -> DBusStr:
        return self.status.policy_path

    @documented(
        "Why the policy on disk was rejected at the last load, FILE:LINE:COL: message a line "
        "(the previous policy stays in force); empty: it was not."
    )
    @dbus_property(access=PropertyAccess.READ)
    def PolicyError(self) -> DBusStr:
        return self.status.policy_error

    @documented("When the policy in force was loaded: microseconds of CLOCK_REALTIME; 0: never.")
    @dbus_property(access=PropertyAccess.READ)
    def PolicyLoadedAt(self) -> DBusUInt64:
        return self.status.policy_loaded_at

    @documented("The device objects, sorted.")
    @dbus_property(access=PropertyAccess.READ)
    def Devices(self) -> DBusObjectPaths:
        return list(self.device_paths)

    @documented("One line for people, as systemd's STATUS=: device counts by State.")
    @dbus_property(access=PropertyAccess.READ)
    def Summary(self) -> DBusStr:
        return self.status.summary

    @documented(
        "Other agents that also act on DAX devices or memory hotplug (udev rules, daxctl "
        "configuration, ...), one sentence each; empty: none found."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Conflicts(self) -> DBusStrings:
        return list(self.status.conflicts)

    @documented(
        "The kernel's memory-hotplug settings as of daxd's last pass: block-size (t, bytes), "
        "auto-online-blocks (s: offline, online, online_kernel, online_movable), "
        "memmap-on-memory (b: the memory_hotplug.memmap_on_memory parameter), online-policy "
        "(s: contig-zones, auto-movable), hotremove (b: memory can be offlined and removed). A "
        "key the kernel does not show is left out."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Hotplug(self) -> DBusRecord:
        return to_dbus(hotplug_record(self.status.hotplug))

    @documented(
        "What the last full read of sysfs found odd, PATH: what a line (the value is then "
        "ignored); empty: nothing."
    )
    @dbus_property(access=PropertyAccess.READ)
    def Diagnostics(self) -> DBusStrings:
        return list(self.status.diagnostics)

    @documented(
        "Root only. Read the policy file again and reconcile every device with it; the "
        "previous policy stays in force when the new one is invalid "
        "(org.daxd.Daxd1.Error.PolicyInvalid, with every error located). What "
        "`systemctl reload daxd` calls.",
        options=OPTIONS_DOC + " No keys yet.",
    )
    @method()
    def Reload(self, options: DBusOptions) -> None:
        # Only reachable if the privileged-call dispatch in dbus_api was bypassed: fail closed.
        raise DBusError(ERROR_PERMISSION_DENIED, "Reload is not available")

    @documented(
        "Root only. Read every device again and reconcile it with the policy in force, as "
        "asked for (never taken for drift). Returns when done.",
        options=OPTIONS_DOC + " No keys yet.",
    )
    @method()
    def Reconcile(self, options: DBusOptions) -> None:
        raise DBusError(ERROR_PERMISSION_DENIED, "Reconcile is not available")

    @documented(
        "Root only; what `daxd apply` calls. Load the policy file as it is on disk (invalid: "
        "org.daxd.Daxd1.Error.PolicyInvalid, the policy in force stays), then reconcile the "
        "named devices with it now, as asked for. Returns when done, one record per device.",
        devices="Device names (dax0.0); none: every device. An unknown name is refused with "
        "org.daxd.Daxd1.Error.NoSuchDevice before anything is done.",
        options=OPTIONS_DOC + " Keys: offline-timeout (d): give up offlining one memory "
        "block after this many seconds (default: the daemon's).",
        records=RECORD_DOC,
    )
    @method()
    def Apply(self, devices: DBusStrings, options: DBusOptions) -> DBusRecords:
        raise DBusError(ERROR_PERMISSION_DENIED, "Apply is not available")

    @documented(
        "What reconciling now would do, as of daxd's last pass (nothing is read or changed): "
        "one record per planned step, keys device (s), verdict (s: change, ...), rule (s), "
        "action (s: offline-block, online-block, unbind, new-id, remove-id, bind, "
        "set-memmap-on-memory, set-auto-online, restore-auto-online), path (s: the sysfs "
        "attribute below /sys), value (s: what is written), reason (s), block (u: N of memoryN) "
        "and driver (s); rule, block and driver are left out when there is none.",
        options=OPTIONS_DOC + " No keys yet.",
        steps="The steps, device after device, each device's in the order they would run.",
    )
    @method()
    def Plan(self, options: DBusOptions) -> DBusRecords:
        try:
            checked_options(MANAGER_INTERFACE, "Plan", options)
            records = self._plan_records()
            if records is not self._plan_source:  # the daemon makes a new one once per pass
                self._plan_wire = [to_dbus(r) for r in records]
                self._plan_source = records
            return self._plan_wire
        except InvalidOptionsError as exc:
            raise DBusError(ErrorType.INVALID_ARGS.value, str(exc)) from None
        except PolicyInvalidError as exc:
            raise DBusError(ERROR_POLICY_INVALID, exc.text) from None
        except Exception:
            _log.exception("D-Bus Plan() failed")
            raise DBusError(ERROR_FAILED, GENERIC_FAILURE) from None

    @documented(
        "Emitted after each write daxd makes to sysfs.",
        device="The device (dax0.0).",
        action="What was written: 'ACTION VALUE > PATH', e.g. "
        "'online-block online_movable > devices/system/memory/memory40/state'.",
        result="ok, failed or rolled-back (a write that undid an earlier one after a failure).",
        message="The error when it failed, else why the write was made.",
    )
    @signal()
    def ActionCompleted(
        self, device: str, action: str, result: str, message: str
    ) -> ActionCompletedArgs:
        return [device, action, result, message]  # dbus-fast 2.x wants a list body

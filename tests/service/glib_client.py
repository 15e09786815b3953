"""A GLib client of daxd's D-Bus API, as GNOME and other GLib monitoring tools see it.

Runs on Debian's python3 with python3-gi (not the test virtualenv), on the system bus
(``$DBUS_SYSTEM_BUS_ADDRESS`` when set); the service tests and the lab both run it:

    python3 glib_client.py objects                     # Gio.DBusObjectManagerClient
    python3 glib_client.py properties PATH INTERFACE   # Gio.DBusProxy: cache, Get, GetAll("")
    python3 glib_client.py call PATH INTERFACE METHOD TYPE ARGS
    python3 glib_client.py parse < texts.json          # [[TYPE or null, GVariant text]...]
    python3 glib_client.py watch PATH INTERFACE        # events, one JSON line each, until EOF

Values are printed as JSON with every variant as ``[type, value]`` (its D-Bus signature and
its content, recursively), dictionaries as objects and arrays and structs as lists, so that the
tests compare what each client decoded, types included.  ``call`` prints ``{"type": ...,
"value": [...]}`` or ``{"error": NAME, "message": TEXT}`` (exit status 0 either way).

``watch`` keeps a Gio.DBusProxy on PATH, one on the manager and a Gio.DBusObjectManagerClient,
and prints ``ready`` (the proxy's cache), then ``changed`` (what PropertiesChanged carried, and
the proxy's whole cache after it), ``signal`` (a manager signal), ``object-added`` (the new
object's interfaces and their cached properties) and ``object-removed``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

BUS_NAME = "org.daxd.Daxd1"
MANAGER_PATH = "/org/daxd/Daxd1"
MANAGER_INTERFACE = "org.daxd.Daxd1.Manager"
TIMEOUT_MS = 15000


def plain(value: Any) -> Any:
    """A GVariant as JSON: variants as [type, value], dictionaries as objects."""
    kind = value.get_type_string()
    if kind == "v":
        inner = value.get_variant()
        return [inner.get_type_string(), plain(inner)]
    if kind.startswith("a{"):
        out = {}
        for i in range(value.n_children()):
            entry = value.get_child_value(i)
            out[str(plain(entry.get_child_value(0)))] = plain(entry.get_child_value(1))
        return out
    if kind.startswith(("a", "(")):
        return [plain(value.get_child_value(i)) for i in range(value.n_children())]
    return value.unpack()


def typed(value: Any) -> list[Any]:
    return [value.get_type_string(), plain(value)]


def cache(proxy: Any) -> dict[str, list[Any]]:
    """Every property in the proxy's cache: name -> [type, value]."""
    return {
        name: typed(proxy.get_cached_property(name)) for name in proxy.get_cached_property_names()
    }


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
    sys.stdout.flush()


def bus() -> Any:
    return Gio.bus_get_sync(Gio.BusType.SYSTEM, None)


def proxy(path: str, interface: str) -> Any:
    return Gio.DBusProxy.new_for_bus_sync(
        Gio.BusType.SYSTEM, Gio.DBusProxyFlags.NONE, None, BUS_NAME, path, interface, None
    )


def object_manager() -> Any:
    return Gio.DBusObjectManagerClient.new_for_bus_sync(
        Gio.BusType.SYSTEM,
        Gio.DBusObjectManagerClientFlags.NONE,
        BUS_NAME,
        MANAGER_PATH,
        None,
        None,
        None,
    )


def interfaces(obj: Any) -> dict[str, dict[str, list[Any]]]:
    return {iface.get_interface_name(): cache(iface) for iface in obj.get_interfaces()}


def call(path: str, interface: str, method: str, signature: str, args: str) -> dict[str, Any]:
    parameters = GLib.Variant.parse(GLib.VariantType.new(signature), args, None, None)
    try:
        reply = bus().call_sync(
            BUS_NAME,
            path,
            interface,
            method,
            parameters,
            None,
            Gio.DBusCallFlags.NONE,
            TIMEOUT_MS,
            None,
        )
    except GLib.Error as error:
        name = Gio.DBusError.get_remote_error(error)
        message = error.message
        if name is not None:  # "GDBus.Error:NAME: TEXT" (strip_remote_error works on a copy)
            message = message.removeprefix(f"GDBus.Error:{name}: ")
        return {"error": name or f"{error.domain}:{error.code}", "message": message}
    return {"type": reply.get_type_string(), "value": plain(reply)}


def cmd_objects() -> dict[str, Any]:
    manager = object_manager()
    return {
        "owner": manager.get_name_owner(),
        "objects": {obj.get_object_path(): interfaces(obj) for obj in manager.get_objects()},
    }


def cmd_properties(path: str, interface: str) -> dict[str, Any]:
    device = proxy(path, interface)
    got = {}
    for name in device.get_cached_property_names():
        reply = device.call_sync(
            "org.freedesktop.DBus.Properties.Get",
            GLib.Variant("(ss)", (interface, name)),
            Gio.DBusCallFlags.NONE,
            TIMEOUT_MS,
            None,
        )
        got[name] = plain(reply.get_child_value(0))  # the variant: [type, value]
    every = call(path, "org.freedesktop.DBus.Properties", "GetAll", "(s)", "('',)")
    return {"owner": device.get_name_owner(), "cached": cache(device), "get": got, "get_all": every}


def cmd_parse() -> list[Any]:
    """What gdbus printed, read back by GLib: a type is needed where gdbus printed none
    (``gdbus introspect`` prints a property's value bare: ``Size = 4294967296``)."""
    return [
        typed(
            GLib.Variant.parse(
                None if kind is None else GLib.VariantType.new(kind), text, None, None
            )
        )
        for kind, text in json.load(sys.stdin)
    ]


def cmd_watch(path: str, interface: str) -> None:
    loop = GLib.MainLoop()
    device = proxy(path, interface)
    manager = proxy(MANAGER_PATH, MANAGER_INTERFACE)
    objects = object_manager()

    def changed(p: Any, values: Any, invalidated: list[str]) -> None:
        emit(
            {
                "event": "changed",
                "path": p.get_object_path(),
                "changed": plain(values),
                "invalidated": list(invalidated),
                "cache": cache(p),
            }
        )

    def signalled(p: Any, sender: str, name: str, args: Any) -> None:
        emit({"event": "signal", "sender": sender, "name": name, "args": plain(args)})

    def added(m: Any, obj: Any) -> None:
        emit(
            {"event": "object-added", "path": obj.get_object_path(), "interfaces": interfaces(obj)}
        )

    def removed(m: Any, obj: Any) -> None:
        emit({"event": "object-removed", "path": obj.get_object_path()})

    def stdin_closed(*_: Any) -> bool:
        loop.quit()
        return False

    device.connect("g-properties-changed", changed)
    manager.connect("g-signal", signalled)
    objects.connect("object-added", added)
    objects.connect("object-removed", removed)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, stdin_closed)
    emit(
        {
            "event": "ready",
            "owner": device.get_name_owner(),
            "cache": cache(device),
            "objects": sorted(obj.get_object_path() for obj in objects.get_objects()),
        }
    )
    loop.run()


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "watch":
        cmd_watch(*args)
        return 0
    if command == "objects":
        result: Any = cmd_objects()
    elif command == "properties":
        result = cmd_properties(*args)
    elif command == "call":
        result = call(*args)
    elif command == "parse":
        result = cmd_parse()
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

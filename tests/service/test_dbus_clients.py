"""daxd's D-Bus API through the clients monitoring tools use: busctl, gdbus, dbus-send and GLib.

One daemon for the whole module, in this process on a fake kernel, on a private system bus with
the shipped bus policy: hmem dax0.0 is System RAM in ZONE_MOVABLE as its rule wants; pmem
dax5.0 is wanted as devdax, but "someone else" made it System RAM, and daxd holds that restore
(it takes memory away) until asked, so the plan has steps.  Each client runs as root and as
nobody, in its own process (the GLib client on Debian's python3 with python3-gi):

- reads: the objects, every property with the type docs/dbus.md gives it, GetAll, Get and
  Plan; what each client decoded is what the daemon publishes (so the four agree);
- GLib: a Gio.DBusProxy's property cache follows PropertiesChanged while a reload converts the
  device and back, and a Gio.DBusObjectManagerClient sees a hot-added device come and go;
- nobody: Reload, Reconcile, Apply and Device.Reconcile are refused by the bus (AccessDenied,
  from dbus-daemon), with no sysfs write and nothing else changed;
- root: Device.Reconcile({"offline-timeout": 5.0}) and Manager.Reconcile({}) restore the
  device (the timeout reaching the block writes); an unknown option key is InvalidArgs naming it.

dbus-send cannot send ``a{sv}`` (it has no variants inside a dictionary), and every daxd method
takes one: it reads everything but calls nothing, and these tests say what it gets instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbus_fast import Variant

from daxd.service.dbus_api import (
    BUS_NAME,
    DEVICE_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    device_object_path,
)
from daxd.service.dbus_objects import DeviceInterface, ManagerInterface
from daxd.service.dbus_values import to_dbus
from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.service.bus_daemon import (
    DEVICE_TYPES,
    MANAGER_TYPES,
    POLICY,
    Service,
    running,
)
from tests.service.dbus_bus import (
    NOBODY,
    TIMEOUT,
    Completed,
    PrivateSystemBus,
    client_env,
    require_system_bus_tools,
    run_client,
    system_bus_for_test,
)
from tests.service.dbus_text import (
    busctl_reply,
    complete_types,
    dbus_send_error,
    from_busctl,
    from_dbus_send,
    gdbus_properties,
    same_type,
)

T = TypeVar("T")

DEVDAX = "rules:\n  - name: all-devdax\n    mode: devdax\n"

SYSTEM_PYTHON = "/usr/bin/python3"  # python3-gi is a Debian package: not in the virtualenv
GLIB_CLIENT = Path(__file__).with_name("glib_client.py")
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
BUS_REFUSAL = "Rejected send message"  # how dbus-daemon's AccessDenied begins
DAX0 = device_object_path("dax0.0")
DAX5 = device_object_path("dax5.0")
OFFLINE_TIMEOUT = 5.0
UNKNOWN_OPTION = "no-such-option"

# The types docs/dbus.md gives every record key.
HOTPLUG_TYPES = {
    "block-size": "t",
    "auto-online-blocks": "s",
    "memmap-on-memory": "b",
    "online-policy": "s",
    "hotremove": "b",
}
PLAN_TYPES = {
    "device": "s",
    "verdict": "s",
    "rule": "s",
    "action": "s",
    "path": "s",
    "value": "s",
    "reason": "s",
    "block": "u",
    "driver": "s",
}
PLAN_KEYS = {"device", "verdict", "action", "path", "value", "reason"}  # never left out
RECORD_TYPES = {
    "name": "s",
    "region": "u",
    "provider": "s",
    "size": "t",
    "numa_node": "i",
    "target_node": "i",
    "resource": "s",
    "ranges": "aa{sv}",
    "namespace": "s",
    "uuid": "s",
    "mode": "s",
    "driver": "s",
    "zone": "s",
    "memmap_on_memory": "b",
    "memmap_on_memory_attribute": "b",
    "blocks": "a{sv}",
    "rule": "s",
    "outcome": "s",
    "error": "s",
    "plan": "a{sv}",
    "steps": "aa{sv}",
    "final": "a{sv}",
}
STEP_TYPES = {
    "action": "s",
    "path": "s",
    "value": "s",
    "block": "u",
    "driver": "s",
    "reason": "s",
    "ok": "b",
    "error": "s",
    "errno": "x",
    "rollback": "b",
}

Props = dict[str, list[Any]]  # property or key -> [signature, value]
Arg = tuple[str, Any]  # (signature, value); an a{sv} value is {key: (signature, value)}


# --- the daemon, shared by the module ------------------------------------------------------------


@dataclass
class Rig:
    """The daemon's loop runs only while a test runs a coroutine on it (:meth:`run`)."""

    runner: asyncio.Runner
    bus: PrivateSystemBus
    service: Service
    glib_client: str  # a copy nobody can read wherever the checkout is
    writes: list[tuple[str, str, float | None]]  # every sysfs write, with its timeout

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.runner.run(asyncio.wait_for(coro, timeout))

    @property
    def kernel(self) -> FakeKernel:
        return self.service.kernel

    def state(self, name: str) -> DeviceState | None:
        status = self.service.api.published_device(name)
        return None if status is None else status.state


def require_clients() -> None:
    require_system_bus_tools()
    if shutil.which("dbus-send") is None:
        pytest.skip("dbus-send is not installed (package dbus-bin)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gio', '2.0')"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("python3-gi and gir1.2-glib-2.0 are not installed")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require_clients()
    folder = tmp_path_factory.mktemp("dbus-clients")
    fast = "/dev/shm" if Path("/dev/shm").is_dir() else None  # a fake kernel writes many files
    with (
        tempfile.TemporaryDirectory(prefix="daxd-fakekernel-", dir=fast) as base,
        pytest.MonkeyPatch.context() as monkeypatch,
        system_bus_for_test(folder, monkeypatch) as bus,
    ):
        kernel = FakeKernel(Path(base))
        kernel.add_hmem_device()  # dax0.0: kmem, onlined in Normal at boot; daxd moves it
        kernel.add_pmem_device(region=5)  # dax5.0: device_dax
        writes: list[tuple[str, str, float | None]] = []
        handle_write = kernel.handle_write

        def recording(rel: str, value: str, timeout: float | None) -> None:
            writes.append((rel, value, timeout))
            handle_write(rel, value, timeout)

        monkeypatch.setattr(kernel, "handle_write", recording)
        glib_client = bus.socket_dir / GLIB_CLIENT.name
        shutil.copy(GLIB_CLIENT, glib_client)
        glib_client.chmod(0o644)
        # One loop for the module, like asyncio.run's (which it cleans up the same way).
        with asyncio.Runner() as runner:
            stack = contextlib.AsyncExitStack()
            try:
                service = runner.run(stack.enter_async_context(running(kernel, folder, POLICY)))
                yield Rig(runner, bus, service, str(glib_client), writes)
            finally:
                runner.run(stack.aclose())


async def drifted(rig: Rig) -> None:
    """dax5.0 as someone else left it: System RAM (kmem, blocks online) where its rule wants
    devdax.  daxd publishes it as drifted and does not restore it until asked."""
    h = rig.service.h
    if rig.state("dax5.0") is not DeviceState.DRIFTED:
        rig.kernel.sysfs.write("bus/dax/drivers/device_dax/unbind", "dax5.0")
        rig.kernel.sysfs.write("bus/dax/drivers/kmem/new_id", "dax5.0")
        await h.until(lambda: rig.state("dax5.0") is DeviceState.DRIFTED)
    await h.settled()
    assert rig.state("dax5.0") is DeviceState.DRIFTED
    assert rig.kernel.devices["dax5.0"].driver == "kmem"
    assert rig.state("dax0.0") is DeviceState.APPLIED


# --- what the daemon publishes, in the clients' common form ---------------------------------------


def from_dbus_fast(signature: str, value: Any) -> Any:
    if signature == "v":
        assert isinstance(value, Variant)
        return [value.signature, from_dbus_fast(value.signature, value.value)]
    if signature.startswith("a{"):
        _, inner = complete_types(signature[2:-1])
        return {str(k): from_dbus_fast(inner, v) for k, v in value.items()}
    if signature.startswith("a"):
        return [from_dbus_fast(signature[1:], item) for item in value]
    if signature.startswith("("):
        return [
            from_dbus_fast(t, v)
            for t, v in zip(complete_types(signature[1:-1]), value, strict=True)
        ]
    return value


def props_of(values: dict[str, Variant]) -> Props:
    return {name: from_dbus_fast("v", variant) for name, variant in values.items()}


@dataclass
class Published:
    devices: dict[str, Props]  # object path -> properties
    manager: Props
    plan: list[Props]


def published(service: Service) -> Published:
    api = service.api
    daemon = service.h.daemon
    devices = {}
    for name in api.device_names:
        status = api.published_device(name)
        assert status is not None
        devices[device_object_path(name)] = props_of(DeviceInterface(status).dbus_values())
    manager = ManagerInterface(daemon.manager_status(), daemon.plan_records)
    manager.device_paths = sorted(devices)
    plan = [props_of(to_dbus(record)) for record in daemon.plan_records()]
    return Published(devices, props_of(manager.dbus_values()), plan)


# --- checks ---------------------------------------------------------------------------------------


def check_types(props: Props, types: dict[str, str], what: str, *, every: bool = True) -> None:
    """Each key has its documented type; with ``every``, every documented key is there."""
    if every:
        assert set(props) == set(types), (what, sorted(props))
    else:
        assert set(props) <= set(types), (what, sorted(set(props) - set(types)))
    wrong = {k: v[0] for k, v in props.items() if not same_type(types[k], v[0])}
    assert wrong == {}, (what, wrong)


def check_plan(records: list[Props]) -> None:
    assert records, "no step planned: dax5.0 should be"
    for record in records:
        check_types(record, PLAN_TYPES, "plan record", every=False)
        assert set(record) >= PLAN_KEYS, record
    devices = {r["device"][1] for r in records}
    assert devices == {"dax5.0"}, devices
    actions = [r["action"][1] for r in records]
    assert "offline-block" in actions, actions
    # back to device_dax, last; then its id out of device_dax again
    assert actions[-2:] == ["new-id", "remove-id"], actions


def check_record(record: Props, name: str, outcome: str) -> None:
    """A Device.Reconcile record (the entry `daxd apply --json` prints)."""
    check_types(record, RECORD_TYPES, "reconcile record", every=False)
    assert record["name"] == ["s", name], record
    assert record["outcome"] == ["s", outcome], record
    steps = record["steps"][1]
    assert steps, record
    for step in steps:
        check_types(step, STEP_TYPES, "reconcile step", every=False)
        assert step["ok"] == ["b", True], step
    assert record["final"][1]["driver"] == ["s", "device_dax"], record["final"]


def check_facts(devices: dict[str, Props]) -> None:
    """What the fake kernel says, as typed values (the daemon could be wrong too)."""
    dax0, dax5 = devices[DAX0], devices[DAX5]
    assert dax0["Name"] == ["s", "dax0.0"]
    assert dax0["MemmapOnMemory"] == ["b", False]
    assert dax0["Zone"] == ["s", "movable"]
    assert dax0["BlocksMovable"] == dax0["BlocksOnline"] == dax0["BlocksTotal"] == ["u", 16]
    assert dax0["BlocksNormal"] == ["u", 0]
    assert dax0["NumaNode"] == ["i", 0]
    assert dax5["State"] == ["s", "drifted"]
    assert dax5["Driver"] == ["s", "kmem"]
    assert dax5["Zone"][1] in ("normal", "movable", "mixed")
    assert dax5["LastError"][1] != ""


# --- the clients ----------------------------------------------------------------------------------


@dataclass
class Reply:
    values: list[list[Any]] | None  # [signature, value] per returned value; None: an error
    error: str = ""  # the D-Bus error name
    message: str = ""
    sender: str = ""  # who sent the error, where the client says (busctl)
    shown: str = ""  # what the client printed about it


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def gvariant(signature: str, value: Any) -> str:
    """GVariant text of the few argument types the methods take, with their types."""
    if signature == "a{sv}":
        items = ", ".join(f"{quote(k)}: <{gvariant(s, v)}>" for k, (s, v) in value.items())
        return f"@a{{sv}} {{{items}}}"
    if signature == "as":
        return "@as [" + ", ".join(quote(v) for v in value) + "]"
    if signature == "s":
        return quote(value)
    if signature == "d":
        return repr(float(value))
    raise AssertionError(f"no GVariant text for {signature}")


class Client:
    name = ""
    sends_variants = True  # can send a{sv}

    async def call(
        self,
        rig: Rig,
        path: str,
        interface: str,
        method: str,
        args: Sequence[Arg],
        *,
        nobody: bool,
    ) -> Reply:
        raise NotImplementedError

    async def read(self, rig: Rig, nobody: bool) -> View:
        raise NotImplementedError


@dataclass
class View:
    """What a client read."""

    objects: dict[str, dict[str, Props]]  # GetManagedObjects (or the ObjectManagerClient)
    manager: Props
    devices: dict[str, Props]  # each device object's properties, read on its own
    plan: list[Props] | None  # None: the client cannot call Plan
    paths: set[str] | None = None  # the object tree, where the client lists it


async def glib(rig: Rig, *args: str, nobody: bool) -> Any:
    result = await run_client(rig.bus, [SYSTEM_PYTHON, rig.glib_client, *args], nobody=nobody)
    assert result.stderr == "", result.stderr  # no GLib warning either
    return json.loads(result.check().stdout)


async def glib_parse(rig: Rig, texts: list[tuple[str | None, str]]) -> list[list[Any]]:
    """gdbus's GVariant texts, read back with their types by GLib."""
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        rig.glib_client,
        "parse",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(texts).encode()), TIMEOUT)
    assert process.returncode == 0, err.decode()
    parsed: list[list[Any]] = json.loads(out)
    return parsed


class Busctl(Client):
    name = "busctl"

    async def run(self, rig: Rig, *args: str, nobody: bool) -> Completed:
        # SYSTEMD_LOG_LEVEL=debug: sd-bus logs each message, errors with their name and sender
        argv = ["env", "SYSTEMD_LOG_LEVEL=debug", "busctl", f"--address={rig.bus.address}"]
        return await run_client(rig.bus, [*argv, "--no-pager", *args], nobody=nobody)

    async def json(self, rig: Rig, *args: str, nobody: bool) -> list[list[Any]]:
        result = await self.run(rig, "--json=short", *args, nobody=nobody)
        return busctl_reply(result.json())

    @staticmethod
    def encode(signature: str, value: Any) -> list[str]:
        if signature == "a{sv}":
            out = [str(len(value))]
            for key, (inner, item) in value.items():
                out += [key, inner, *Busctl.encode(inner, item)]
            return out
        if signature == "as":
            return [str(len(value)), *value]
        return [str(value)]

    async def call(
        self,
        rig: Rig,
        path: str,
        interface: str,
        method: str,
        args: Sequence[Arg],
        *,
        nobody: bool,
    ) -> Reply:
        encoded = ["".join(s for s, _ in args)]
        for signature, value in args:
            encoded += self.encode(signature, value)
        result = await self.run(
            rig, "--json=short", "call", BUS_NAME, path, interface, method, *encoded, nobody=nobody
        )
        if result.returncode == 0:
            return Reply(busctl_reply(json.loads(result.stdout)) if result.stdout.strip() else [])
        got = [
            line for line in result.stderr.splitlines() if line.startswith("Got message type=error")
        ]
        assert len(got) == 1, result.stderr
        fields = dict(
            part.split("=", 1) for part in got[0].split(" error-message=")[0].split() if "=" in part
        )
        (shown,) = [line for line in result.stderr.splitlines() if line.startswith("Call failed: ")]
        return Reply(
            None,
            fields["error-name"],
            got[0].split(" error-message=", 1)[1],
            fields["sender"],
            shown,
        )

    async def read(self, rig: Rig, nobody: bool) -> View:
        tree = (await self.run(rig, "--list", "tree", BUS_NAME, nobody=nobody)).check()
        (objects,) = await self.json(
            rig, "call", BUS_NAME, MANAGER_PATH, OBJECT_MANAGER, "GetManagedObjects", nobody=nobody
        )
        assert objects[0] == "a{oa{sa{sv}}}", objects[0]
        (manager,) = await self.json(
            rig, "call", BUS_NAME, MANAGER_PATH, PROPERTIES, "GetAll", "s", MANAGER_INTERFACE,
            nobody=nobody,
        )  # fmt: skip
        assert manager[0] == "a{sv}"
        assert (
            await self.get_each(rig, MANAGER_PATH, MANAGER_INTERFACE, MANAGER_TYPES, nobody)
            == (manager[1])
        )
        devices = {}
        for path in objects[1]:
            (every,) = await self.json(
                rig, "call", BUS_NAME, path, PROPERTIES, "GetAll", "s", "", nobody=nobody
            )
            devices[path] = every[1]
            each = await self.get_each(rig, path, DEVICE_INTERFACE, DEVICE_TYPES, nobody)
            assert each == every[1], path
        (plan,) = await self.json(
            rig, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "Plan", "a{sv}", "0",
            nobody=nobody,
        )  # fmt: skip
        assert plan[0] == "aa{sv}", plan[0]
        return View(objects[1], manager[1], devices, plan[1], set(tree.stdout.split()))

    async def get_each(
        self, rig: Rig, path: str, interface: str, names: dict[str, str], nobody: bool
    ) -> Props:
        """``busctl get-property`` of every documented property: one JSON value a line."""
        result = await self.run(
            rig, "--json=short", "get-property", BUS_NAME, path, interface, *names, nobody=nobody
        )
        values = [json.loads(line) for line in result.check().stdout.splitlines()]
        return {
            name: [v["type"], from_busctl(v["type"], v["data"])]
            for name, v in zip(names, values, strict=True)
        }


class Gdbus(Client):
    name = "gdbus"

    async def run(self, rig: Rig, command: str, *args: str, nobody: bool) -> Completed:
        argv = ["gdbus", command, "--address", rig.bus.address, "--dest", BUS_NAME, *args]
        return await run_client(rig.bus, argv, nobody=nobody)

    async def call_text(self, rig: Rig, path: str, member: str, *args: str, nobody: bool) -> str:
        result = await self.run(
            rig, "call", "--object-path", path, "--method", member, *args, nobody=nobody
        )
        return result.check().stdout.strip()

    async def call(
        self,
        rig: Rig,
        path: str,
        interface: str,
        method: str,
        args: Sequence[Arg],
        *,
        nobody: bool,
    ) -> Reply:
        result = await self.run(
            rig,
            "call",
            "--object-path",
            path,
            "--method",
            f"{interface}.{method}",
            *(gvariant(s, v) for s, v in args),
            nobody=nobody,
        )
        if result.returncode == 0:
            ((signature, values),) = await glib_parse(rig, [(None, result.stdout.strip())])
            types = complete_types(signature[1:-1])
            return Reply([list(v) for v in zip(types, values, strict=True)])
        marker = "GDBus.Error:"
        assert marker in result.stderr, result.stderr
        name, _, message = result.stderr.split(marker, 1)[1].partition(": ")
        return Reply(None, name, message.strip(), shown=result.stderr.strip())

    async def read(self, rig: Rig, nobody: bool) -> View:
        introspected = await self.run(
            rig, "introspect", "--object-path", MANAGER_PATH, "--recurse", "--only-properties",
            nobody=nobody,
        )  # fmt: skip
        tree = gdbus_properties(introspected.check().stdout)
        texts: list[tuple[str | None, str]] = [
            (None, await self.call_text(rig, MANAGER_PATH, f"{OBJECT_MANAGER}.GetManagedObjects",
                                        nobody=nobody)),
            (None, await self.call_text(rig, MANAGER_PATH, f"{PROPERTIES}.GetAll",
                                        quote(MANAGER_INTERFACE), nobody=nobody)),
            (None, await self.call_text(rig, MANAGER_PATH, f"{MANAGER_INTERFACE}.Plan", "{}",
                                        nobody=nobody)),
        ]  # fmt: skip
        paths = [p for p, interfaces in tree.items() if DEVICE_INTERFACE in interfaces]
        for path in paths:
            texts.append(
                (None, await self.call_text(rig, path, f"{PROPERTIES}.GetAll", "''", nobody=nobody))
            )
        # What introspection declares and shows of each property, read with the declared type.
        shown = [
            (path, interface, name, signature, text)
            for path, interfaces in tree.items()
            for interface, props in interfaces.items()
            for name, (signature, text) in props.items()
        ]
        parsed = await glib_parse(rig, texts + [(signature, text) for *_, signature, text in shown])
        (objects,), (manager,), (plan,) = (p[1] for p in parsed[:3])
        assert [p[0] for p in parsed[:3]] == ["(a{oa{sa{sv}}})", "(a{sv})", "(aa{sv})"], parsed
        devices = {path: p[1][0] for path, p in zip(paths, parsed[3 : 3 + len(paths)], strict=True)}
        declared: dict[str, dict[str, Props]] = {}
        for (path, interface, name, signature, _), value in zip(
            shown, parsed[3 + len(paths) :], strict=True
        ):
            assert value[0] == signature, (name, value)
            declared.setdefault(path, {}).setdefault(interface, {})[name] = value
        assert declared == {
            MANAGER_PATH: {MANAGER_INTERFACE: manager},
            **{path: {DEVICE_INTERFACE: devices[path]} for path in paths},
        }
        return View(objects, manager, devices, plan, set(tree))


class DbusSend(Client):
    name = "dbus-send"
    sends_variants = False

    async def run(self, rig: Rig, path: str, member: str, *args: str, nobody: bool) -> Completed:
        argv = ["dbus-send", "--system", "--print-reply", f"--dest={BUS_NAME}", path, member]
        return await run_client(rig.bus, [*argv, *args], nobody=nobody)

    @staticmethod
    def encode(signature: str, value: Any) -> str:
        """dbus-send's nearest: a{sv} becomes a dict of the values' own (one) type."""
        if signature == "a{sv}":
            kinds = {s for s, _ in value.values()} or {"s"}
            assert len(kinds) == 1, value
            kind = {"s": "string", "d": "double"}[kinds.pop()]
            items = ",".join(f"{k},{v}" for k, (_, v) in value.items())
            return f"dict:string:{kind}:{items}"
        if signature == "as":
            return "array:string:" + ",".join(value)
        raise AssertionError(signature)

    async def call(
        self,
        rig: Rig,
        path: str,
        interface: str,
        method: str,
        args: Sequence[Arg],
        *,
        nobody: bool,
    ) -> Reply:
        encoded = [self.encode(s, v) for s, v in args]
        result = await self.run(rig, path, f"{interface}.{method}", *encoded, nobody=nobody)
        if result.returncode == 0:
            return Reply(from_dbus_send(result.stdout))
        name, message = dbus_send_error(result.stderr)
        return Reply(None, name, message, shown=result.stderr.strip())

    async def values(self, rig: Rig, path: str, member: str, *args: str, nobody: bool) -> Any:
        result = await self.run(rig, path, member, *args, nobody=nobody)
        ((_, value),) = from_dbus_send(result.check().stdout)
        return value

    async def read(self, rig: Rig, nobody: bool) -> View:
        objects = await self.values(
            rig, MANAGER_PATH, f"{OBJECT_MANAGER}.GetManagedObjects", nobody=nobody
        )
        manager = await self.values(
            rig, MANAGER_PATH, f"{PROPERTIES}.GetAll", f"string:{MANAGER_INTERFACE}", nobody=nobody
        )
        devices = {
            path: await self.values(rig, path, f"{PROPERTIES}.GetAll", "string:", nobody=nobody)
            for path in objects
        }
        memmap = await self.values(
            rig, DAX0, f"{PROPERTIES}.Get", f"string:{DEVICE_INTERFACE}", "string:MemmapOnMemory",
            nobody=nobody,
        )  # fmt: skip
        assert memmap == ["b", False], memmap
        # An empty array comes without its type ("array [ ]"): take the documented one.
        for props, types in (
            (manager, MANAGER_TYPES),
            *((p, DEVICE_TYPES) for p in devices.values()),
            *((p, DEVICE_TYPES) for i in objects.values() for p in i.values()),
        ):
            for name, value in props.items():
                if "?" in value[0]:
                    assert same_type(types[name], value[0]), (name, value)
                    assert value[1] == [], (name, value)
                    # an empty dictionary (Cxl of a device that is not CXL) is an empty array too
                    empty: dict[str, Any] | list[Any] = {} if types[name][1:2] == "{" else []
                    props[name] = [types[name], empty]
        # Plan takes a{sv}: the nearest dbus-send can send (a{ss}) is refused.
        plan = await self.call(
            rig, MANAGER_PATH, MANAGER_INTERFACE, "Plan", [("a{sv}", {})], nobody=nobody
        )
        assert plan.error == INVALID_ARGS, plan
        assert "'a{sv}', not 'a{ss}'" in plan.message, plan
        return View(objects, manager, devices, None)


class Glib(Client):
    name = "glib"

    async def call(
        self,
        rig: Rig,
        path: str,
        interface: str,
        method: str,
        args: Sequence[Arg],
        *,
        nobody: bool,
    ) -> Reply:
        signature = "(" + "".join(s for s, _ in args) + ")"
        parts = [gvariant(s, v) for s, v in args]
        text = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        result = await glib(rig, "call", path, interface, method, signature, text, nobody=nobody)
        if "error" in result:
            return Reply(None, result["error"], result["message"])
        return Reply(
            [
                list(v)
                for v in zip(complete_types(result["type"][1:-1]), result["value"], strict=True)
            ]
        )

    async def read(self, rig: Rig, nobody: bool) -> View:
        found = await glib(rig, "objects", nobody=nobody)
        assert found["owner"].startswith(":"), found  # the proxies know daxd's unique name
        manager = await glib(rig, "properties", MANAGER_PATH, MANAGER_INTERFACE, nobody=nobody)
        self.check_proxy(manager)
        devices = {}
        for path in found["objects"]:
            device = await glib(rig, "properties", path, DEVICE_INTERFACE, nobody=nobody)
            self.check_proxy(device)
            devices[path] = device["cached"]
        plan = await self.call(
            rig, MANAGER_PATH, MANAGER_INTERFACE, "Plan", [("a{sv}", {})], nobody=nobody
        )
        assert plan.values is not None, plan
        ((signature, records),) = plan.values
        assert signature == "aa{sv}"
        return View(found["objects"], manager["cached"], devices, records)

    @staticmethod
    def check_proxy(result: dict[str, Any]) -> None:
        """The proxy's cache (GetAll at its creation), Get of each and GetAll("") agree."""
        assert result["get"] == result["cached"], result
        assert result["get_all"] == {"type": "(a{sv})", "value": [result["cached"]]}, result


CLIENTS = [Busctl(), Gdbus(), DbusSend(), Glib()]
USERS = pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
EACH_CLIENT = pytest.mark.parametrize("client", CLIENTS, ids=[c.name for c in CLIENTS])


# --- reads ----------------------------------------------------------------------------------------


@EACH_CLIENT
@USERS
def test_reads_every_object_and_property_with_its_type(
    rig: Rig, client: Client, nobody: bool
) -> None:
    async def scenario() -> tuple[View, Published]:
        await drifted(rig)
        return await client.read(rig, nobody), published(rig.service)

    view, expected = rig.run(scenario())
    check_types(view.manager, MANAGER_TYPES, "Manager")
    check_types(view.manager["Hotplug"][1], HOTPLUG_TYPES, "Manager.Hotplug")
    for path, props in view.devices.items():
        check_types(props, DEVICE_TYPES, path)
    assert set(view.devices) == {DAX0, DAX5}
    check_facts(view.devices)
    assert view.objects == {path: {DEVICE_INTERFACE: p} for path, p in expected.devices.items()}
    assert view.devices == expected.devices
    assert view.manager == expected.manager
    assert view.manager["Devices"] == ["ao", [DAX0, DAX5]]
    assert view.manager["Hotplug"][1]["memmap-on-memory"] == ["b", False]
    if view.plan is not None:
        check_plan(view.plan)
        assert view.plan == expected.plan
    if view.paths is not None:
        assert {MANAGER_PATH, f"{MANAGER_PATH}/devices", DAX0, DAX5} <= view.paths, view.paths


# --- changes: nobody may not, root may ------------------------------------------------------------


def privileged_calls(
    options: dict[str, Arg] | None = None,
) -> list[tuple[str, str, str, list[Arg]]]:
    """The calls only root may make, with ``options`` or, without, options each one takes."""
    timeout = {"offline-timeout": ("d", OFFLINE_TIMEOUT)}
    return [
        (MANAGER_PATH, MANAGER_INTERFACE, "Reload", [("a{sv}", options or {})]),
        (MANAGER_PATH, MANAGER_INTERFACE, "Reconcile", [("a{sv}", options or {})]),
        (MANAGER_PATH, MANAGER_INTERFACE, "Apply", [("as", []), ("a{sv}", options or timeout)]),
        (DAX5, DEVICE_INTERFACE, "Reconcile", [("a{sv}", options or timeout)]),
    ]


def assert_bus_refused(reply: Reply, client: Client) -> None:
    """Turned away by dbus-daemon's policy: daxd never saw the call."""
    assert reply.values is None, reply
    assert reply.error == ACCESS_DENIED, reply
    assert reply.message.startswith(BUS_REFUSAL), reply
    if client.name == "busctl":
        assert reply.sender == "org.freedesktop.DBus", reply
        assert reply.shown == "Call failed: Access denied", reply


@EACH_CLIENT
def test_nobody_is_refused_every_change_and_nothing_changes(rig: Rig, client: Client) -> None:
    h = rig.service.h

    async def scenario() -> list[Reply]:
        await drifted(rig)  # a Reconcile would restore dax5.0
        h.policy.write_text(DEVDAX)  # a Reload or an Apply would take dax0.0 away
        try:
            before = rig.service.snapshot()
            writes = len(rig.writes)
            replies = [await client.call(rig, *call, nobody=True) for call in privileged_calls()]
            await h.settled()
            assert len(rig.writes) == writes
            assert rig.service.snapshot() == before
            assert rig.kernel.devices["dax5.0"].driver == "kmem"
            assert rig.kernel.devices["dax0.0"].driver == "kmem"
            return replies
        finally:
            h.policy.write_text(POLICY)

    for reply in rig.run(scenario()):
        assert_bus_refused(reply, client)


def offline_timeouts(writes: list[tuple[str, str, float | None]]) -> set[float | None]:
    return {t for rel, value, t in writes if rel.endswith("/state") and value == "offline"}


@EACH_CLIENT
def test_root_reconciles_and_unknown_options_are_refused(rig: Rig, client: Client) -> None:
    h = rig.service.h
    bogus = {UNKNOWN_OPTION: ("s", "x")}

    async def scenario() -> None:
        await drifted(rig)
        before = rig.service.snapshot()
        for path, interface, method, args in [
            *privileged_calls(bogus),
            (MANAGER_PATH, MANAGER_INTERFACE, "Plan", [("a{sv}", bogus)]),
        ]:
            reply = await client.call(rig, path, interface, method, args, nobody=False)
            assert reply.values is None, (method, reply)
            assert reply.error == INVALID_ARGS, (method, reply)
            if client.sends_variants:
                assert f"unknown option '{UNKNOWN_OPTION}'" in reply.message, (method, reply)
            else:  # dbus-send sent a{ss}: refused for its type, before any key is looked at
                assert "a{sv}', not '" in reply.message, (method, reply)
                assert "a{ss}'" in reply.message, (method, reply)
        await h.settled()
        assert rig.service.snapshot() == before  # nothing done, not even a reload
        if not client.sends_variants:
            reply = await client.call(
                rig, DAX5, DEVICE_INTERFACE, "Reconcile",
                [("a{sv}", {"offline-timeout": ("d", OFFLINE_TIMEOUT)})], nobody=False,
            )  # fmt: skip
            assert reply.error == INVALID_ARGS, reply
            assert "'a{sv}', not 'a{sd}'" in reply.message, reply
            assert rig.service.snapshot() == before
            return

        # The device alone, with a timeout for each block's offline.
        start = len(rig.writes)
        reply = await client.call(
            rig, DAX5, DEVICE_INTERFACE, "Reconcile",
            [("a{sv}", {"offline-timeout": ("d", OFFLINE_TIMEOUT)})], nobody=False,
        )  # fmt: skip
        assert reply.values is not None, reply
        ((signature, record),) = reply.values
        assert signature == "a{sv}"
        check_record(record, "dax5.0", "applied")
        assert offline_timeouts(rig.writes[start:]) == {OFFLINE_TIMEOUT}
        await h.settled()
        assert rig.state("dax5.0") is DeviceState.APPLIED
        assert rig.kernel.devices["dax5.0"].driver == "device_dax"

        # Every device, without options: the daemon's own timeout.
        await drifted(rig)
        start = len(rig.writes)
        reply = await client.call(
            rig, MANAGER_PATH, MANAGER_INTERFACE, "Reconcile", [("a{sv}", {})], nobody=False
        )
        assert reply.values == [], reply
        assert offline_timeouts(rig.writes[start:]) == {h.daemon.config.offline_timeout}
        assert h.daemon.config.offline_timeout != OFFLINE_TIMEOUT
        await h.settled()
        assert rig.state("dax5.0") is DeviceState.APPLIED
        assert rig.kernel.devices["dax5.0"].driver == "device_dax"
        assert rig.state("dax0.0") is DeviceState.APPLIED

    rig.run(scenario())


# --- GLib: the property cache, the object manager -------------------------------------------------


@dataclass
class GlibWatch:
    """``glib_client.py watch``: one JSON event a line."""

    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _eof: bool = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))
            self._new.set()
        self._eof = True
        self._new.set()

    async def find(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, start: int = 0
    ) -> int | None:
        seen = start
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index in range(seen, len(self.events)):
                        if predicate(self.events[index]):
                            return index
                    seen = len(self.events)
                    if self._eof:
                        return None
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            return None

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, start: int = 0
    ) -> dict[str, Any]:
        index = await self.find(predicate, TIMEOUT, start)
        if index is None:
            shown = "\n".join(json.dumps(e)[:300] for e in self.events[start:])
            raise AssertionError(f"the GLib client never showed {what}; it showed:\n{shown}")
        return self.events[index]


@contextlib.asynccontextmanager
async def glib_watch(rig: Rig, path: str, nobody: bool) -> AsyncIterator[GlibWatch]:
    argv = [SYSTEM_PYTHON, rig.glib_client, "watch", path, DEVICE_INTERFACE]
    if nobody:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client_env(rig.bus),
    )
    watch = GlibWatch(process)
    reader = asyncio.get_running_loop().create_task(watch.read())
    try:
        await watch.wait_for(lambda e: e["event"] == "ready", "ready")
        # GLib drops signals from a well-known name until it knows the name's owner: knock until
        # one comes through (later ones then do too, in order).
        async with asyncio.timeout(TIMEOUT):
            for knock in range(10**6):
                rig.service.api.action_completed(f"knock-{knock}", "marker", "ok", "")
                if await watch.find(lambda e: e["event"] == "signal", 0.1) is not None:
                    break
        yield watch
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
        await reader
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
    assert process.returncode == 0, errors
    assert errors == "", errors  # no GLib warning (a property of the wrong type, ...)


async def reload(rig: Rig, policy: str) -> None:
    """A reload as root, through the daemon (busctl)."""
    rig.service.h.policy.write_text(policy)
    busctl = Busctl()
    reply = await busctl.call(
        rig, MANAGER_PATH, MANAGER_INTERFACE, "Reload", [("a{sv}", {})], nobody=False
    )
    assert reply.values == [], reply
    await rig.service.h.settled()


def changed_types(watch: GlibWatch, path: str) -> None:
    """What every PropertiesChanged carried is typed as documented."""
    for event in watch.events:
        if event["event"] == "changed" and event["path"] == path:
            check_types(event["changed"], DEVICE_TYPES, "PropertiesChanged", every=False)
            assert event["invalidated"] == [], event


@USERS
def test_glib_proxy_cache_follows_properties_changed(rig: Rig, nobody: bool) -> None:
    async def scenario() -> None:
        await drifted(rig)
        async with glib_watch(rig, DAX0, nobody) as watch:
            ready = watch.events[0]
            assert ready["owner"].startswith(":"), ready
            assert ready["cache"] == published(rig.service).devices[DAX0]
            try:
                mark = len(watch.events)
                await reload(rig, DEVDAX)  # converts dax0.0 to devdax
                devdax = published(rig.service).devices[DAX0]
                assert devdax["Mode"] == ["s", "devdax"]
                assert devdax["Zone"] == ["s", "none"]
                assert devdax["BlocksOnline"] == ["u", 0]
                assert devdax["MemmapOnMemory"] == ["b", False]
                await watch.wait_for(
                    lambda e: e["event"] == "changed" and e["cache"] == devdax,
                    "dax0.0 as devdax in the proxy's cache",
                    mark,
                )
                mark = len(watch.events)
            finally:
                await reload(rig, POLICY)  # and back
            movable = published(rig.service).devices[DAX0]
            assert movable["Zone"] == ["s", "movable"]
            assert movable["BlocksMovable"] == ["u", 16]
            last = await watch.wait_for(
                lambda e: e["event"] == "changed" and e["cache"] == movable,
                "dax0.0 movable again in the proxy's cache",
                mark,
            )
            assert set(last["cache"]) == set(DEVICE_TYPES)
            changed_types(watch, DAX0)

    rig.run(scenario())


@USERS
def test_glib_object_manager_sees_a_hot_added_device(rig: Rig, nobody: bool) -> None:
    h = rig.service.h
    region = max(rig.kernel.bus.regions) + 1
    name = f"dax{region}.0"
    added = device_object_path(name)

    async def scenario() -> None:
        await h.settled()
        async with glib_watch(rig, DAX0, nobody) as watch:
            assert watch.events[0]["objects"] == sorted(published(rig.service).devices)
            mark = len(watch.events)
            rig.kernel.add_pmem_device(region=region)  # udev "add": daxd publishes it
            event = await watch.wait_for(
                lambda e: e["event"] == "object-added" and e["path"] == added,
                f"InterfacesAdded of {name}",
                mark,
            )
            assert list(event["interfaces"]) == [DEVICE_INTERFACE]
            props = event["interfaces"][DEVICE_INTERFACE]
            check_types(props, DEVICE_TYPES, "InterfacesAdded")
            assert props["Name"] == ["s", name]
            assert props["Provider"] == ["s", "pmem"]
            await h.settled()
            assert rig.state(name) is DeviceState.APPLIED
            assert (
                published(rig.service).devices[added]
                == (await Glib().read(rig, nobody)).devices[added]
            )

            mark = len(watch.events)
            rig.kernel.remove_device(name)
            await watch.wait_for(
                lambda e: e["event"] == "object-removed" and e["path"] == added,
                f"InterfacesRemoved of {name}",
                mark,
            )
            await h.settled()
            assert added not in published(rig.service).devices

    rig.run(scenario())

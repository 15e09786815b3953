"""Who may do what: the shipped bus policy, and the service's own check behind it."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from daxd.service.dbus_api import (
    BUS_NAME,
    DEVICE_INTERFACE,
    ERROR_PERMISSION_DENIED,
    MANAGER_INTERFACE,
    MANAGER_PATH,
)
from tests.service.dbus_bus import (
    Completed,
    FakeController,
    PrivateSystemBus,
    busctl,
    device,
    error_name,
    gdbus,
    gdbus_call,
    python_client,
    run_async,
    running_api,
    system_bus_for_test,
)

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
DAX0 = "/org/daxd/Daxd1/devices/dax0_0"
PROPERTIES = "org.freedesktop.DBus.Properties"

Call = Callable[[PrivateSystemBus, bool], Awaitable[Completed]]

# Allowed to everyone; each returns the client's result and names a snippet of the answer.
READS: dict[str, tuple[Call, str]] = {
    "Get": (
        lambda bus, nobody: gdbus_call(
            bus, MANAGER_PATH, f"{PROPERTIES}.Get", MANAGER_INTERFACE, "Version", nobody=nobody
        ),
        "(<'0.1.0'>,)",
    ),
    "busctl get-property": (
        lambda bus, nobody: busctl(
            bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "State", nobody=nobody
        ),
        's "pending"',
    ),
    "GetAll": (
        lambda bus, nobody: gdbus_call(
            bus, DAX0, f"{PROPERTIES}.GetAll", DEVICE_INTERFACE, nobody=nobody
        ),
        "'Name': <'dax0.0'>",
    ),
    "Introspect": (
        lambda bus, nobody: gdbus(
            bus, "introspect", "--dest", BUS_NAME, "--object-path", MANAGER_PATH, nobody=nobody
        ),
        f"interface {MANAGER_INTERFACE}",
    ),
    "GetManagedObjects": (
        lambda bus, nobody: gdbus_call(
            bus,
            MANAGER_PATH,
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            nobody=nobody,
        ),
        f"'{DAX0}'",
    ),
    "Plan": (
        lambda bus, nobody: gdbus_call(
            bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Plan", "{}", nobody=nobody
        ),
        "'device': <'dax0.0'>",
    ),
    "Ping": (
        lambda bus, nobody: gdbus_call(
            bus, MANAGER_PATH, "org.freedesktop.DBus.Peer.Ping", nobody=nobody
        ),
        "()",
    ),
}


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as private_bus:
        yield private_bus


@pytest.fixture
def open_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    """A bus whose policy lets anyone call anything on daxd: only daxd's own check is left."""
    with system_bus_for_test(tmp_path, monkeypatch, permissive=True) as private_bus:
        yield private_bus


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
@pytest.mark.parametrize("operation", list(READS))
def test_reading_is_allowed_to_everyone(
    bus: PrivateSystemBus, operation: str, nobody: bool
) -> None:
    call, expected = READS[operation]

    async def body() -> None:
        async with running_api(FakeController(), [device("dax0.0")]):
            result = (await call(bus, nobody)).check()
            assert expected in result.stdout

    run_async(body)


@pytest.mark.parametrize("method", ["Reload", "Reconcile"])
def test_root_may_reload_and_reconcile(bus: PrivateSystemBus, method: str) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            result = await gdbus_call(bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.{method}", "{}")
            assert result.check().stdout.strip() == "()"
            busctl_result = await busctl(
                bus, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method, "a{sv}", "0"
            )
            busctl_result.check()

    run_async(body)
    assert controller.calls == [method.lower()] * 2


@pytest.mark.parametrize("method", ["Reload", "Reconcile"])
def test_nobody_may_not_reload_or_reconcile(bus: PrivateSystemBus, method: str) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller) as api:
            result = await gdbus_call(
                bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.{method}", "{}", nobody=True
            )
            assert error_name(result) == ACCESS_DENIED
            # not by the unique name either
            assert api.bus is not None
            assert api.bus.unique_name is not None
            direct = await gdbus_call(
                bus,
                MANAGER_PATH,
                f"{MANAGER_INTERFACE}.{method}",
                "{}",
                nobody=True,
                dest=api.bus.unique_name,
            )
            assert error_name(direct) == ACCESS_DENIED
            with_busctl = await busctl(
                bus,
                "call",
                BUS_NAME,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                method,
                "a{sv}",
                "0",
                nobody=True,
            )
            assert with_busctl.returncode != 0
            assert "Access denied" in with_busctl.stderr

    run_async(body)
    assert controller.calls == []


# Calls without an interface field (allowed by the D-Bus spec; gdbus and busctl always send
# one), made with dbus-fast's low-level API.
NO_INTERFACE_CALL = textwrap.dedent(
    """
    import asyncio, os
    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus

    async def main():
        bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
        reply = await bus.call(Message(destination="org.daxd.Daxd1", path="{path}",
                                       member="{member}", signature="a{{sv}}", body=[{{}}]))
        if reply.message_type == MessageType.ERROR:
            print("ERROR", reply.error_name, reply.body[0] if reply.body else "")
        else:
            print("OK", reply.body)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("method", ["Reload", "Reconcile"])
def test_leaving_out_the_interface_does_not_get_past_the_policy(
    bus: PrivateSystemBus, method: str
) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            script = NO_INTERFACE_CALL.format(path=MANAGER_PATH, member=method)
            denied = (await python_client(bus, script, nobody=True)).check()
            assert denied.stdout.startswith(f"ERROR {ACCESS_DENIED}"), denied.stdout
            assert controller.calls == []
            allowed = (await python_client(bus, script)).check()
            assert allowed.stdout.strip() == "OK []"

    run_async(body)
    assert controller.calls == [method.lower()]


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
def test_setting_a_property_fails(bus: PrivateSystemBus, nobody: bool) -> None:
    async def body() -> None:
        async with running_api(FakeController(), [device("dax0.0")]):
            result = await gdbus_call(
                bus,
                DAX0,
                f"{PROPERTIES}.Set",
                DEVICE_INTERFACE,
                "State",
                "<'applied'>",
                nobody=nobody,
            )
            expected = ACCESS_DENIED if nobody else "org.freedesktop.DBus.Error.PropertyReadOnly"
            assert error_name(result) == expected
            manager = await busctl(
                bus,
                "set-property",
                BUS_NAME,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "Summary",
                "s",
                "hacked",
                nobody=nobody,
            )
            assert manager.returncode != 0
            state = await busctl(bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "State")
            assert state.check().stdout.strip() == 's "pending"'

    run_async(body)


OWN_NAME = textwrap.dedent(
    """
    import asyncio
    from daxd.service.dbus_api import BusNameError, DBusApi, connect_system_bus
    from tests.service.dbus_bus import FakeController

    async def main():
        bus = await connect_system_bus()
        try:
            await DBusApi(FakeController()).start(bus)
        except BusNameError as exc:
            print("REFUSED", exc)
        else:
            print("OWNED")

    asyncio.run(main())
    """
)


def test_only_root_may_own_the_name(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        refused = (await python_client(bus, OWN_NAME, nobody=True)).check()
        assert refused.stdout.startswith("REFUSED the bus does not let this process own"), (
            refused.stdout
        )
        assert "daxd must run as root" in refused.stdout
        owned = (await python_client(bus, OWN_NAME)).check()
        assert owned.stdout.strip() == "OWNED"

    run_async(body)


# -- behind a bus that lets everything through: daxd's own check ------------------------------


@pytest.mark.parametrize("method", ["Reload", "Reconcile"])
def test_the_service_refuses_unprivileged_callers_itself(
    open_bus: PrivateSystemBus, method: str
) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            result = await gdbus_call(
                open_bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.{method}", "{}", nobody=True
            )
            assert error_name(result) == ERROR_PERMISSION_DENIED
            assert f"{method} is only allowed for root" in result.stderr

            no_interface = NO_INTERFACE_CALL.format(path=MANAGER_PATH, member=method)
            bare = (await python_client(open_bus, no_interface, nobody=True)).check()
            assert bare.stdout.strip() == (
                f"ERROR {ERROR_PERMISSION_DENIED} {method} is only allowed for root"
            )
            assert controller.calls == []

            # reads still work for everyone, and root may still act
            plan = await gdbus_call(
                open_bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Plan", "{}", nobody=True
            )
            plan.check()
            (
                await gdbus_call(open_bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.{method}", "{}")
            ).check()

    run_async(body)
    assert controller.calls == ["plan", method.lower()]


# -- the calls that act on one device, and Apply ----------------------------------------------


def test_root_may_reconcile_a_device_and_apply(bus: PrivateSystemBus) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller, [device("dax0.0")]):
            one = await busctl(
                bus,
                "--json=short",
                "call",
                BUS_NAME,
                DAX0,
                DEVICE_INTERFACE,
                "Reconcile",
                "a{sv}",
                "1",
                "offline-timeout",
                "d",
                "12.5",
            )
            record = one.json()
            assert record["type"] == "a{sv}"
            (values,) = record["data"]
            assert values["name"] == {"type": "s", "data": "dax0.0"}
            assert values["size"] == {"type": "t", "data": 4 << 30}
            assert values["numa_node"] == {"type": "i", "data": -1}
            assert values["blocks"]["data"]["total"] == {"type": "u", "data": 0}
            assert values["steps"] == {"type": "aa{sv}", "data": []}
            assert "zone" not in values  # null: left out

            text = await gdbus_call(bus, DAX0, f"{DEVICE_INTERFACE}.Reconcile", "{}")
            assert "'outcome': <'in-sync'>" in text.check().stdout

            applied = await busctl(
                bus,
                "--json=short",
                "call",
                BUS_NAME,
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "Apply",
                "asa{sv}",
                "2",
                "dax1.0",
                "dax0.0",
                "0",
            )
            reply = applied.json()
            assert reply["type"] == "aa{sv}"
            assert [r["name"]["data"] for r in reply["data"][0]] == ["dax1.0", "dax0.0"]

            # no Reconcile of a device on the manager, no Manager.Reconcile on a device
            wrong = await busctl(
                bus, "call", BUS_NAME, MANAGER_PATH, DEVICE_INTERFACE, "Reconcile", "a{sv}", "0"
            )
            assert wrong.returncode != 0
            wrong = await busctl(
                bus, "call", BUS_NAME, DAX0, MANAGER_INTERFACE, "Reconcile", "a{sv}", "0"
            )
            assert wrong.returncode != 0
            script = NO_INTERFACE_CALL.format(path=DAX0, member="Reconcile")
            bare = (await python_client(bus, script)).check()
            assert bare.stdout.startswith("OK [{"), bare.stdout

    run_async(body)
    assert controller.calls == [
        "reconcile dax0.0 12.5",
        "reconcile dax0.0 None",
        "apply dax1.0 dax0.0 None",
        "reconcile dax0.0 None",
    ]


def test_nobody_may_not_reconcile_a_device(bus: PrivateSystemBus) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller, [device("dax0.0")]):
            denied = await gdbus_call(bus, DAX0, f"{DEVICE_INTERFACE}.Reconcile", "{}", nobody=True)
            assert error_name(denied) == ACCESS_DENIED
            script = NO_INTERFACE_CALL.format(path=DAX0, member="Reconcile")
            bare = (await python_client(bus, script, nobody=True)).check()
            assert bare.stdout.startswith(f"ERROR {ACCESS_DENIED}"), bare.stdout

    run_async(body)
    assert controller.calls == []


def test_the_service_refuses_a_device_reconcile_from_others_itself(
    open_bus: PrivateSystemBus,
) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller, [device("dax0.0")]):
            result = await gdbus_call(
                open_bus, DAX0, f"{DEVICE_INTERFACE}.Reconcile", "{}", nobody=True
            )
            assert error_name(result) == ERROR_PERMISSION_DENIED
            assert "Reconcile is only allowed for root" in result.stderr
            apply = await gdbus_call(
                open_bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Apply", "[]", "{}", nobody=True
            )
            assert error_name(apply) == ERROR_PERMISSION_DENIED

    run_async(body)
    assert controller.calls == []

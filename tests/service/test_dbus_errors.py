"""Errors as callers see them: named, short, and without internals."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import DBusError

from daxd.service.dbus_api import (
    BUS_NAME,
    ERROR_FAILED,
    ERROR_POLICY_INVALID,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    BusNameError,
    DBusApi,
    PolicyInvalidError,
    connect_system_bus,
)
from tests.service.dbus_bus import (
    PLAN_RECORDS,
    FakeController,
    PrivateSystemBus,
    busctl,
    device,
    error_name,
    gdbus_call,
    python_client,
    run_async,
    running_api,
    system_bus_for_test,
)

POLICY_ERRORS = (
    "/etc/daxd/policy.yaml:3:5: unknown key 'mdoe' (did you mean 'mode'?)\n"
    "/etc/daxd/policy.yaml:9:12: zone must be one of movable, normal"
)
SECRET = "/var/lib/daxd/secret-internal-state.json"


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as private_bus:
        yield private_bus


def test_reload_with_an_invalid_policy(bus: PrivateSystemBus) -> None:
    controller = FakeController()
    controller.reload_error = PolicyInvalidError(POLICY_ERRORS)

    async def body() -> None:
        async with running_api(controller):
            result = await gdbus_call(bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Reload", "{}")
            assert error_name(result) == ERROR_POLICY_INVALID
            assert "policy.yaml:3:5: unknown key 'mdoe' (did you mean 'mode'?)" in result.stderr
            assert "policy.yaml:9:12: zone must be one of movable, normal" in result.stderr

            shown = await busctl(
                bus, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "Reload", "a{sv}", "0"
            )
            assert shown.returncode != 0
            assert "unknown key 'mdoe'" in shown.stderr

    run_async(body)
    assert controller.calls == ["reload", "reload"]


@pytest.mark.parametrize("kind", ["RuntimeError", "DBusError"])
@pytest.mark.parametrize("method", ["Reload", "Reconcile", "Plan"])
def test_unexpected_exceptions_become_a_generic_error(
    bus: PrivateSystemBus, method: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    controller = FakeController()
    boom: Exception = RuntimeError(f"cannot open {SECRET}")
    if kind == "DBusError":  # e.g. from a call the controller made: not ours to pass on
        boom = DBusError("org.freedesktop.systemd1.NoSuchUnit", f"no unit for {SECRET}")
    controller.reload_error = controller.reconcile_error = controller.plan_error = boom

    async def body() -> None:
        async with running_api(controller):
            result = await gdbus_call(bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.{method}", "{}")
            assert error_name(result) == ERROR_FAILED
            assert "the daemon's log has the details" in result.stderr
            for leak in (SECRET, kind, "systemd1", "Traceback", "File ", ".py"):
                assert leak not in result.stderr

    with caplog.at_level(logging.ERROR):
        run_async(body)
    assert controller.calls == [method.lower()]
    logged = [r for r in caplog.records if r.exc_info is not None and r.exc_info[1] is boom]
    assert logged, "the details must be logged"
    assert method in logged[0].getMessage()


def test_plan_returns_the_controllers_records(bus: PrivateSystemBus) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            for _ in range(2):  # the second from the converted records kept
                result = await busctl(
                    bus,
                    "--json=short",
                    "call",
                    BUS_NAME,
                    MANAGER_PATH,
                    MANAGER_INTERFACE,
                    "Plan",
                    "a{sv}",
                    "0",
                    nobody=True,
                )
                reply = result.json()
                assert reply["type"] == "aa{sv}"
                assert reply["data"][0] == [
                    {
                        "device": {"type": "s", "data": "dax0.0"},
                        "verdict": {"type": "s", "data": "change"},
                        "rule": {"type": "s", "data": "cxl-to-ram"},
                        "action": {"type": "s", "data": "offline-block"},
                        "path": {"type": "s", "data": "devices/system/memory/memory40/state"},
                        "value": {"type": "s", "data": "offline"},
                        "reason": {"type": "s", "data": PLAN_RECORDS[0]["reason"]},
                        "block": {"type": "u", "data": 40},
                    },
                    {  # no rule, no block: left out
                        "device": {"type": "s", "data": "dax0.0"},
                        "verdict": {"type": "s", "data": "change"},
                        "action": {"type": "s", "data": "new-id"},
                        "path": {"type": "s", "data": "bus/dax/drivers/kmem/new_id"},
                        "value": {"type": "s", "data": "dax0.0"},
                        "reason": {"type": "s", "data": "the rule wants system-ram"},
                        "driver": {"type": "s", "data": "kmem"},
                    },
                ]
            text = await gdbus_call(
                bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Plan", "{}", nobody=True
            )
            assert "'block': <uint32 40>" in text.check().stdout

    run_async(body)


@pytest.mark.parametrize(
    ("method", "args", "known"),
    [
        ("Plan", ("a{sv}", "1", "verbose", "b", "true"), "none"),
        ("Reload", ("a{sv}", "1", "force", "b", "true"), "none"),
        ("Reconcile", ("a{sv}", "1", "offline-timeout", "d", "5"), "none"),
        ("Apply", ("asa{sv}", "0", "1", "offline_timeout", "d", "5"), "offline-timeout"),
    ],
)
def test_unknown_options_are_invalid_args(
    bus: PrivateSystemBus, method: str, args: tuple[str, ...], known: str
) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            result = await busctl(
                bus, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method, *args
            )
            assert result.returncode != 0
            key = args[-3]
            assert f"{method}: unknown option '{key}' (known: {known})" in result.stderr
            wrong = await gdbus_call(
                bus,
                MANAGER_PATH,
                f"{MANAGER_INTERFACE}.Apply",
                "[]",
                "{'offline-timeout': <'5'>}",
            )
            assert error_name(wrong) == "org.freedesktop.DBus.Error.InvalidArgs"
            assert "option 'offline-timeout' takes 'd'" in wrong.stderr

    run_async(body)
    assert controller.calls == []


def test_plan_with_an_invalid_policy(bus: PrivateSystemBus) -> None:
    controller = FakeController()
    controller.plan_error = PolicyInvalidError(POLICY_ERRORS)

    async def body() -> None:
        async with running_api(controller):
            result = await gdbus_call(
                bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Plan", "{}", nobody=True
            )
            assert error_name(result) == ERROR_POLICY_INVALID
            assert "unknown key 'mdoe'" in result.stderr

    run_async(body)


@pytest.mark.parametrize("method", ["Reload", "Reconcile", "Plan"])
def test_wrong_arguments_are_invalid_args(bus: PrivateSystemBus, method: str) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            result = await busctl(
                bus, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method, "s", "extra"
            )
            assert result.returncode != 0
            assert "takes arguments of type 'a{sv}', not 's'" in result.stderr

            bare = await busctl(bus, "call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method)
            assert bare.returncode != 0  # the options are not optional
            assert "takes arguments of type 'a{sv}', not ''" in bare.stderr

    run_async(body)
    assert controller.calls == []


def test_unknown_methods_and_properties(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with running_api(FakeController(), [device("dax0.0")]):
            method = await gdbus_call(bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Explode")
            assert error_name(method) == "org.freedesktop.DBus.Error.UnknownMethod"
            prop = await gdbus_call(
                bus, MANAGER_PATH, "org.freedesktop.DBus.Properties.Get", MANAGER_INTERFACE, "Nope"
            )
            assert error_name(prop) == "org.freedesktop.DBus.Error.UnknownProperty"

    run_async(body)


NO_REPLY_CALL = textwrap.dedent(
    """
    import asyncio, os
    from dbus_fast import Message, MessageFlag
    from dbus_fast.aio import MessageBus

    async def main():
        bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
        await bus.send(Message(destination="org.daxd.Daxd1", path="/org/daxd/Daxd1",
                               interface="org.daxd.Daxd1.Manager", member="Reconcile",
                               signature="a{sv}", body=[{}],
                               flags=MessageFlag.NO_REPLY_EXPECTED))
        # Stay connected until the service has answered a later call: by then it has asked the
        # bus who sent Reconcile (a caller that is gone cannot be checked and is refused).
        reply = await bus.call(Message(destination="org.daxd.Daxd1", path="/org/daxd/Daxd1",
                                       interface="org.freedesktop.DBus.Peer", member="Ping"))
        print(reply.message_type.name)

    asyncio.run(main())
    """
)


def test_no_reply_is_sent_when_none_is_expected(bus: PrivateSystemBus) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller):
            result = (await python_client(bus, NO_REPLY_CALL)).check()
            assert result.stdout.strip() == "METHOD_RETURN"
            async with asyncio.timeout(10):
                while controller.calls != ["reconcile"]:
                    await asyncio.sleep(0.01)
            # the service is still healthy afterwards
            (await gdbus_call(bus, MANAGER_PATH, f"{MANAGER_INTERFACE}.Reload", "{}")).check()

    run_async(body)
    assert controller.calls == ["reconcile", "reload"]


def test_a_second_daxd_fails_clearly(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        connection = await connect_system_bus()
        second = DBusApi(FakeController())
        second.set_device(device("dax9.9"))
        async with running_api(FakeController(), [device("dax0.0")]) as first:
            assert first.bus is not None
            owner = first.bus.unique_name
            with pytest.raises(BusNameError) as caught:
                await second.start(connection)
            message = str(caught.value)
            assert message.startswith(f"{BUS_NAME} is already owned by {owner} ")
            assert "is another daxd running?" in message
            assert second.bus is None
            names = (await busctl(bus, "tree", BUS_NAME)).check().stdout
            assert "dax0_0" in names

        # once the first has stopped, the name is free again, and the failed start left nothing
        # behind on its connection (a second export of the same objects would raise)
        await second.start(connection)
        try:
            names = (await busctl(bus, "tree", BUS_NAME)).check().stdout
            assert "dax9_9" in names
            assert "dax0_0" not in names
        finally:
            await second.stop()
            connection.disconnect()

    run_async(body)

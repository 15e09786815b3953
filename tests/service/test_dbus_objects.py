"""What real D-Bus clients see of daxd's objects: the tree, the values, and the signals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daxd.service.dbus_api import (
    BUS_NAME,
    DEVICE_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    device_object_path,
)
from daxd.service.status import DeviceState, DeviceStatus
from tests.service.dbus_bus import (
    MANAGER,
    FakeController,
    PrivateSystemBus,
    busctl,
    device,
    gdbus,
    gdbus_call,
    run_async,
    running_api,
    signal_monitor,
    sync_signals,
    system_bus_for_test,
)

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
DAX0 = "/org/daxd/Daxd1/devices/dax0_0"
DAX1 = "/org/daxd/Daxd1/devices/dax1_0"


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as private_bus:
        yield private_bus


def wire(status: DeviceStatus) -> dict[str, list[Any]]:
    """The device as busctl --json shows it: name -> [signature, value]."""
    return {
        "Name": ["s", status.name],
        "Provider": ["s", status.provider],
        "Size": ["t", status.size],
        "NumaNode": ["i", status.numa_node],
        "TargetNode": ["i", status.target_node],
        "Driver": ["s", status.driver],
        "Mode": ["s", status.mode],
        "Zone": ["s", status.zone],
        "MemmapOnMemory": ["b", status.memmap_on_memory],
        "BlocksOnline": ["u", status.blocks_online],
        "BlocksTotal": ["u", status.blocks_total],
        "BlocksMovable": ["u", status.blocks_movable],
        "BlocksNormal": ["u", status.blocks_normal],
        "Rule": ["s", status.rule],
        "DesiredMode": ["s", status.desired_mode],
        "State": ["s", status.state.value],
        "LastError": ["s", status.last_error],
        "LastChange": ["t", status.last_change],
        "Cxl": ["a{sv}", {}],  # none of these is a CXL device: tests/service/test_dbus_cxl.py
    }


def unpack(props: dict[str, Any]) -> dict[str, list[Any]]:
    return {name: [value["type"], value["data"]] for name, value in props.items()}


def changed_properties(line: str) -> tuple[str, str, set[str]]:
    """(object path, interface, changed property names) of a gdbus monitor line."""
    match = re.fullmatch(
        r"(\S+): org\.freedesktop\.DBus\.Properties\.PropertiesChanged "
        r"\('([\w.]+)', \{(.*)\}, @as \[\]\)",
        line,
    )
    assert match, line
    return match[1], match[2], set(re.findall(r"'(\w+)': <", match[3]))


def undocumented(text: str) -> str:
    """gdbus introspect's text without the DocString annotations, on one line."""
    text = re.sub(r'@org\.gtk\.GDBus\.DocString\("(?:[^"\\]|\\.)*"\)\s*', "", text)
    return re.sub(r"\s+", " ", text)


def test_get_managed_objects_lists_every_device_with_all_properties(
    bus: PrivateSystemBus,
) -> None:
    dax0 = device("dax0.0")
    dax1 = device(
        "dax1.0",
        state=DeviceState.APPLIED,
        mode="system-ram",
        zone="mixed",
        memmap_on_memory=True,
        blocks_online=32,
        blocks_movable=30,
        blocks_normal=2,
    )

    async def body() -> None:
        async with running_api(FakeController(), [dax0, dax1]):
            result = await busctl(
                bus,
                "--json=short",
                "call",
                BUS_NAME,
                MANAGER_PATH,
                OBJECT_MANAGER,
                "GetManagedObjects",
                nobody=True,
            )
            objects = result.json()["data"][0]
            assert set(objects) == {DAX0, DAX1}  # the manager is not one of its own objects
            assert set(objects[DAX0]) == {DEVICE_INTERFACE}
            assert unpack(objects[DAX0][DEVICE_INTERFACE]) == wire(dax0)
            assert unpack(objects[DAX1][DEVICE_INTERFACE]) == wire(dax1)

            # and the same through GDBus
            text = (
                (await gdbus_call(bus, MANAGER_PATH, f"{OBJECT_MANAGER}.GetManagedObjects"))
                .check()
                .stdout
            )
            assert f"'{DAX1}': {{'{DEVICE_INTERFACE}': {{" in text
            assert "'Size': <uint64 4294967296>" in text
            assert "'NumaNode': <0>" in text
            assert "'MemmapOnMemory': <true>" in text
            assert "'Zone': <'none'>" in text

    run_async(body)


def test_manager_properties(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with running_api(FakeController(), [device("dax1.0"), device("dax0.0")]):
            result = await busctl(
                bus,
                "--json=short",
                "call",
                BUS_NAME,
                MANAGER_PATH,
                "org.freedesktop.DBus.Properties",
                "GetAll",
                "s",
                MANAGER_INTERFACE,
                nobody=True,
            )
            assert unpack(result.json()["data"][0]) == {
                "Version": ["s", MANAGER.version],
                "PolicyPath": ["s", MANAGER.policy_path],
                "PolicyError": ["s", ""],
                "PolicyLoadedAt": ["t", MANAGER.policy_loaded_at],
                "Devices": ["ao", [DAX0, DAX1]],
                "Summary": ["s", MANAGER.summary],
                "Conflicts": ["as", list(MANAGER.conflicts)],
                "Hotplug": [
                    "a{sv}",
                    {
                        "block-size": {"type": "t", "data": 128 << 20},
                        "auto-online-blocks": {"type": "s", "data": "online"},
                        "memmap-on-memory": {"type": "b", "data": False},
                        "hotremove": {"type": "b", "data": True},
                    },
                ],
                "Diagnostics": ["as", list(MANAGER.diagnostics)],
            }
            single = await busctl(
                bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "Size", nobody=True
            )
            assert single.check().stdout.strip() == f"t {4 << 30}"

    run_async(body)


def test_get_all_without_an_interface_name_gives_every_property(bus: PrivateSystemBus) -> None:
    """The specification lets GetAll("") mean every interface, and generic clients send it;
    dbus-fast answers NotSupported."""
    dax0 = device("dax0.0")
    props = "org.freedesktop.DBus.Properties"

    async def get_all(path: str, interface: str) -> dict[str, Any]:
        result = await busctl(
            bus,
            "--json=short",
            "call",
            BUS_NAME,
            path,
            props,
            "GetAll",
            "s",
            interface,
            nobody=True,
        )
        data: dict[str, Any] = result.json()["data"][0]
        return data

    async def body() -> None:
        async with running_api(FakeController(), [dax0]):
            assert unpack(await get_all(DAX0, "")) == wire(dax0)
            assert await get_all(DAX0, "") == await get_all(DAX0, DEVICE_INTERFACE)
            manager = await get_all(MANAGER_PATH, "")
            assert manager == await get_all(MANAGER_PATH, MANAGER_INTERFACE)
            assert manager["Devices"] == {"type": "ao", "data": [DAX0]}
            assert await get_all(DAX0, "org.freedesktop.DBus.Peer") == {}  # as before

            text = (await gdbus_call(bus, DAX0, f"{props}.GetAll", "''", nobody=True)).check()
            assert "'State': <'pending'>" in text.stdout
            nope = await gdbus_call(
                bus, "/org/daxd/Daxd1/devices/nope", f"{props}.GetAll", "''", nobody=True
            )
            assert nope.returncode != 0
            assert "org.freedesktop.DBus.Error.UnknownObject" in nope.stderr, nope.stderr

    run_async(body)


def test_tree_and_introspection(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with running_api(FakeController(), [device("dax0.0")]):
            tree = (await busctl(bus, "tree", BUS_NAME, nobody=True)).check().stdout
            assert DAX0 in tree

            manager = (
                (
                    await gdbus(
                        bus,
                        "introspect",
                        "--dest",
                        BUS_NAME,
                        "--object-path",
                        MANAGER_PATH,
                        nobody=True,
                    )
                )
                .check()
                .stdout
            )
            assert f"interface {OBJECT_MANAGER} {{" in manager
            assert f"interface {MANAGER_INTERFACE} {{" in manager
            assert '@org.gtk.GDBus.DocString("daxd\'s version.")' in manager
            manager = undocumented(manager)
            assert "Plan(in a{sv} options, out aa{sv} steps);" in manager
            assert "Reload(in a{sv} options);" in manager
            assert "Reconcile(in a{sv} options);" in manager
            assert "Apply(in as devices, in a{sv} options, out aa{sv} records);" in manager
            assert "ActionCompleted(s device, s action, s result, s message);" in manager
            assert "readonly ao Devices = ['/org/daxd/Daxd1/devices/dax0_0'];" in manager
            assert "node devices" in manager

            dev = (
                (
                    await gdbus(
                        bus, "introspect", "--dest", BUS_NAME, "--object-path", DAX0, nobody=True
                    )
                )
                .check()
                .stdout
            )
            assert f"interface {DEVICE_INTERFACE} {{" in dev
            assert "readonly s Name = 'dax0.0';" in dev
            assert "readonly t Size = 4294967296;" in dev
            assert "readonly b MemmapOnMemory = false;" in dev
            assert "Reconcile(in a{sv} options, out a{sv} record);" in undocumented(dev)
            assert "readwrite" not in dev

    run_async(body)


def test_interfaces_added_and_removed_come_from_the_manager_path(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with (
            running_api(FakeController(), [device("dax0.0")]) as api,
            signal_monitor(bus, api) as monitor,
        ):
            api.set_device(device("dax1.0"))
            added = await monitor.wait_for(lambda line: "InterfacesAdded" in line, "added")
            line = monitor.lines[added]
            assert line.startswith(
                f"{MANAGER_PATH}: {OBJECT_MANAGER}.InterfacesAdded "
                f"(objectpath '{DAX1}', {{'{DEVICE_INTERFACE}': {{"
            ), line
            assert "'Name': <'dax1.0'>" in line
            assert "'State': <'pending'>" in line
            assert "'BlocksTotal': <uint32 32>" in line

            api.remove_device("dax1.0")
            removed = await monitor.wait_for(lambda line: "InterfacesRemoved" in line, "removed")
            assert monitor.lines[removed] == (
                f"{MANAGER_PATH}: {OBJECT_MANAGER}.InterfacesRemoved "
                f"(objectpath '{DAX1}', ['{DEVICE_INTERFACE}'])"
            )

            end = await sync_signals(api, monitor, "end")
            signals = monitor.lines[:end]
            # exactly these two, none from the device's own path (dbus-fast's default)
            assert [s for s in signals if OBJECT_MANAGER in s] == [line, monitor.lines[removed]]
            devices_changes = [s for s in signals if f"('{MANAGER_INTERFACE}', {{'Devices'" in s]
            changed = f"{MANAGER_PATH}: org.freedesktop.DBus.Properties.PropertiesChanged"
            assert devices_changes == [
                f"{changed} ('{MANAGER_INTERFACE}', "
                f"{{'Devices': <[objectpath '{DAX0}', '{DAX1}']>}}, @as [])",
                f"{changed} ('{MANAGER_INTERFACE}', "
                f"{{'Devices': <[objectpath '{DAX0}']>}}, @as [])",
            ]
            assert added < signals.index(
                devices_changes[0]
            )  # the object exists before it is listed

            gone = await busctl(bus, "introspect", BUS_NAME, DAX1)
            assert gone.returncode != 0 or DEVICE_INTERFACE not in gone.stdout

    run_async(body)


def test_properties_changed_carries_only_what_changed(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with (
            running_api(FakeController(), [device("dax0.0"), device("dax1.0")]) as api,
            signal_monitor(bus, api) as monitor,
        ):
            api.set_device(device("dax0.0"))  # same values: no signal
            api.set_device(device("dax0.0", state=DeviceState.FAILED, last_error="EBUSY"))
            api.set_device(device("dax1.0", blocks_online=5, last_change=7))
            api.set_manager(replace(MANAGER, summary="1 failed"))
            api.set_manager(replace(MANAGER, summary="1 failed"))  # same again: no signal
            end = await sync_signals(api, monitor, "end")

            changes = [
                changed_properties(s) for s in monitor.lines[:end] if "PropertiesChanged" in s
            ]
            assert changes == [
                (DAX0, DEVICE_INTERFACE, {"State", "LastError"}),
                (device_object_path("dax1.0"), DEVICE_INTERFACE, {"BlocksOnline", "LastChange"}),
                (MANAGER_PATH, MANAGER_INTERFACE, {"Summary"}),
            ]
            first = next(s for s in monitor.lines if s.startswith(f"{DAX0}: "))
            assert "'State': <'failed'>" in first
            assert "'LastError': <'EBUSY'>" in first

            state = await busctl(bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "State")
            assert state.check().stdout.strip() == 's "failed"'

    run_async(body)


def test_action_completed_signal(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with (
            running_api(FakeController(), [device("dax0.0")]) as api,
            signal_monitor(bus, api) as monitor,
        ):
            api.action_completed("dax0.0", "online", "failed", "memory block 42: EBUSY")
            index = await monitor.wait_for(lambda line: "ActionCompleted" in line, "the signal")
            assert monitor.lines[index] == (
                f"{MANAGER_PATH}: {MANAGER_INTERFACE}.ActionCompleted "
                "('dax0.0', 'online', 'failed', 'memory block 42: EBUSY')"
            )

    run_async(body)


def test_devices_known_before_start_are_published_at_start(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with running_api(FakeController(), [device("dax0.0")]) as api:
            assert api.device_names == ["dax0.0"]
            got = await busctl(bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "Name")
            assert got.check().stdout.strip() == 's "dax0.0"'
        # stopped: the name and the objects are gone
        after = await busctl(bus, "get-property", BUS_NAME, DAX0, DEVICE_INTERFACE, "Name")
        assert after.returncode != 0

    run_async(body)

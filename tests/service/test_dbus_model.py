"""The D-Bus API without a bus: object paths, the published property types, state bookkeeping."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from dbus_fast import Variant

from daxd.kernel.model import HotplugSettings
from daxd.service.dbus_api import DBusApi, device_object_path
from daxd.service.dbus_objects import (
    DOC_ANNOTATION,
    DeviceInterface,
    InvalidOptionsError,
    ManagerInterface,
    checked_options,
)
from daxd.service.status import DeviceState, ManagerStatus
from tests.service.bus_daemon import DEVICE_TYPES, MANAGER_TYPES
from tests.service.dbus_bus import MANAGER, FakeController, device


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("dax0.0", "/org/daxd/Daxd1/devices/dax0_0"),
        ("dax12.3", "/org/daxd/Daxd1/devices/dax12_3"),
        ("dax-x", "/org/daxd/Daxd1/devices/dax_2dx"),
        ("a_b", "/org/daxd/Daxd1/devices/a_5fb"),
        ("µ", "/org/daxd/Daxd1/devices/_c2_b5"),
    ],
)
def test_device_object_path(name: str, path: str) -> None:
    assert device_object_path(name) == path


def test_device_object_path_rejects_empty_name() -> None:
    with pytest.raises(ValueError, match="empty"):
        device_object_path("")


def test_device_properties_have_the_documented_types() -> None:
    intro = DeviceInterface(device()).introspect()
    assert {p.name: p.signature for p in intro.properties} == DEVICE_TYPES
    assert all(p.access.value == "read" for p in intro.properties)
    methods = {m.name: signatures(m) for m in intro.methods}
    assert methods == {"Reconcile": (["options a{sv}"], ["record a{sv}"])}
    assert intro.signals == []


def signatures(m: Any) -> tuple[list[str], list[str]]:
    return [f"{a.name} {a.signature}" for a in m.in_args], [
        f"{a.name} {a.signature}" for a in m.out_args
    ]


def test_manager_properties_methods_and_signal() -> None:
    intro = ManagerInterface(MANAGER, tuple).introspect()
    assert {p.name: p.signature for p in intro.properties} == MANAGER_TYPES
    assert all(p.access.value == "read" for p in intro.properties)
    methods = {m.name: signatures(m) for m in intro.methods}
    assert methods == {
        "Reload": (["options a{sv}"], []),
        "Reconcile": (["options a{sv}"], []),
        "Apply": (["devices as", "options a{sv}"], ["records aa{sv}"]),
        "Plan": (["options a{sv}"], ["steps aa{sv}"]),
    }
    [signal] = intro.signals
    assert signal.name == "ActionCompleted"
    assert [(a.name, a.signature) for a in signal.args] == [
        ("device", "s"),
        ("action", "s"),
        ("result", "s"),
        ("message", "s"),
    ]


def test_values_are_converted_for_the_wire() -> None:
    values = DeviceInterface(device(state=DeviceState.FAILED)).dbus_values()
    assert values["State"].value == "failed"
    assert type(values["State"].value) is str
    assert values["Size"].signature == "t"
    assert values["MemmapOnMemory"] == Variant("b", False)
    assert values["Zone"] == Variant("s", "none")


def test_hotplug_leaves_out_what_the_kernel_does_not_show() -> None:
    values = ManagerInterface(MANAGER, tuple).dbus_values()
    assert values["Hotplug"] == Variant(
        "a{sv}",
        {
            "block-size": Variant("t", 128 << 20),
            "auto-online-blocks": Variant("s", "online"),
            "memmap-on-memory": Variant("b", False),
            "hotremove": Variant("b", True),
        },
    )  # online_policy is None: left out
    bare = replace(MANAGER, hotplug=HotplugSettings(None, None, None, None, False))
    assert ManagerInterface(bare, tuple).dbus_values()["Hotplug"] == Variant(
        "a{sv}", {"hotremove": Variant("b", False)}
    )
    assert ManagerInterface(replace(MANAGER, hotplug=None), tuple).Hotplug == {}


def test_every_member_is_documented() -> None:
    for interface in (DeviceInterface(device()), ManagerInterface(MANAGER, tuple)):
        intro = interface.introspect()
        assert intro.annotations[DOC_ANNOTATION]
        members: list[Any] = [*intro.properties, *intro.methods, *intro.signals]
        members += [a for m in intro.methods for a in (*m.in_args, *m.out_args)]
        members += [a for s in intro.signals for a in s.args]
        for member in members:
            assert member.annotations.get(DOC_ANNOTATION), (intro.name, member.name)
            assert member.name


@pytest.mark.parametrize(
    ("interface", "member", "options", "error"),
    [
        (
            "org.daxd.Daxd1.Manager",
            "Plan",
            {"x": Variant("s", "")},
            "unknown option 'x' (known: none)",
        ),
        (
            "org.daxd.Daxd1.Manager",
            "Apply",
            {"offline_timeout": Variant("d", 1.0)},
            "unknown option 'offline_timeout' (known: offline-timeout)",
        ),
        (
            "org.daxd.Daxd1.Device",
            "Reconcile",
            {"offline-timeout": Variant("i", 3)},
            "option 'offline-timeout' takes 'd': seconds, more than 0 and at most 86400",
        ),
        (
            "org.daxd.Daxd1.Manager",
            "Apply",
            {"offline-timeout": Variant("d", 0.0)},
            "option 'offline-timeout' takes 'd'",
        ),
    ],
)
def test_options_are_checked(
    interface: str, member: str, options: dict[str, Variant], error: str
) -> None:
    with pytest.raises(InvalidOptionsError, match=re.escape(f"{member}: {error}")):
        checked_options(interface, member, options)


def test_known_options_come_out_plain() -> None:
    options = {"offline-timeout": Variant("d", 7.5)}
    assert checked_options("org.daxd.Daxd1.Device", "Reconcile", options) == {
        "offline-timeout": 7.5
    }
    assert checked_options("org.daxd.Daxd1.Manager", "Reload", {}) == {}


def test_api_keeps_state_without_a_bus() -> None:
    api = DBusApi(FakeController(), MANAGER)
    api.set_device(device("dax0.0"))
    api.set_device(device("dax1.0"))
    api.set_device(device("dax0.0", state=DeviceState.APPLIED))
    api.remove_device("dax1.0")
    api.remove_device("dax7.7")  # unknown: ignored
    api.action_completed("dax0.0", "online", "ok", "")  # no bus: nothing to emit, no error
    assert api.device_names == ["dax0.0"]
    assert api.bus is None


@pytest.mark.parametrize(
    "bad",
    [
        {"size": -1},
        {"numa_node": 2**31},
        {"blocks_total": 2**32},
        {"last_change": -5},
    ],
)
def test_values_that_do_not_fit_are_refused(bad: dict[str, int]) -> None:
    api = DBusApi(FakeController(), MANAGER)
    with pytest.raises(ValueError, match="cannot be published"):
        api.set_device(device("dax0.0", **bad))
    assert api.device_names == []

    api.set_device(device())
    with pytest.raises(ValueError, match="cannot be published"):
        api.set_device(device("dax0.0", **bad))
    assert api.device_names == ["dax0.0"]


def test_names_that_map_to_one_path_are_refused() -> None:
    api = DBusApi(FakeController(), MANAGER)
    api.set_device(device("x.2d"))
    with pytest.raises(ValueError, match="same object path"):
        api.set_device(device("x-"))
    assert api.device_names == ["x.2d"]


def test_bad_manager_status_is_refused_and_the_old_one_kept() -> None:
    api = DBusApi(FakeController(), MANAGER)
    with pytest.raises(ValueError, match="manager status cannot be published"):
        api.set_manager(ManagerStatus("1", "/p", "", -1, "s"))
    with pytest.raises(ValueError, match="manager status cannot be published"):
        DBusApi(FakeController(), ManagerStatus("1", "/p", "", -1, "s"))
    api.set_manager(MANAGER)  # still usable after the refusals

"""The running daemon introspects exactly what the installed interface files say, and its new
calls work end to end: Device.Reconcile, Plan's records, and `daxd apply` as its client.

The daemon runs in this process on a fake kernel, on the private system bus
(``serve(daemon, use_bus=True)``); the clients are real ones in subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daxd.service.bus_names import (
    DEVICE_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    REGION_INTERFACE,
    REGIONS_PATH,
)
from tests.apply import test_cxl_region_apply as lab
from tests.fakekernel import FakeKernel
from tests.service.bus_daemon import machine, running
from tests.service.dbus_bus import (
    REPO,
    PrivateSystemBus,
    busctl,
    gdbus_call,
    run_async,
    run_client,
    system_bus_for_test,
)

DAX0 = "/org/daxd/Daxd1/devices/dax0_0"
STANDARD = "org.freedesktop.DBus."


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    (tmp_path / "bus").mkdir()
    with system_bus_for_test(tmp_path / "bus", monkeypatch) as private_bus:
        yield private_bus


def doc_annotations(element: ET.Element) -> dict[str, str]:
    return {a.get("name", ""): a.get("value", "") for a in element.findall("annotation")}


def describe(xml: str) -> dict[str, Any]:
    """daxd's interfaces in an introspection document: every member, type, access, direction
    and annotation (the standard org.freedesktop.DBus.* interfaces left out)."""
    found: dict[str, Any] = {}
    for interface in ET.fromstring(xml).iter("interface"):
        name = interface.get("name", "")
        if name.startswith(STANDARD):
            continue
        members: dict[str, Any] = {}
        for kind in ("method", "signal", "property"):
            for member in interface.findall(kind):
                args = [
                    (a.get("name"), a.get("type"), a.get("direction"), doc_annotations(a))
                    for a in member.findall("arg")
                ]
                members[f"{kind} {member.get('name')}"] = (
                    member.get("type"),
                    member.get("access"),
                    args,
                    doc_annotations(member),
                )
        found[name] = {"annotations": doc_annotations(interface), "members": members}
    return found


async def introspect(bus: PrivateSystemBus, path: str) -> str:
    result = await busctl(
        bus,
        "--json=short",
        "call",
        "org.daxd.Daxd1",
        path,
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
        nobody=True,
    )
    text: str = result.json()["data"][0]
    return text


def interface_files(folder: Path) -> dict[str, Any]:
    """What `python -m daxd.service.dbus_xml` writes, described."""
    subprocess.run(
        [sys.executable, "-m", "daxd.service.dbus_xml", str(folder)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return {
        name: describe((folder / f"{name}.xml").read_text())[name]
        for name in (MANAGER_INTERFACE, DEVICE_INTERFACE, REGION_INTERFACE)
    }


def test_the_live_introspection_is_the_interface_files(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    written = interface_files(tmp_path / "interfaces")

    async def scenario() -> dict[str, dict[str, Any]]:
        async with running(fake_kernel, tmp_path):
            return {
                "manager": describe(await introspect(bus, MANAGER_PATH)),
                "device": describe(await introspect(bus, DAX0)),
            }

    live = run_async(scenario)
    assert live["manager"] == {MANAGER_INTERFACE: written[MANAGER_INTERFACE]}
    assert live["device"] == {DEVICE_INTERFACE: written[DEVICE_INTERFACE]}
    manager = written[MANAGER_INTERFACE]["members"]
    assert set(manager) == {
        *(f"property {p}" for p in ("Version", "PolicyPath", "PolicyError", "PolicyLoadedAt")),
        *(f"property {p}" for p in ("Devices", "Summary", "Conflicts", "Hotplug", "Diagnostics")),
        *(f"method {m}" for m in ("Reload", "Reconcile", "Apply", "Plan")),
        "signal ActionCompleted",
    }
    assert manager["property Hotplug"][:2] == ("a{sv}", "read")
    _, _, args, docs = manager["method Apply"]
    assert [a[:3] for a in args] == [
        ("devices", "as", "in"),
        ("options", "a{sv}", "in"),
        ("records", "aa{sv}", "out"),
    ]
    assert "Root only" in docs["org.gtk.GDBus.DocString"]
    device = written[DEVICE_INTERFACE]["members"]
    assert device["property MemmapOnMemory"][:2] == ("b", "read")
    assert [a[:3] for a in device["method Reconcile"][2]] == [
        ("options", "a{sv}", "in"),
        ("record", "a{sv}", "out"),
    ]


REGION_POLICY = """\
regions:
  - name: pair
    memdevs: [0x1000, 0x1001]
rules: []
"""


def test_a_region_introspects_as_its_interface_file(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    lab.machine(fake_kernel)
    written = interface_files(tmp_path / "interfaces")

    async def scenario() -> dict[str, Any]:
        async with running(fake_kernel, tmp_path, REGION_POLICY):
            return describe(await introspect(bus, f"{REGIONS_PATH}/pair"))

    assert run_async(scenario) == {REGION_INTERFACE: written[REGION_INTERFACE]}
    region = written[REGION_INTERFACE]["members"]
    assert set(region) == {
        *(f"property {p}" for p in ("Name", "Location", "State", "Reason", "Region", "Window")),
        *(f"property {p}" for p in ("Memdevs", "Size", "Devices", "LastError", "LastChange")),
    }
    assert {access for _, access, _, _ in region.values()} == {"read"}
    assert (
        "org.daxd.Daxd1.Region"
        in written[MANAGER_INTERFACE]["annotations"]["org.gtk.GDBus.DocString"]
    )


def test_device_reconcile_plan_and_apply_on_the_real_daemon(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)

    async def scenario() -> None:
        async with running(fake_kernel, tmp_path) as service:
            h = service.h
            props = (
                await busctl(
                    bus,
                    "--json=short",
                    "call",
                    "org.daxd.Daxd1",
                    DAX0,
                    "org.freedesktop.DBus.Properties",
                    "GetAll",
                    "s",
                    DEVICE_INTERFACE,
                    nobody=True,
                )
            ).json()["data"][0]
            values = {k: v["data"] for k, v in props.items()}
            assert values["Zone"] == "movable"
            assert values["BlocksMovable"] == values["BlocksOnline"] == values["BlocksTotal"] > 0
            assert values["BlocksNormal"] == 0
            assert props["MemmapOnMemory"] == {"type": "b", "data": False}
            pmem = (
                await busctl(
                    bus,
                    "get-property",
                    "org.daxd.Daxd1",
                    "/org/daxd/Daxd1/devices/dax5_0",
                    DEVICE_INTERFACE,
                    "Zone",
                )
            ).check()
            assert pmem.stdout.strip() == 's "none"'

            # Device.Reconcile: in sync; its record is the apply entry
            one = await busctl(
                bus,
                "--json=short",
                "call",
                "org.daxd.Daxd1",
                DAX0,
                DEVICE_INTERFACE,
                "Reconcile",
                "a{sv}",
                "0",
            )
            record = one.json()["data"][0]
            assert record["name"] == {"type": "s", "data": "dax0.0"}
            assert record["outcome"] == {"type": "s", "data": "in-sync"}
            assert record["final"]["data"]["zone"] == {"type": "s", "data": "movable"}
            denied = await gdbus_call(bus, DAX0, f"{DEVICE_INTERFACE}.Reconcile", "{}", nobody=True)
            assert "AccessDenied" in denied.stderr

            # Plan: nothing to do
            plan = await busctl(
                bus,
                "--json=short",
                "call",
                "org.daxd.Daxd1",
                MANAGER_PATH,
                MANAGER_INTERFACE,
                "Plan",
                "a{sv}",
                "0",
                nobody=True,
            )
            assert plan.json() == {"type": "aa{sv}", "data": [[]]}

            # `daxd apply --json` on the running system: the daemon does it and answers records
            ran = await run_client(bus, [sys.executable, "-m", "daxd", "apply", "--json"])
            doc = json.loads(ran.check().stdout)
            assert (doc["kind"], doc["legacy_device_model"]) == ("apply", False)
            assert doc["hotplug"]["block_size"] == fake_kernel.config.block_size
            assert doc["hotplug"]["auto_online_blocks"] == "online"
            assert [(d["name"], d["outcome"]) for d in doc["devices"]] == [
                ("dax0.0", "in-sync"),
                ("dax5.0", "in-sync"),
            ]
            assert doc["devices"][0]["blocks"]["online"] == values["BlocksOnline"]
            text = await run_client(bus, [sys.executable, "-m", "daxd", "apply", "dax5.0"])
            assert text.check().stdout == (
                "dax5.0: in-sync (rule 'pmem-devdax')\n"
                "  bound to device_dax as the rule wants\n"
                "  now: devdax, zone -, 0/0 blocks online\n"
            )
            assert h.daemon.policy.rules[0].name == "hmem-movable"

    run_async(scenario)

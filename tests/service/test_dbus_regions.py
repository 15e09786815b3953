"""org.daxd.Daxd1.Region: the policy's CXL regions as objects beside the devices, their paths
(names escaped as sd_bus_path_encode does), typed read-only properties, the ObjectManager's
signals, and the daemon publishing what its region keeper finds pass after pass."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.validators import is_object_path_valid
from hypothesis import given
from hypothesis import strategies as st

from daxd.policy.values import NAME_LIMIT
from daxd.service.dbus_api import (
    BUS_NAME,
    DEVICE_INTERFACE,
    MANAGER_PATH,
    REGION_INTERFACE,
    REGIONS_PATH,
    DBusApi,
    region_name,
    region_object_path,
)
from daxd.service.dbus_objects import RegionInterface, RegionValues
from daxd.service.regions import RegionStatus
from tests.apply.test_cxl_region_apply import A, B, machine
from tests.fakekernel import FakeKernel, MiB
from tests.service.bus_daemon import REGION_TYPES, Service, running
from tests.service.daemon_harness import RecordingPublisher, harness, start, stop
from tests.service.dbus_bus import (
    MANAGER,
    FakeController,
    PrivateSystemBus,
    busctl,
    device,
    error_name,
    gdbus,
    gdbus_call,
    run_async,
    run_client,
    running_api,
    signal_monitor,
    sync_signals,
    system_bus_for_test,
)
from tests.service.test_dbus_objects import changed_properties, unpack

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
PAIR = f"{REGIONS_PATH}/pair"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dbus.md"


def region(name: str = "pair", **changes: Any) -> RegionStatus:
    status = RegionStatus(
        name=name,
        location="/etc/daxd/policy.yaml:2",
        state="present",
        reason="region2 exists",
        region="region2",
        window="decoder0.2",
        memdevs=("mem1 (serial 0x1000)", "mem0 (serial 0x1001)"),
        size=512 * MiB,
        devices=("dax2.0",),
        last_change=1_700_000_000_000_002,
    )
    return replace(status, **changes)


def wire(status: RegionStatus) -> dict[str, list[Any]]:
    """The region as busctl --json shows it: name -> [signature, value]."""
    return {
        "Name": ["s", status.name],
        "Location": ["s", status.location],
        "State": ["s", status.state],
        "Reason": ["s", status.reason],
        "Region": ["s", status.region or ""],
        "Window": ["s", status.window or ""],
        "Memdevs": ["as", list(status.memdevs)],
        "Size": ["t", status.size or 0],
        "Devices": ["as", list(status.devices)],
        "LastError": ["s", status.last_error],
        "LastChange": ["t", status.last_change],
    }


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    (tmp_path / "bus").mkdir()
    with system_bus_for_test(tmp_path / "bus", monkeypatch) as private_bus:
        yield private_bus


async def get_all(bus: PrivateSystemBus, path: str) -> dict[str, list[Any]]:
    result = await busctl(
        bus, "--json=short", "call", BUS_NAME, path, PROPERTIES, "GetAll", "s", REGION_INTERFACE,
        nobody=True,
    )  # fmt: skip
    return unpack(result.json()["data"][0])


async def managed_objects(bus: PrivateSystemBus) -> dict[str, Any]:
    result = await busctl(
        bus, "--json=short", "call", BUS_NAME, MANAGER_PATH, OBJECT_MANAGER, "GetManagedObjects",
        nobody=True,
    )  # fmt: skip
    objects: dict[str, Any] = result.json()["data"][0]
    return objects


# --- the object paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "element"),
    [
        ("pair", "pair"),
        ("cxl pair", "cxl_20pair"),
        ("a_b", "a_5fb"),
        ("a.b", "a_2eb"),
        ("2-way/8K", "2_2dway_2f8K"),
        ("é", "_c3_a9"),
        ("", "_"),
    ],
)
def test_the_path_escapes_every_byte_outside_letters_and_digits(name: str, element: str) -> None:
    path = region_object_path(name)
    assert path == f"{REGIONS_PATH}/{element}"
    assert region_name(path) == name


@given(st.text(max_size=NAME_LIMIT))
def test_any_name_has_one_valid_path_that_gives_it_back(name: str) -> None:
    path = region_object_path(name)
    assert is_object_path_valid(path)
    assert path.count("/") == REGIONS_PATH.count("/") + 1  # one element below /regions
    assert region_name(path) == name


@pytest.mark.parametrize(
    "element",
    ["_41", "_C3_A9", "_4", "_zz", "a-b", "_ff", "pair/x", "__"],
    ids=["A-escaped", "upper-hex", "short", "not-hex", "raw-dash", "not-utf8", "two", "bare"],
)
def test_a_path_the_encoding_does_not_make_is_no_name(element: str) -> None:
    with pytest.raises(ValueError, match="is not the path of a region"):
        region_name(f"{REGIONS_PATH}/{element}")


def test_a_path_outside_the_regions_is_no_name() -> None:
    with pytest.raises(ValueError, match="not below"):
        region_name("/org/daxd/Daxd1/devices/pair")


def test_the_longest_policy_name_fits_and_a_longer_path_is_refused() -> None:
    api = DBusApi(FakeController(), MANAGER)
    longest = "\U0001d538" * NAME_LIMIT  # 4 UTF-8 bytes, 12 characters escaped, each
    api.set_region(region(longest))
    assert api.region_names == [longest]
    with pytest.raises(ValueError, match="too long"):
        api.set_region(region(longest * 2))
    assert api.region_names == [longest]


# --- the interface without a bus ----------------------------------------------------------------


def test_the_properties_have_the_documented_types_and_are_read_only() -> None:
    intro = RegionInterface(RegionValues("pair")).introspect()
    assert {p.name: p.signature for p in intro.properties} == REGION_TYPES
    assert {p.access.value for p in intro.properties} == {"read"}
    assert intro.methods == []
    assert intro.signals == []


def test_the_d_bus_doc_gives_each_property_its_type() -> None:
    text = DOCS.read_text()
    section = text.split(f"## `{REGION_INTERFACE}`", 1)[1].split("\n## ", 1)[0]
    rows = [ln.split("|") for ln in section.splitlines() if ln.startswith("| `")]
    documented = {cells[1].strip(" `"): cells[2].strip(" `") for cells in rows}
    assert {k: documented[k] for k in REGION_TYPES} == REGION_TYPES


def test_what_the_keeper_does_not_know_is_empty_or_zero() -> None:
    api = DBusApi(FakeController(), MANAGER)
    api.set_region(
        region(state="waiting", region=None, window=None, memdevs=(), size=None, devices=())
    )
    assert api.published_region("pair") == RegionValues(
        name="pair",
        location="/etc/daxd/policy.yaml:2",
        state="waiting",
        reason="region2 exists",
        last_change=1_700_000_000_000_002,
    )
    assert api.published_region("other") is None


@pytest.mark.parametrize("bad", [{"size": -1}, {"last_change": 2**64}])
def test_values_that_do_not_fit_are_refused(bad: dict[str, int]) -> None:
    api = DBusApi(FakeController(), MANAGER)
    with pytest.raises(ValueError, match="cannot be published"):
        api.set_region(region("pair", **bad))
    assert api.region_names == []
    api.set_region(region())
    with pytest.raises(ValueError, match="cannot be published"):
        api.set_region(region("pair", **bad))
    assert api.published_region("pair") == RegionValues.of(region())
    api.remove_region("nope")  # unknown: ignored
    api.remove_region("pair")
    assert api.region_names == []


# --- on the bus ---------------------------------------------------------------------------------


def test_the_object_manager_lists_regions_beside_the_devices(bus: PrivateSystemBus) -> None:
    pair, odd = region(), region("x y/é", state="refused", region=None, reason="no window")

    async def body() -> None:
        async with running_api(FakeController(), [device("dax2.0")]) as api:
            api.set_region(pair)
            api.set_region(odd)
            objects = await managed_objects(bus)
            odd_path = f"{REGIONS_PATH}/x_20y_2f_c3_a9"
            assert set(objects) == {"/org/daxd/Daxd1/devices/dax2_0", PAIR, odd_path}
            assert set(objects[PAIR]) == {REGION_INTERFACE}
            assert unpack(objects[PAIR][REGION_INTERFACE]) == wire(pair)
            assert unpack(objects[odd_path][REGION_INTERFACE]) == wire(odd)
            assert await get_all(bus, odd_path) == wire(odd)
            # GetAll("") (every interface of the object) answers for regions too
            every = await busctl(
                bus, "--json=short", "call", BUS_NAME, PAIR, PROPERTIES, "GetAll", "s", "",
                nobody=True,
            )  # fmt: skip
            assert unpack(every.json()["data"][0]) == wire(pair)
            text = (await gdbus_call(bus, PAIR, f"{PROPERTIES}.GetAll", REGION_INTERFACE)).check()
            assert "'Size': <uint64 536870912>" in text.stdout
            assert "'Memdevs': <['mem1 (serial 0x1000)', 'mem0 (serial 0x1001)']>" in text.stdout
            intro = (
                await gdbus(
                    bus, "introspect", "--dest", BUS_NAME, "--object-path", PAIR, nobody=True
                )
            ).check()
            assert f"interface {REGION_INTERFACE} {{" in intro.stdout
            assert "readonly s Region = 'region2';" in intro.stdout
            assert "readwrite" not in intro.stdout
            assert f"interface {DEVICE_INTERFACE} {{" not in intro.stdout
            tree = (await busctl(bus, "tree", BUS_NAME, nobody=True)).check()
            assert PAIR in tree.stdout

    run_async(body)


def test_regions_come_and_go_with_the_object_manager_signals(bus: PrivateSystemBus) -> None:
    async def body() -> None:
        async with (
            running_api(FakeController()) as api,
            signal_monitor(bus, api) as monitor,
        ):
            api.set_region(region(state="waiting", region=None, reason="waiting for serial 0x1001"))
            api.set_region(region(state="waiting", region=None, reason="waiting for serial 0x1001"))
            api.set_region(region(last_change=1_700_000_000_000_009))
            api.remove_region("pair")
            end = await sync_signals(api, monitor, "end")
            signals = [s for s in monitor.lines[:end] if "knock" not in s]
            added, changed, removed = signals
            assert added.startswith(
                f"{MANAGER_PATH}: {OBJECT_MANAGER}.InterfacesAdded "
                f"(objectpath '{PAIR}', {{'{REGION_INTERFACE}': {{"
            ), added
            assert "'State': <'waiting'>" in added
            assert "'Region': <''>" in added
            assert changed_properties(changed) == (
                PAIR,
                REGION_INTERFACE,
                {"State", "Reason", "Region", "LastChange"},
            )
            assert "'State': <'present'>" in changed
            assert removed == (
                f"{MANAGER_PATH}: {OBJECT_MANAGER}.InterfacesRemoved "
                f"(objectpath '{PAIR}', ['{REGION_INTERFACE}'])"
            )
            gone = await busctl(bus, "get-property", BUS_NAME, PAIR, REGION_INTERFACE, "Name")
            assert gone.returncode != 0

    run_async(body)


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
def test_anyone_reads_nobody_sets(bus: PrivateSystemBus, nobody: bool) -> None:
    async def body() -> None:
        async with running_api(FakeController()) as api:
            api.set_region(region())
            got = await busctl(
                bus, "get-property", BUS_NAME, PAIR, REGION_INTERFACE, "State", nobody=nobody
            )
            assert got.check().stdout.strip() == 's "present"'
            result = await gdbus_call(
                bus, PAIR, f"{PROPERTIES}.Set", REGION_INTERFACE, "State", "<'absent'>",
                nobody=nobody,
            )  # fmt: skip
            expected = ACCESS_DENIED if nobody else "org.freedesktop.DBus.Error.PropertyReadOnly"
            assert error_name(result) == expected
            size = await busctl(
                bus, "set-property", BUS_NAME, PAIR, REGION_INTERFACE, "Size", "t", "1",
                nobody=nobody,
            )  # fmt: skip
            assert size.returncode != 0
            assert api.published_region("pair") == RegionValues.of(region())

    run_async(body)


def test_a_region_answers_no_device_method(bus: PrivateSystemBus) -> None:
    controller = FakeController()

    async def body() -> None:
        async with running_api(controller) as api:
            api.set_region(region())
            result = await gdbus_call(bus, PAIR, f"{DEVICE_INTERFACE}.Reconcile", "{}")
            assert error_name(result) == "org.freedesktop.DBus.Error.UnknownMethod"

    run_async(body)
    assert controller.calls == []


def test_regions_known_before_start_are_published_at_start(bus: PrivateSystemBus) -> None:
    b = region("b", region="region3")

    async def body() -> None:
        async with running_api(FakeController(), regions=[region(), b]) as api:
            assert api.region_names == ["pair", "b"]
            assert await get_all(bus, f"{REGIONS_PATH}/b") == wire(b)
            assert await get_all(bus, PAIR) == wire(region())
        after = await busctl(bus, "get-property", BUS_NAME, PAIR, REGION_INTERFACE, "Name")
        assert after.returncode != 0  # stopped: gone with the name

    run_async(body)


# --- the daemon ---------------------------------------------------------------------------------

POLICY = """\
regions:
  - name: pair
    memdevs: [0x1000, 0x1001]
  - name: "spare x/é"
    memdevs: [0x2000]
rules:
  - name: cxl-movable
    match: {provider: cxl}
    mode: system-ram
    zone: movable
"""
SPARE = f"{REGIONS_PATH}/spare_20x_2f_c3_a9"


def lab_without_b(kernel: FakeKernel) -> FakeKernel:
    """tests/apply/test_cxl_region_apply.py's machine() before cxl_pci probes serial 0x1001."""
    for uid in (52, 12):
        kernel.add_cxl_host_bridge(uid)
    kernel.add_cxl_memdev(A, 12, ram_size=256 * MiB)
    kernel.add_cxl_window([12], start=0x1_1000_0000)
    kernel.add_cxl_window([52], start=0x2_1000_0000)
    kernel.add_cxl_window([12, 52], start=0x3_1000_0000, granularity=8192)
    return kernel


async def reload(bus: PrivateSystemBus, service: Service, policy: str) -> None:
    service.h.policy.write_text(policy)
    done = await busctl(
        bus, "call", BUS_NAME, MANAGER_PATH, "org.daxd.Daxd1.Manager", "Reload", "a{sv}", "0"
    )
    done.check()


def test_the_daemon_publishes_the_regions_as_they_change(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    lab_without_b(fake_kernel)

    async def scenario() -> None:
        async with running(fake_kernel, tmp_path, POLICY, region_wait=0.2) as service:
            h = service.h
            location = f"{h.policy}:"
            waiting = await get_all(bus, PAIR)
            assert waiting["State"] == ["s", "waiting"]
            assert waiting["Reason"] == ["s", "waiting for serial 0x1001: not on the cxl bus"]
            assert waiting["Location"] == ["s", f"{location}2"]
            assert (waiting["Region"], waiting["Size"], waiting["Devices"]) == (
                ["s", ""],
                ["t", 0],
                ["as", []],
            )
            assert waiting["LastChange"][1] > 0
            spare = await get_all(bus, SPARE)
            assert spare["Name"] == ["s", "spare x/é"]
            assert spare["State"] == ["s", "waiting"]

            async with signal_monitor(bus, service.api) as monitor:
                fake_kernel.add_cxl_memdev(B, 52, ram_size=256 * MiB)  # cxl_pci probes it late
                await h.until(lambda: h.daemon.published_regions["pair"].state == "present")
                await h.settled()
                end = await sync_signals(service.api, monitor, "built")
                changes = [
                    changed_properties(s)
                    for s in monitor.lines[:end]
                    if "PropertiesChanged" in s and REGIONS_PATH in s
                ]
            # the one that changed, not the one still waiting; no region came or went, the
            # device it brings did come
            assert {path for path, _, _ in changes} == {PAIR}, changes
            assert "State" in {name for _, _, names in changes for name in names}
            objects = [s for s in monitor.lines[:end] if "Interfaces" in s]
            assert [s.split("'")[1] for s in objects] == ["/org/daxd/Daxd1/devices/dax2_0"]

            present = await get_all(bus, PAIR)
            assert present["State"] == ["s", "present"]
            assert present["Region"] == ["s", "region2"]
            assert present["Window"] == ["s", "decoder0.2"]
            assert present["Size"] == ["t", 512 * MiB]
            assert present["Devices"] == ["as", ["dax2.0"]]
            assert present["Memdevs"] == ["as", ["mem0 (serial 0x1000)", "mem1 (serial 0x1001)"]]
            assert present["LastChange"][1] > waiting["LastChange"][1]
            assert present == wire(h.daemon.published_regions["pair"])
            assert await get_all(bus, SPARE) == spare  # untouched

            # `daxd status`, as anyone: a line per region before the devices, and JSON
            text = await run_client(bus, [sys.executable, "-m", "daxd", "status"], nobody=True)
            lines = text.check().stdout.splitlines()
            pair_line = f"region pair: present (region2): {present['Reason'][1]}"
            spare_line = "region spare x/é: waiting: waiting for serial 0x2000: not on the cxl bus"
            assert pair_line in lines, lines
            assert spare_line in lines, lines
            table = next(i for i, ln in enumerate(lines) if ln.startswith("DEVICE"))
            assert lines.index(pair_line) < lines.index(spare_line) < table
            doc = await run_client(
                bus, [sys.executable, "-m", "daxd", "status", "--json"], nobody=True
            )
            regions = json.loads(doc.check().stdout)["regions"]
            assert [(r["Name"], r["State"], r["Region"]) for r in regions] == [
                ("pair", "present", "region2"),
                ("spare x/é", "waiting", ""),
            ]
            assert regions[0] == {name: value for name, (_, value) in present.items()}

            # a reload without one of them: its object goes, the other stays as it was
            async with signal_monitor(bus, service.api) as monitor:
                await reload(bus, service, POLICY.replace('  - name: "spare x/é"\n', "").replace(
                    "    memdevs: [0x2000]\n", ""
                ))  # fmt: skip
                await h.settled()
                end = await sync_signals(service.api, monitor, "dropped")
                removals = [s for s in monitor.lines[:end] if "Interfaces" in s]
            assert removals == [
                f"{MANAGER_PATH}: {OBJECT_MANAGER}.InterfacesRemoved "
                f"(objectpath '{SPARE}', ['{REGION_INTERFACE}'])"
            ]
            assert set(await managed_objects(bus)) >= {PAIR}
            assert SPARE not in await managed_objects(bus)
            assert (await get_all(bus, PAIR))["State"] == ["s", "present"]

            # and a policy with no regions at all: none is published
            await reload(bus, service, "rules:\n" + POLICY.split("rules:\n", 1)[1])
            await h.settled()
            assert not [p for p in await managed_objects(bus) if p.startswith(REGIONS_PATH)]
            assert service.api.region_names == []
            assert h.daemon.published_regions == {}

    run_async(scenario)


# --- what the daemon hands its publisher ---------------------------------------------------------


def test_the_publisher_gets_a_region_when_it_changed_and_not_again(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:
        h.daemon.config.region_wait = 0.1

        async def scenario() -> None:
            task = await start(h)
            published = dict(h.publisher.regions)
            assert published == h.daemon.published_regions
            assert published == {s.name: s for s in h.daemon.reconciler.regions.status.values()}
            assert published["pair"].state == "present"
            seen = len(h.publisher.region_history)
            await h.daemon.reconcile()
            await h.daemon.reconcile()
            assert h.publisher.region_history[seen:] == []  # nothing changed: nothing sent
            assert h.publisher.regions_removed == []
            h.policy.write_text("rules:\n" + POLICY.split("rules:\n", 1)[1])
            await h.daemon.reload()
            assert sorted(h.publisher.regions_removed) == ["pair", "spare x/é"]
            assert h.publisher.regions == {}
            await stop(h, task)

        run_async(scenario)


@dataclass
class Refusing(RecordingPublisher):
    """Refuses the regions named in ``refuse``, as the D-Bus API refuses values that do not fit
    their type."""

    refuse: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)

    def set_region(self, status: RegionStatus) -> None:
        if status.name in self.refuse:
            self.refused.append(status.name)
            raise ValueError(f"region {status.name!r} cannot be published")
        super().set_region(status)


def test_a_region_the_publisher_refused_is_given_again_after_the_next_pass(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:
        h.daemon.config.region_wait = 0.1
        h.daemon.publisher = publisher = Refusing(refuse={"pair"})

        async def scenario() -> None:
            task = await start(h)  # the worker lived on: the error was logged
            assert publisher.refused
            assert set(publisher.regions) == set(h.daemon.published_regions) == {"spare x/é"}
            publisher.refuse.clear()
            await h.daemon.reconcile()  # nothing changed for pair, but it was never published
            assert set(publisher.regions) == {"pair", "spare x/é"}
            assert publisher.regions == h.daemon.published_regions
            await stop(h, task)

        run_async(scenario)

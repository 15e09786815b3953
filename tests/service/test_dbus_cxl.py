"""Device.Cxl: a CXL device's identity on D-Bus, typed, as busctl and gdbus read it; empty for
other devices; published by the daemon from what it read of the cxl bus."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daxd.kernel.model import CxlIdentity, CxlMemdev
from daxd.service.dbus_api import BUS_NAME, DEVICE_INTERFACE
from tests.fakekernel import FakeKernel, MiB
from tests.service.bus_daemon import running
from tests.service.dbus_bus import (
    FakeController,
    PrivateSystemBus,
    busctl,
    device,
    gdbus_call,
    run_async,
    running_api,
    system_bus_for_test,
)

DAX0 = "/org/daxd/Daxd1/devices/dax0_0"
DAX1 = "/org/daxd/Daxd1/devices/dax1_0"
A, B = 0x1000, 0x1001
IDENTITY = CxlIdentity(
    region="region2",
    uuid=None,
    mode="ram",
    interleave_ways=2,
    interleave_granularity=8192,
    window="decoder0.2",
    window_start=0x3_1000_0000,
    memdevs=(
        CxlMemdev(0, "mem1", A, "pci0000:0c", 12),
        CxlMemdev(1, "mem0", None, "pci0000:34", None),  # what the kernel did not show
    ),
)


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    (tmp_path / "bus").mkdir()
    with system_bus_for_test(tmp_path / "bus", monkeypatch) as private_bus:
        yield private_bus


async def get_cxl(bus: PrivateSystemBus, path: str) -> Any:
    result = await busctl(
        bus, "--json=short", "get-property", BUS_NAME, path, DEVICE_INTERFACE, "Cxl", nobody=True
    )
    return result.json()


def test_the_property_is_typed_and_leaves_out_what_is_not_known(bus: PrivateSystemBus) -> None:
    cxl, other = replace(device("dax0.0"), cxl=IDENTITY), device("dax1.0", provider="hmem")

    async def body() -> None:
        async with running_api(FakeController(), [cxl, other]):
            prop = await get_cxl(bus, DAX0)
            assert prop["type"] == "a{sv}"
            data = prop["data"]
            assert data["region"] == {"type": "s", "data": "region2"}
            assert data["interleave_ways"] == {"type": "u", "data": 2}
            assert data["interleave_granularity"] == {"type": "u", "data": 8192}
            assert data["window"] == {"type": "s", "data": "decoder0.2"}
            assert data["window_start"] == {"type": "s", "data": "0x310000000"}
            assert "uuid" not in data
            first, second = data["memdevs"]["data"]
            assert data["memdevs"]["type"] == "aa{sv}"
            assert first == {
                "position": {"type": "u", "data": 0},
                "memdev": {"type": "s", "data": "mem1"},
                "serial": {"type": "t", "data": A},
                "host_bridge": {"type": "s", "data": "pci0000:0c"},
                "host_bridge_uid": {"type": "u", "data": 12},
            }
            assert set(second) == {"position", "memdev", "host_bridge"}
            assert await get_cxl(bus, DAX1) == {"type": "a{sv}", "data": {}}
            text = (
                await gdbus_call(
                    bus,
                    DAX0,
                    "org.freedesktop.DBus.Properties.Get",
                    DEVICE_INTERFACE,
                    "Cxl",
                    nobody=True,
                )
            ).check()
            assert "'serial': <uint64 4096>" in text.stdout
            assert "'host_bridge_uid': <uint32 12>" in text.stdout

    run_async(body)


POLICY = """\
rules:
  - name: b-devdax
    match: {serial: "0x1001"}
    mode: devdax
"""


def test_the_daemon_publishes_what_it_read(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    fake_kernel.add_hmem_device(size=256 * MiB)  # dax0.0
    fake_kernel.add_cxl_device(size=256 * MiB, serials=[B], host_bridges=[52])  # dax1.0

    async def scenario() -> None:
        async with running(fake_kernel, tmp_path, POLICY) as service:
            prop = await get_cxl(bus, DAX1)
            data = prop["data"]
            assert data["region"] == {"type": "s", "data": "region1"}
            (memdev,) = data["memdevs"]["data"]
            assert memdev["serial"] == {"type": "t", "data": B}
            assert memdev["host_bridge"] == {"type": "s", "data": "pci0000:34"}
            assert memdev["host_bridge_uid"] == {"type": "u", "data": 52}
            assert await get_cxl(bus, DAX0) == {"type": "a{sv}", "data": {}}
            status = service.api.published_device("dax1.0")
            assert status is not None
            assert status.rule == "b-devdax"
            assert status.cxl is not None
            assert status.cxl.serials == (B,)

    run_async(scenario)

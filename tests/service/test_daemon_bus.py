"""The daemon on a private system bus, seen by real clients: busctl, and `daxd status`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from daxd.service.run import serve
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness
from tests.service.dbus_bus import busctl, run_async, run_client, system_bus_for_test

POLICY = """\
rules:
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
"""

DEVICE = "/org/daxd/Daxd1/devices/dax0_0"
MANAGER = "/org/daxd/Daxd1"


def test_daemon_state_over_dbus(
    hmem_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        system_bus_for_test(tmp_path, monkeypatch) as bus,
        harness(hmem_kernel, tmp_path, POLICY) as h,
    ):

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(serve(h.daemon, use_bus=True))
            await h.until(lambda: h.daemon.ready or task.done())
            assert not task.done()

            state = await busctl(
                bus, "get-property", "org.daxd.Daxd1", DEVICE, "org.daxd.Daxd1.Device", "State"
            )
            assert state.check().stdout.strip() == 's "applied"'
            zone = await busctl(
                bus, "get-property", "org.daxd.Daxd1", DEVICE, "org.daxd.Daxd1.Device", "Zone",
                nobody=True,
            )  # fmt: skip
            assert zone.check().stdout.strip() == 's "movable"'

            # `daxd status` as an unprivileged user reads the daemon's view.
            status = await run_client(
                bus, [sys.executable, "-m", "daxd", "status", "--json"], nobody=True
            )
            doc = json.loads(status.check().stdout)
            assert doc["source"] == "daemon"
            assert [
                (d["Name"], d["State"], d["Zone"], d["BlocksOnline"], d["BlocksMovable"])
                for d in doc["devices"]
            ] == [("dax0.0", "applied", "movable", 16, 16)]
            assert doc["devices"][0]["MemmapOnMemory"] is False
            assert doc["manager"]["Hotplug"]["auto-online-blocks"] == "online"
            text = await run_client(bus, [sys.executable, "-m", "daxd", "status"], nobody=True)
            assert "hotplug: block size 128 MiB, auto-online-blocks online" in text.check().stdout

            # Reconcile is root's: nobody is turned away, root is served.
            denied = await busctl(
                bus, "call", "org.daxd.Daxd1", MANAGER, "org.daxd.Daxd1.Manager", "Reconcile",
                "a{sv}", "0", nobody=True,
            )  # fmt: skip
            assert denied.returncode != 0
            assert "denied" in denied.stderr.lower()
            (await busctl(
                bus, "call", "org.daxd.Daxd1", MANAGER, "org.daxd.Daxd1.Manager", "Reconcile",
                "a{sv}", "0",
            )).check()  # fmt: skip

            # A broken policy: Reload fails with the located errors, the old policy stays.
            h.policy.write_text("rules:\n  - mode: system-ram\n    zone: sideways\n")
            reload = await busctl(
                bus, "call", "org.daxd.Daxd1", MANAGER, "org.daxd.Daxd1.Manager", "Reload",
                "a{sv}", "0",
            )  # fmt: skip
            assert reload.returncode != 0
            assert f"{h.policy}:3:11" in reload.stderr
            error = await busctl(
                bus, "get-property", "org.daxd.Daxd1", MANAGER, "org.daxd.Daxd1.Manager",
                "PolicyError",
            )  # fmt: skip
            assert "sideways" in error.check().stdout
            assert h.daemon.policy.rules[0].name == "hmem-movable"

            h.daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0

        run_async(scenario)

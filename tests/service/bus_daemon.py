"""The real daemon in this process, on a fake kernel, published on the bus that
``$DBUS_SYSTEM_BUS_ADDRESS`` names (``serve(daemon, use_bus=True)``), for tests that look at it
with real D-Bus clients.

    async with running(kernel, folder, policy_text) as service:
        ...                      # clients in subprocesses; service.h is the daemon's harness
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from daxd.service.dbus_api import DBusApi
from daxd.service.run import serve
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import Harness, harness

# dax0.0 (hmem, kmem, Normal at "boot": the daemon moves it to Movable), dax5.0 (pmem, devdax)
POLICY = """\
rules:
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
  - name: pmem-devdax
    match: {provider: pmem}
    mode: devdax
"""

# The D-Bus type docs/dbus.md gives each property.
DEVICE_TYPES = {
    "Name": "s",
    "Provider": "s",
    "Size": "t",
    "NumaNode": "i",
    "TargetNode": "i",
    "Driver": "s",
    "Mode": "s",
    "Zone": "s",
    "MemmapOnMemory": "b",
    "BlocksOnline": "u",
    "BlocksTotal": "u",
    "BlocksMovable": "u",
    "BlocksNormal": "u",
    "Rule": "s",
    "DesiredMode": "s",
    "State": "s",
    "LastError": "s",
    "LastChange": "t",
    "Cxl": "a{sv}",
}
REGION_TYPES = {
    "Name": "s",
    "Location": "s",
    "State": "s",
    "Reason": "s",
    "Region": "s",
    "Window": "s",
    "Memdevs": "as",
    "Size": "t",
    "Devices": "as",
    "LastError": "s",
    "LastChange": "t",
}
MANAGER_TYPES = {
    "Version": "s",
    "PolicyPath": "s",
    "PolicyError": "s",
    "PolicyLoadedAt": "t",
    "Devices": "ao",
    "Summary": "s",
    "Conflicts": "as",
    "Hotplug": "a{sv}",
    "Diagnostics": "as",
}


def machine(kernel: FakeKernel) -> FakeKernel:
    """The two devices POLICY is written for."""
    kernel.add_hmem_device()  # dax0.0
    kernel.add_pmem_device(region=5)  # dax5.0
    return kernel


@dataclass
class Service:
    h: Harness
    kernel: FakeKernel
    task: asyncio.Task[int]

    def snapshot(self) -> tuple[object, ...]:
        """What an unprivileged caller must not be able to change: sysfs (every write the fake
        kernel saw), the passes, the policy in force and the published states."""
        d = self.h.daemon
        states = sorted((name, s.state, s.zone, s.blocks_online) for name, s in d.published.items())
        return (
            len(self.kernel.writes),
            d.reconciles,
            d.policy_loaded_at,
            tuple(r.name for r in d.policy.rules),
            tuple(states),
        )

    def alive(self) -> None:
        assert not self.task.done(), self.task

    @property
    def api(self) -> DBusApi:
        api = self.h.daemon.publisher
        assert isinstance(api, DBusApi), api
        return api


@asynccontextmanager
async def running(
    kernel: FakeKernel, folder: Path, policy: str = POLICY, region_wait: float | None = None
) -> AsyncIterator[Service]:
    """The daemon serving on the bus until the block ends; it must then stop cleanly (exit 0).
    ``region_wait``: how long READY waits for the memdevs of the policy's regions."""
    with harness(kernel, folder, policy) as h:
        if region_wait is not None:
            h.daemon.config.region_wait = region_wait
        loop = asyncio.get_running_loop()
        task = loop.create_task(serve(h.daemon, use_bus=True))
        drain = loop.create_task(systemd(h))
        await h.until(lambda: h.daemon.ready or task.done())
        service = Service(h, kernel, task)
        service.alive()
        await h.settled()  # the passes the first one's uevents bring
        try:
            yield service
        finally:
            h.daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
            drain.cancel()


async def systemd(h: Harness) -> None:
    """Read NOTIFY_SOCKET as systemd does (the daemon's sd_notify blocks on a full queue)."""
    while True:
        h.notify.collect()
        await asyncio.sleep(0.02)

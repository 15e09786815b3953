"""Running the daemon in-process against a fake kernel, a fake udev and a fake NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from daxd.service.daemon import Daemon, DaemonConfig
from daxd.service.events import SUBSYSTEMS, Event, Overflow
from daxd.service.notify import Notifier
from daxd.service.regions import RegionStatus
from daxd.service.status import DeviceStatus, ManagerStatus
from tests.fakekernel import FakeKernel
from tests.fakekernel.events import Uevent


class FakeUdev:
    """An EventSource with a real fd: the fake kernel's uevents arrive as udev would pass them."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._lock = threading.Lock()
        self._queue: list[Event] = []
        self.overflow = False
        self.delivered = 0

    def push(self, event: Event) -> None:
        with self._lock:
            self._queue.append(event)
        os.write(self._w, b"x")

    def from_kernel(self, ev: Uevent) -> None:
        """What udev's monitor passes on: only the subsystems daxd filters for (not the nodes'
        events), as UdevSource's filter_by does."""
        if ev.subsystem in SUBSYSTEMS:
            self.push(Event(ev.action, ev.subsystem, ev.sysname))

    def fileno(self) -> int:
        return self._r

    def drain(self) -> list[Event]:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            batch, self._queue = self._queue, []
            lost, self.overflow = self.overflow, False
        self.delivered += len(batch)
        if lost:
            raise Overflow("ENOBUFS")
        return batch

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class NotifySocket:
    """A NOTIFY_SOCKET that records every datagram, as systemd would receive them."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def collect(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()


@dataclass
class RecordingPublisher:
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    history: list[DeviceStatus] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    managers: list[ManagerStatus] = field(default_factory=list)
    actions: list[tuple[str, str, str, str]] = field(default_factory=list)
    regions: dict[str, RegionStatus] = field(default_factory=dict)
    region_history: list[RegionStatus] = field(default_factory=list)
    regions_removed: list[str] = field(default_factory=list)

    def set_manager(self, status: ManagerStatus) -> None:
        self.managers.append(status)

    def set_device(self, status: DeviceStatus) -> None:
        self.devices[status.name] = status
        self.history.append(status)

    def remove_device(self, name: str) -> None:
        self.devices.pop(name, None)
        self.removed.append(name)

    def set_region(self, status: RegionStatus) -> None:
        self.regions[status.name] = status
        self.region_history.append(status)

    def remove_region(self, name: str) -> None:
        self.regions.pop(name, None)
        self.regions_removed.append(name)

    def action_completed(self, device: str, action: str, result: str, message: str) -> None:
        self.actions.append((device, action, result, message))


@dataclass
class Harness:
    kernel: FakeKernel
    daemon: Daemon
    udev: FakeUdev
    notify: NotifySocket
    publisher: RecordingPublisher
    policy: Path

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

    async def settled(self) -> None:
        """Every pending event handled and reconciled."""
        await asyncio.sleep(0.02)
        await self.until(lambda: not self.udev_pending())
        await self.daemon.wait_idle()

    def udev_pending(self) -> bool:
        with self.udev._lock:
            return bool(self.udev._queue)


@contextmanager
def harness(kernel: FakeKernel, folder: Path, policy_text: str) -> Iterator[Harness]:
    policy = folder / "policy.yaml"
    policy.write_text(policy_text)
    notify = NotifySocket(folder)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = str(notify.path)
    udev = FakeUdev()
    kernel.listener = udev.from_kernel
    publisher = RecordingPublisher()
    config = DaemonConfig(
        policy_path=policy,
        # the kernel's /run/daxd: a daemon restarted on the same kernel finds the same record
        roots=kernel.roots(base=folder / "root"),
        sysfs=kernel.sysfs,
        settle=0.01,
        max_settle=0.2,
    )
    daemon = Daemon(config, events=udev, notifier=Notifier(), publisher=publisher)
    try:
        yield Harness(kernel, daemon, udev, notify, publisher, policy)
    finally:
        kernel.listener = None
        notify.close()
        if old is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = old


async def start(h: Harness) -> asyncio.Task[int]:
    """Run the daemon until READY; returns the task (stop with h.daemon.stop())."""
    task = asyncio.get_running_loop().create_task(h.daemon.run())
    await h.until(lambda: h.daemon.ready or task.done())
    if task.done():
        task.result()
    return task


async def stop(h: Harness, task: asyncio.Task[int]) -> int:
    h.daemon.stop()
    return await asyncio.wait_for(task, 10)

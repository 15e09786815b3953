"""A private dbus-daemon configured as a system bus, real D-Bus clients, and a fake controller.

The service under test runs in-process on a dbus-fast bus; everything that looks at it from the
outside is a real client in a subprocess (``busctl``, ``gdbus``, ``gdbus monitor``), run either
as root or as ``nobody`` through ``setpriv``.  Subprocesses are awaited with asyncio so that the
event loop keeps serving the bus meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daxd.kernel.model import HotplugSettings, OnlineType
from daxd.service.dbus_api import (
    BUS_NAME,
    DBusApi,
    connect_system_bus,
)
from daxd.service.regions import RegionStatus
from daxd.service.status import DeviceState, DeviceStatus, ManagerStatus

REPO = Path(__file__).resolve().parents[2]
SHIPPED_POLICY = REPO / "etc" / "dbus-1" / "system.d" / "org.daxd.Daxd1.conf"
NOBODY = 65534
T = TypeVar("T")
TIMEOUT = 15.0

# Everybody may do everything with org.daxd.Daxd1: lets unprivileged calls reach the service,
# to test the service's own uid check.
PERMISSIVE_POLICY = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow own="org.daxd.Daxd1"/>
    <allow send_destination="org.daxd.Daxd1"/>
  </policy>
</busconfig>
"""

# Modelled on /usr/share/dbus-1/system.conf: no <user> (runs as the test's user, root), no
# <fork>, no service activation, a socket anyone may connect to, and the policy under test.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>

  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>

  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>

  <include>{policy}</include>
</busconfig>
"""


def require_system_bus_tools() -> None:
    """Skip (not fail) where the test cannot run at all: not root, or tools missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs clients as nobody with setpriv and a root-owned bus")
    for tool in ("dbus-daemon", "busctl", "gdbus", "setpriv", "stdbuf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@dataclass
class PrivateSystemBus:
    address: str
    socket_dir: Path
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def private_system_bus(tmp_path: Path, policy: Path = SHIPPED_POLICY) -> Iterator[PrivateSystemBus]:
    """Run ``dbus-daemon`` as a system bus whose only service policy is ``policy``."""
    require_system_bus_tools()
    # pytest's tmp_path lives under a 0700 directory that nobody cannot traverse, so the socket
    # goes to a world-traversable directory of its own.
    socket_dir = Path(tempfile.mkdtemp(prefix="daxd-test-bus-", dir="/tmp"))
    socket_dir.chmod(0o755)
    config = tmp_path / "system-bus.conf"
    config.write_text(_CONFIG.format(socket=socket_dir / "system_bus_socket", policy=policy))
    log = (tmp_path / "dbus-daemon.log").open("wb")
    process = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
        line = process.stdout.readline().decode().strip() if ready else ""
        if not line:
            process.kill()
            process.wait()
            log.close()
            raise RuntimeError(
                "dbus-daemon did not start: " + (tmp_path / "dbus-daemon.log").read_text()
            )
        yield PrivateSystemBus(address=line, socket_dir=socket_dir, process=process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextlib.contextmanager
def system_bus_for_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, permissive: bool = False
) -> Iterator[PrivateSystemBus]:
    """The private bus, announced to this process through ``$DBUS_SYSTEM_BUS_ADDRESS``.

    ``permissive`` replaces the shipped policy by one that lets anyone call anything.
    """
    policy = SHIPPED_POLICY
    if permissive:
        policy = tmp_path / "permissive.conf"
        policy.write_text(PERMISSIVE_POLICY)
    with private_system_bus(tmp_path, policy) as bus:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        yield bus


def run_async(coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run ``coro()`` in a fresh event loop, bounded by ``timeout`` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro()

    return asyncio.run(bounded())


# -- clients ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Completed:
        assert self.returncode == 0, f"{' '.join(self.argv)} failed: {self.stderr}"
        return self

    def json(self) -> Any:
        return json.loads(self.check().stdout)


def _as_user(argv: Sequence[str], nobody: bool) -> list[str]:
    if not nobody:
        return list(argv)
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        *argv,
    ]


def client_env(bus: PrivateSystemBus) -> dict[str, str]:
    env = dict(os.environ)
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env["PYTHONPATH"] = str(REPO)
    return env


async def run_client(
    bus: PrivateSystemBus, argv: Sequence[str], *, nobody: bool = False
) -> Completed:
    process = await asyncio.create_subprocess_exec(
        *_as_user(argv, nobody),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client_env(bus),
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(argv)} did not finish in {TIMEOUT}s") from None
    assert process.returncode is not None
    return Completed(tuple(argv), process.returncode, out.decode(), err.decode())


async def busctl(bus: PrivateSystemBus, *args: str, nobody: bool = False) -> Completed:
    return await run_client(
        bus, ["busctl", f"--address={bus.address}", "--no-pager", *args], nobody=nobody
    )


async def gdbus(bus: PrivateSystemBus, command: str, *args: str, nobody: bool = False) -> Completed:
    return await run_client(bus, ["gdbus", command, "--address", bus.address, *args], nobody=nobody)


async def gdbus_call(
    bus: PrivateSystemBus,
    path: str,
    method: str,
    *args: str,
    nobody: bool = False,
    dest: str = BUS_NAME,
) -> Completed:
    return await gdbus(
        bus, "call", "--dest", dest, "--object-path", path, "--method", method, *args, nobody=nobody
    )


async def python_client(bus: PrivateSystemBus, script: str, *, nobody: bool = False) -> Completed:
    """A dbus-fast client in its own process, for what the command-line tools cannot send."""
    return await run_client(bus, [sys.executable, "-c", script], nobody=nobody)


def error_name(result: Completed) -> str:
    """The D-Bus error name from ``gdbus call``'s 'GDBus.Error:<name>: <text>' message."""
    marker = "GDBus.Error:"
    assert result.returncode != 0, f"expected a D-Bus error, got {result.stdout!r}"
    assert marker in result.stderr, result.stderr
    return result.stderr.split(marker, 1)[1].split(":", 1)[0].strip()


@dataclass
class SignalMonitor:
    """``gdbus monitor --dest org.daxd.Daxd1``: every signal the service sends, one per line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)
    _eof: bool = False

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._new_line.set()
        self._eof = True
        self._new_line.set()

    async def find(self, predicate: Callable[[str], bool], timeout: float) -> int | None:
        """Index of the first line matching ``predicate``, or None after ``timeout`` seconds."""
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index in range(seen, len(self.lines)):
                        if predicate(self.lines[index]):
                            return index
                    seen = len(self.lines)
                    if self._eof:
                        return None
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:
            return None

    async def wait_for(self, predicate: Callable[[str], bool], what: str) -> int:
        """Index of the first line matching ``predicate``; fails after TIMEOUT seconds."""
        index = await self.find(predicate, TIMEOUT)
        if index is None:
            raise AssertionError(f"gdbus monitor never showed {what}; it showed:\n{self.text()}")
        return index

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def signal_monitor(
    bus: PrivateSystemBus, api: DBusApi, *, nobody: bool = True
) -> AsyncIterator[SignalMonitor]:
    """Monitor ``api``'s signals with gdbus; ``lines`` starts empty once it is known to work.

    "The name is owned by" does not mean gdbus gets the signals yet: GLib (since the fix for
    CVE-2024-34397) drops signals from a well-known name until it has resolved that name for the
    subscription.  So knock with marker signals until one comes through; in-order delivery does
    the rest.
    """
    process = await asyncio.create_subprocess_exec(
        *_as_user(
            # gdbus uses stdio: line-buffer it, or the lines sit in its buffer
            ["stdbuf", "-oL", "gdbus", "monitor", "--address", bus.address, "--dest", BUS_NAME],
            nobody,
        ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=client_env(bus),
    )
    monitor = SignalMonitor(process)
    reader = asyncio.get_running_loop().create_task(monitor._read())
    try:
        await monitor.wait_for(lambda line: f"{BUS_NAME} is owned by" in line, "the owner")
        async with asyncio.timeout(TIMEOUT):
            knock = 0
            while True:
                api.action_completed(f"knock-{knock}", "marker", "ok", "")
                if (
                    await monitor.find(lambda line: "ActionCompleted ('knock-" in line, 0.1)
                    is not None
                ):
                    break
                knock += 1
        ready = await sync_signals(api, monitor, "ready")
        del monitor.lines[: ready + 1]
        yield monitor
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        await reader


async def sync_signals(api: DBusApi, monitor: SignalMonitor, tag: str) -> int:
    """Emit a marker signal and wait for it: every signal sent before has then arrived."""
    api.action_completed(tag, "marker", "ok", "")
    return await monitor.wait_for(lambda line: f"ActionCompleted ('{tag}'" in line, tag)


# -- the service ---------------------------------------------------------------------------------


# Manager.Plan's records as the daemon keeps them (daemon.plan_step_records): None is left out.
PLAN_RECORDS: tuple[dict[str, Any], ...] = (
    {
        "device": "dax0.0",
        "verdict": "change",
        "rule": "cxl-to-ram",
        "action": "offline-block",
        "path": "devices/system/memory/memory40/state",
        "value": "offline",
        "reason": "online in normal, the rule wants movable",
        "block": 40,
        "driver": None,
    },
    {
        "device": "dax0.0",
        "verdict": "change",
        "rule": None,
        "action": "new-id",
        "path": "bus/dax/drivers/kmem/new_id",
        "value": "dax0.0",
        "reason": "the rule wants system-ram",
        "block": None,
        "driver": "kmem",
    },
)


def apply_entry(name: str) -> dict[str, Any]:
    """An entry as `daxd apply --json` has it for a device that was in sync."""
    return {
        "name": name,
        "region": 0,
        "provider": "cxl",
        "size": 4 << 30,
        "numa_node": -1,
        "target_node": 2,
        "resource": "0x1000000000",
        "ranges": [{"start": "0x1000000000", "end": "0x10ffffffff"}],
        "namespace": None,
        "uuid": None,
        "mode": "devdax",
        "driver": "device_dax",
        "zone": None,
        "memmap_on_memory": True,
        "blocks": {"online": 0, "total": 0},
        "rule": "keep",
        "outcome": "in-sync",
        "error": None,
        "plan": {
            "verdict": "in-sync",
            "rule": "keep",
            "rule_location": "/etc/daxd/policy.yaml:2",
            "reason": "devdax as the rule wants",
            "desired": {"mode": "devdax", "zone": None, "memmap_on_memory": None, "online": True},
            "steps": [],
            "notes": [],
        },
        "steps": [],
        "final": {
            "mode": "devdax",
            "driver": "device_dax",
            "zone": None,
            "memmap_on_memory": True,
            "blocks": {"online": 0, "total": 0},
        },
    }


class FakeController:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.reload_error: Exception | None = None
        self.reconcile_error: Exception | None = None
        self.plan_error: Exception | None = None
        self.plan: tuple[dict[str, Any], ...] = PLAN_RECORDS

    async def reload(self) -> None:
        self.calls.append("reload")
        if self.reload_error is not None:
            raise self.reload_error

    async def reconcile(self) -> None:
        self.calls.append("reconcile")
        if self.reconcile_error is not None:
            raise self.reconcile_error

    async def apply(
        self, devices: list[str], offline_timeout: float | None
    ) -> list[dict[str, Any]]:
        self.calls.append(f"apply {' '.join(devices)} {offline_timeout}".rstrip())
        if self.reconcile_error is not None:
            raise self.reconcile_error
        return [apply_entry(d) for d in devices]

    async def reconcile_device(self, device: str, offline_timeout: float | None) -> dict[str, Any]:
        self.calls.append(f"reconcile {device} {offline_timeout}")
        if self.reconcile_error is not None:
            raise self.reconcile_error
        return apply_entry(device)

    def plan_records(self) -> tuple[dict[str, Any], ...]:
        self.calls.append("plan")
        if self.plan_error is not None:
            raise self.plan_error
        return self.plan


MANAGER = ManagerStatus(
    version="0.1.0",
    policy_path="/etc/daxd/policy.yaml",
    policy_error="",
    policy_loaded_at=1_700_000_000_000_000,
    summary="2 devices, 1 applied, 1 pending",
    conflicts=("udev rule 99-dax.rules onlines memory",),
    hotplug=HotplugSettings(
        block_size=128 << 20,
        auto_online_blocks=OnlineType.ONLINE,
        memmap_on_memory=False,
        online_policy=None,
        hotremove=True,
    ),
    diagnostics=("bus/dax/devices/dax1.0/align: not a number: 'x'",),
)


def device(name: str = "dax0.0", **changes: Any) -> DeviceStatus:
    status = DeviceStatus(
        name=name,
        provider="cxl",
        size=4 << 30,
        numa_node=0,
        target_node=2,
        driver="device_dax",
        mode="devdax",
        zone="none",
        memmap_on_memory=False,
        blocks_online=0,
        blocks_total=32,
        rule="cxl-to-ram",
        desired_mode="system-ram",
        state=DeviceState.PENDING,
        last_error="",
        last_change=1_700_000_000_000_001,
    )
    return replace(status, **changes)


@contextlib.asynccontextmanager
async def running_api(
    controller: FakeController,
    devices: Sequence[DeviceStatus] = (),
    manager: ManagerStatus = MANAGER,
    regions: Sequence[RegionStatus] = (),
) -> AsyncIterator[DBusApi]:
    """The API on its own connection to the bus named by $DBUS_SYSTEM_BUS_ADDRESS."""
    connection = await connect_system_bus()
    api = DBusApi(controller, manager)
    for status in devices:
        api.set_device(status)
    for region in regions:
        api.set_region(region)
    try:
        await api.start(connection)
        yield api
    finally:
        await api.stop()
        connection.disconnect()
        await connection.wait_for_disconnect()  # type: ignore[no-untyped-call]

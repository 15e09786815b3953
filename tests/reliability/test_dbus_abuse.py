"""The daemon's D-Bus API under abuse, on a private system bus, with real clients elsewhere.

The daemon runs in this process on a fake kernel (``serve(daemon, use_bus=True)``); clients
(tests/reliability/dbus_client.py) run as root or as nobody.  They send malformed calls to every
method, path and interface, messages near the bus's 32 MiB limit, and floods of thousands of
calls at once.  The service must answer every call, stay up, keep its memory bounded, never
put a traceback, a file path or an exception class in an error, never let nobody change
anything, and go on handling udev events on time however many calls it gets.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import re
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from daxd.service.run import serve
from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.reliability.dbus_client import BODIES, PATHS, TARGETS
from tests.service.bus_daemon import POLICY, Service, machine, running, systemd
from tests.service.daemon_harness import harness
from tests.service.dbus_bus import (
    NOBODY,
    PrivateSystemBus,
    busctl,
    client_env,
    system_bus_for_test,
)

DEVDAX = "rules:\n  - name: all-devdax\n    mode: devdax\n"
CLIENT_TIMEOUT = 120.0
FLOOD = 2000  # calls per flood, spread over the clients
CLIENTS = 4  # two as root, two as nobody
RSS_SLACK = 16 << 20  # bytes a second flood may add to what the first one left
HUGE = 20 << 20  # bytes of argument per call in the memory test
HUGE_CALLS = 7  # calls per `dbus_client huge` run
TOO_LARGE = "org.freedesktop.DBus.Error.InvalidArgs: arguments too large"

EXCEPTION_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {"ValidationError", "PolicyError", "SysfsError", "DBusError", "PolicyRejected"}
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/work/|site-packages|/usr/lib/python|0x[0-9a-f]{8,}")


def leaks(text: str) -> list[str]:
    """Internals an error text must not show."""
    found = [m.group(0) for m in LEAKS.finditer(text)]
    words = set(re.findall(r"[A-Za-z_]+", text))
    return found + sorted(words & EXCEPTION_NAMES)


async def client(
    bus: PrivateSystemBus, *args: str, nobody: bool = False, timeout: float = CLIENT_TIMEOUT
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "tests.reliability.dbus_client", *args]
    if nobody:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client_env(bus),
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"client {args} did not finish in {timeout} s") from None
    assert process.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out)
    return result


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as private_bus:
        yield private_bus


@pytest.fixture
def open_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    """Anyone may call anything: only daxd's own checks stand."""
    with system_bus_for_test(tmp_path, monkeypatch, permissive=True) as private_bus:
        yield private_bus


def assert_clean_errors(result: dict[str, Any]) -> None:
    bad = {
        text: call
        for text, call in result["texts"].items()
        if text.startswith("daxd ") and leaks(text)
    }
    assert bad == {}, json.dumps(bad, indent=1)
    assert "com.dubstepdish.dbus.next.ServiceError" not in result["replies"], result["texts"]


# --- malformed calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
def test_malformed_calls_everywhere(
    open_bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path, nobody: bool
) -> None:
    machine(fake_kernel)

    async def scenario() -> dict[str, Any]:
        async with running(fake_kernel, tmp_path) as service:
            before = service.snapshot()
            result = await client(open_bus, "matrix", nobody=nobody)
            service.alive()
            ping = await busctl(
                open_bus,
                "call",
                "org.daxd.Daxd1",
                "/org/daxd/Daxd1",
                "org.freedesktop.DBus.Peer",
                "Ping",
            )
            ping.check()
            if nobody:
                assert service.snapshot() == before
            else:  # root's well-formed Reload/Reconcile ran: the policy is in force, nothing moved
                assert service.snapshot()[0] == before[0]
            return result

    result = run(scenario())
    total = len(PATHS) * len(TARGETS) * len(BODIES)
    assert result["made"] == result["answered"] == total
    assert_clean_errors(result)
    if nobody:
        assert result["succeeded"] == []
    else:  # only well-formed Reload/Reconcile, on the manager (or without an interface)
        assert all(
            " " in s and s.split()[0] == "/org/daxd/Daxd1" and "Set" not in s
            for s in result["succeeded"]
        ), result["succeeded"]
    print(json.dumps(result["replies"]))


def test_huge_messages(bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path) -> None:
    machine(fake_kernel)

    async def scenario() -> list[dict[str, Any]]:
        async with running(fake_kernel, tmp_path) as service:
            results: list[dict[str, Any]] = []
            for size in (1 << 20, 30 << 20):
                # Two callers at once: daxd has two replies to send at the same time.
                results += await asyncio.gather(
                    client(bus, "huge", str(size)), client(bus, "huge", str(size), nobody=True)
                )
                service.alive()
            # Over the bus's 32 MiB limit: the bus drops the client; daxd never sees it.
            with pytest.raises(AssertionError):
                await client(bus, "huge", str(40 << 20), timeout=60)
            service.alive()
            (
                await busctl(
                    bus,
                    "get-property",
                    "org.daxd.Daxd1",
                    "/org/daxd/Daxd1",
                    "org.daxd.Daxd1.Manager",
                    "Version",
                )
            ).check()
            return results

    for result in run(scenario()):
        assert result["made"] == result["answered"] == HUGE_CALLS
        assert result["replies"].get("return", 0) == 0
        assert_clean_errors(result)
        texts = [text for text in result["texts"] if text.startswith("daxd ")]
        assert texts, result["texts"]
        assert all(text.startswith(f"daxd {TOO_LARGE}") for text in texts), texts


def test_size_limits(open_bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path) -> None:
    """Just over a limit: refused, without the argument in the error; at the limit: the call
    goes on (to the uid check: nobody is not allowed Apply)."""
    machine(fake_kernel)

    async def scenario() -> dict[str, str]:
        async with running(fake_kernel, tmp_path) as service:
            before = service.snapshot()
            result = await client(open_bus, "limits", nobody=True)
            service.alive()
            assert service.snapshot() == before
            assert result["made"] == result["answered"]
            labels: dict[str, str] = result["labels"]
            return labels

    labels = run(scenario())
    for label, reply in labels.items():
        if label.endswith("at limit"):
            assert reply == (
                "org.daxd.Daxd1.Error.PermissionDenied: Apply is only allowed for root"
            ), label
        else:
            assert reply.startswith(TOO_LARGE), (label, reply)
            assert len(reply) < 300, reply
            assert not re.search("ddd|xxx|VVV|999", reply), reply
    assert len(labels) == 12, labels


def test_large_arguments_leave_no_memory_behind(
    bus: PrivateSystemBus,
    fake_kernel: FakeKernel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Calls with 20 MiB arguments, from root and from nobody: RSS goes back to where it was.

    It stayed 60 MB up: dbus-fast keeps the last message it read, and the bytes it came in,
    until the next one arrives; and once glibc has freed a large mmapped block it serves the
    next ones from a heap it does not give back (daxd/service/malloc.py).  The last message
    is a 20 MiB signal from root, which daxd does not answer and nothing follows."""
    machine(fake_kernel)

    async def huge(size: int) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                client(bus, "huge", str(size)), client(bus, "huge", str(size), nobody=True)
            )
        )

    async def scenario() -> tuple[list[int], float, list[dict[str, Any]]]:
        async with running(fake_kernel, tmp_path) as service:
            await huge(1 << 16)  # every code path run once: what stays is not the test's
            before = rss()
            start = time.monotonic()
            results = await huge(HUGE) + await huge(HUGE)
            got = asyncio.Event()

            def signal_seen(msg: Any) -> bool:
                if msg.member == "Big":
                    got.set()
                return False

            assert service.api.bus is not None
            service.api.bus.add_message_handler(signal_seen)
            await client(bus, "signal", str(HUGE))
            await asyncio.wait_for(got.wait(), 10)
            service.api.bus.remove_message_handler(signal_seen)
            seconds = time.monotonic() - start
            sizes = [before, rss()]
            deadline = time.monotonic() + 5  # daxd lets go of the last message in one round trip
            while sizes[-1] > before * 1.1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                sizes.append(rss())
            service.alive()
            return sizes, seconds, results

    sizes, seconds, results = run(scenario())
    for result in results:
        assert result["made"] == result["answered"] == HUGE_CALLS
        assert result["replies"].get("return", 0) == 0
    with capsys.disabled():
        print(
            f"\n{len(results) * HUGE_CALLS} calls and a signal with {HUGE >> 20} MiB arguments in "
            f"{seconds:.1f} s; RSS {sizes[0] / 2**20:.1f} -> {sizes[1] / 2**20:.1f} -> "
            f"{sizes[-1] / 2**20:.1f} MiB"
        )
    assert sizes[-1] <= sizes[0] * 1.1, [f"{size / 2**20:.1f} MiB" for size in sizes]


# --- floods -------------------------------------------------------------------------------------


def test_flood_from_several_clients(
    bus: PrivateSystemBus,
    fake_kernel: FakeKernel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    machine(fake_kernel)
    per_client = FLOOD // CLIENTS

    async def flood() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(client(bus, "flood", str(per_client), nobody=i % 2 == 1) for i in range(CLIENTS))
            )
        )

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
        async with running(fake_kernel, tmp_path) as service:
            before = service.snapshot()
            sizes = [rss()]
            first = await flood()
            sizes.append(rss())
            second = await flood()
            sizes.append(rss())
            service.alive()
            assert service.snapshot()[0] == before[0]  # no sysfs write
            assert service.snapshot()[2:] == before[2:]
            return first, second, sizes

    first, second, sizes = run(scenario())
    for result in first + second:
        assert result["made"] == result["answered"] == per_client
        assert result["succeeded"] == []
        assert_clean_errors(result)
    denied = sum(r["replies"].get("org.freedesktop.DBus.Error.AccessDenied", 0) for r in second)
    assert denied > 0  # nobody's Reload, Reconcile and Set were turned away by the bus
    seconds = max(r["seconds"] for r in second)
    with capsys.disabled():
        print(
            f"\nD-Bus flood: {CLIENTS} clients x {per_client} calls, twice; slowest client "
            f"{seconds:.1f} s ({FLOOD / seconds:.0f} calls/s); RSS {sizes[0] >> 20} -> "
            f"{sizes[1] >> 20} -> {sizes[2] >> 20} MiB"
        )
    assert sizes[2] - sizes[1] < RSS_SLACK, sizes


@contextmanager
def sysfs_accesses(kernel: FakeKernel) -> Iterator[list[str]]:
    """Every path the daemon reads, lists or looks at in the fake kernel's sysfs, from any
    thread, while the block runs."""
    seen: list[str] = []  # list.append is atomic: the worker thread reads sysfs too
    sysfs = kernel.sysfs
    names = [n for n in ("read", "listdir", "exists", "link_name", "realpath") if hasattr(sysfs, n)]

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(rel: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(f"{name} {rel}")
            return fn(rel, *args, **kwargs)

        return wrapper

    for name in names:
        setattr(sysfs, name, counting(name, getattr(sysfs, name)))
    try:
        yield seen
    finally:
        for name in names:
            delattr(sysfs, name)  # the class's method again


async def hot_add(service: Service, timeout: float = 30.0) -> float:
    """Seconds from a new hmem device's uevent to its published state being "applied"."""
    start = time.monotonic()
    name = service.kernel.add_hmem_device().name
    while (status := service.api.published_device(name)) is None or (
        status.state is not DeviceState.APPLIED
    ):
        assert time.monotonic() - start < timeout, f"{name} is not applied after {timeout} s"
        await asyncio.sleep(0.005)
    seconds = time.monotonic() - start
    await service.h.settled()  # the passes its own uevents bring, before anything else
    return seconds


def test_events_are_handled_on_time_during_a_flood(
    bus: PrivateSystemBus,
    fake_kernel: FakeKernel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hot-added device is applied about as fast while nobody floods daxd with every call
    open to all users (half of them Plan()) as on a quiet bus.

    dbus-fast's reader handled calls for as long as more were coming, and nothing else ran:
    a device hot-added during a 12 s flood was applied after it.  A Plan() that read sysfs on
    the event loop made it several times slower too."""
    machine(fake_kernel)
    stop = bus.socket_dir / "stop-flood"  # nobody may look in there

    async def scenario() -> tuple[list[float], list[float], list[int], list[dict[str, Any]]]:
        async with running(fake_kernel, tmp_path) as service:
            await service.h.settled()
            quiet = [await hot_add(service), await hot_add(service)]
            calls = 0

            def count(msg: Any) -> bool:
                nonlocal calls
                calls += 1
                return False

            assert service.api.bus is not None
            service.api.bus.add_message_handler(count)
            flood = asyncio.gather(
                *(client(bus, "reads", "20", str(stop), nobody=True) for _ in range(CLIENTS // 2))
            )
            try:
                await service.h.until(lambda: calls > 500, timeout=30)
                flooded: list[float] = []
                during: list[int] = []
                for _ in range(3):
                    first = calls
                    flooded.append(await hot_add(service))
                    during.append(calls - first)
            finally:
                stop.touch()
                results = await flood
            service.api.bus.remove_message_handler(count)
            quiet.append(await hot_add(service))  # as many devices as the flooded passes saw
            service.alive()
            return quiet, flooded, during, results

    quiet, flooded, during, results = run(scenario())
    for result in results:
        assert result["made"] == result["answered"] > 0
        assert set(result["replies"]) == {"return"}, result["texts"]
    calls = sum(r["made"] for r in results)
    seconds = max(r["seconds"] for r in results)
    with capsys.disabled():
        print(
            f"\nhot-add to applied: quiet {', '.join(f'{s:.2f}' for s in quiet)} s; during "
            f"{calls} calls in {seconds:.1f} s ({calls / seconds:.0f}/s) from nobody "
            f"{', '.join(f'{s:.2f}' for s in flooded)} s"
        )
    assert min(during) >= 50, during  # the flood went on while each device was applied
    bound = 2 * max(quiet) + 0.25
    assert statistics.median(flooded) <= bound, (quiet, flooded)


def test_a_flood_of_plan_calls_reads_no_sysfs(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    """Plan() is open to every user: it must answer from what the last pass found, not by
    scanning sysfs on each call."""
    machine(fake_kernel)

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        async with running(fake_kernel, tmp_path) as service:
            await service.h.settled()
            with sysfs_accesses(fake_kernel) as seen:
                result = await client(bus, "plans", "1000", nobody=True)
            service.alive()
            return result, seen

    result, seen = run(scenario())
    assert result["made"] == result["answered"] == 1000
    assert result["replies"] == {"return": 1000}, result["texts"]
    assert seen == [], f"{len(seen)} sysfs accesses during 1000 Plan() calls: {seen[:5]}"


# --- nobody changes nothing ---------------------------------------------------------------------


@pytest.mark.parametrize("permissive", [False, True], ids=["shipped-policy", "permissive-bus"])
def test_nobody_cannot_change_anything(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_kernel: FakeKernel,
    permissive: bool,
) -> None:
    machine(fake_kernel)
    manager = ("org.daxd.Daxd1", "/org/daxd/Daxd1", "org.daxd.Daxd1.Manager")
    device = ("org.daxd.Daxd1", "/org/daxd/Daxd1/devices/dax0_0", "org.daxd.Daxd1.Device")
    (tmp_path / "bus").mkdir()
    with system_bus_for_test(tmp_path / "bus", monkeypatch, permissive=permissive) as bus:

        async def scenario() -> None:
            async with running(fake_kernel, tmp_path) as service:
                h = service.h
                # A policy on disk that would take the memory away if anyone reloaded it.
                h.policy.write_text(DEVDAX)
                before = service.snapshot()
                attempts = [
                    await busctl(bus, "call", *manager, "Reload", "a{sv}", "0", nobody=True),
                    await busctl(bus, "call", *manager, "Reconcile", "a{sv}", "0", nobody=True),
                    await busctl(bus, "call", *device, "Reconcile", "a{sv}", "0", nobody=True),
                    await busctl(
                        bus, "set-property", *device, "State", "s", "applied", nobody=True
                    ),
                    await busctl(bus, "set-property", *manager, "Summary", "s", "x", nobody=True),
                ]
                flood = await client(bus, "flood", "500", nobody=True)
                for attempt in attempts:
                    assert attempt.returncode != 0, attempt
                    assert (
                        "denied" in attempt.stderr.lower()
                        or "readonly" in attempt.stderr.lower()
                        or "only allowed for root" in attempt.stderr
                    ), attempt.stderr
                assert flood["succeeded"] == []
                assert service.snapshot() == before
                status = h.daemon.published.get("dax0.0")
                assert status is not None
                assert status.state is DeviceState.APPLIED
                assert fake_kernel.devices["dax0.0"].driver == "kmem"
                # root may: the same Reload takes the memory away (the test can fail).
                (await busctl(bus, "call", *manager, "Reload", "a{sv}", "0")).check()
                assert fake_kernel.devices["dax0.0"].driver == "device_dax"

        run(scenario())


def test_the_leak_check_can_fail() -> None:
    assert leaks('Traceback (most recent call last):\n  File "/x/y.py", line 3')
    assert leaks("The service interface raised an error: KeyError")
    assert leaks("cannot open /work/main/daxd/kernel/sysfs.py")
    assert not leaks("org.daxd.Daxd1.Manager.Plan takes arguments of type '', not 's'")


@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
def test_get_machine_id_answers_without_leaking(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path, nobody: bool
) -> None:
    """dbus-fast forwards Peer.GetMachineId to the bus, which the system bus policy forbids; the
    refusal it passed back named the daemon's pid, uid and command line."""
    machine(fake_kernel)

    async def scenario() -> None:
        async with running(fake_kernel, tmp_path):
            result = await busctl(
                bus,
                "call",
                "org.daxd.Daxd1",
                "/org/daxd/Daxd1",
                "org.freedesktop.DBus.Peer",
                "GetMachineId",
                nobody=nobody,
            )
            assert "pid=" not in result.stderr + result.stdout
            assert leaks(result.stderr) == []
            if Path("/etc/machine-id").exists():
                expected = Path("/etc/machine-id").read_text().strip()
                assert result.check().stdout.strip() == f's "{expected}"'

    run(scenario())


def test_a_full_notify_queue_does_not_freeze_the_daemon(tmp_path: Path) -> None:
    """sd_notify datagrams block while systemd's queue is full; each may stall the event loop
    for at most SEND_TIMEOUT, then it is dropped (it used to block for good)."""
    from daxd.service.notify import SEND_TIMEOUT, Notifier
    from tests.service.daemon_harness import NotifySocket

    receiver = NotifySocket(tmp_path)  # nobody reads it
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = str(receiver.path)
    try:
        notifier = Notifier()
        queue = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
        # In a thread: before the fix the send never returned, and the test must not hang.

        def send() -> None:
            for i in range(queue + 2):
                notifier.status(f"message {i}")

        sender = threading.Thread(target=send, daemon=True)
        start = time.monotonic()
        sender.start()
        sender.join(2 * SEND_TIMEOUT + 5)
        elapsed = time.monotonic() - start
        assert not sender.is_alive(), "sd_notify blocked the caller"
    finally:
        receiver.close()
        if old is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = old
    assert elapsed < 2 * SEND_TIMEOUT + 2, elapsed


def test_losing_the_bus_makes_daxd_exit_for_a_restart(
    bus: PrivateSystemBus, fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    """A burst of signals larger than the socket buffer: dbus-fast (5.2) treats EAGAIN from
    send() as fatal and drops the connection.  daxd must not go on unreachable: it exits 1, and
    systemd (Restart=on-failure) starts it again."""
    machine(fake_kernel)
    with harness(fake_kernel, tmp_path, POLICY) as h:

        async def scenario() -> tuple[bool, int | None]:
            loop = asyncio.get_running_loop()
            task = loop.create_task(serve(h.daemon, use_bus=True))
            drain = loop.create_task(systemd(h))
            await h.until(lambda: h.daemon.ready or task.done())
            api = h.daemon.publisher
            sock = getattr(getattr(api, "bus", None), "_sock", None)
            if sock is not None:  # a small send buffer: the burst surely fills it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            for i in range(5000):
                api.action_completed("dax0.0", f"burst {i} " + "x" * 1000, "ok", "")
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(1)
            connected = bool(getattr(api, "bus", None) and api.bus.connected)  # type: ignore[attr-defined]
            if connected:  # dbus-fast coped: a clean stop
                h.daemon.stop()
            code = await asyncio.wait_for(task, 10)
            drain.cancel()
            return connected, code

        connected, code = run(scenario())
    assert code == (0 if connected else 1)

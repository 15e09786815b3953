"""Benchmark 4: D-Bus — GetManagedObjects / Get / GetAll latency with 64 devices, and
concurrent property reads from 8 client processes (128, 512 and 1,000 calls in flight).

The daemon runs in-process (``daxd.service.run.serve`` with the bus on) against a fake kernel
with 64 hmem devices in sync, on a private dbus-daemon configured as a system bus with the
shipped policy (tests/service/dbus_bus.py).  Clients are separate processes using dbus-fast
(bench/dbus_client.py), plus ``busctl`` for a reference including process start.  Every
concurrency level gets a fresh daemon, and the table says whether the daemon was still on the
bus afterwards: a burst can make dbus-fast drop the daemon's connection (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    child_env,
    heading,
    hmem_kernel,
    median,
    ms,
    percentile,
    production_logging,
    remove,
    scratch,
    table,
    write_policy,
)
from tests.fakekernel import FakeKernel

DEVICES = 64
CLIENTS = 8
LEVELS = (16, 64, 125)  # calls in flight per client; the system bus allows 128 per connection
BARRIER = 3.0  # seconds for 8 client processes to start, connect and warm up before the burst

Phase = Callable[[Any, Path], Awaitable[dict[str, Any]]]


async def client(paths: Path, address: str, *args: str, **env: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bench.dbus_client", *args[:1], str(paths), *args[1:],
        env=child_env(DBUS_SYSTEM_BUS_ADDRESS=address, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise RuntimeError(f"client {args}: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


async def busctl(address: str, *args: str, runs: int = 10) -> list[float]:
    out = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "busctl", "--system", *args,
            env=child_env(DBUS_SYSTEM_BUS_ADDRESS=address),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"busctl {args}: {err.decode()}")
        out.append(time.perf_counter() - start)
    return out[1:]


def on_bus(daemon: Any) -> bool:
    """Whether the daemon's D-Bus connection is still up."""
    bus = getattr(daemon.publisher, "bus", None)
    return bus is not None and bool(bus.connected)


async def with_daemon(
    kernel: FakeKernel, policy: Path, folder: Path, address: str, phase: Phase
) -> dict[str, Any]:
    """Start the daemon on the bus, run ``phase(daemon, paths_file)``, stop the daemon."""
    from daxd.service.daemon import Daemon, DaemonConfig
    from daxd.service.dbus_api import device_object_path
    from daxd.service.notify import Notifier
    from daxd.service.run import serve

    daemon = Daemon(
        DaemonConfig(
            policy_path=policy,
            roots=kernel.roots(base=folder / "root"),
            sysfs=kernel.sysfs,
        ),
        notifier=Notifier(),
    )
    task = asyncio.get_running_loop().create_task(serve(daemon, use_bus=True))
    try:
        while not daemon.ready:
            if task.done():
                task.result()
                raise RuntimeError("the daemon stopped before READY")
            await asyncio.sleep(0.01)
        paths_file = folder / "paths.json"
        paths_file.write_text(json.dumps([device_object_path(n) for n in sorted(daemon.published)]))
        out = await phase(daemon, paths_file)
        await asyncio.sleep(0.3)
        out["daemon_on_bus_after"] = on_bus(daemon)
        return out
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)


def sequential_phase(address: str) -> Phase:
    async def phase(daemon: Any, paths_file: Path) -> dict[str, Any]:
        out = await client(paths_file, address, "sequential")
        first = json.loads(paths_file.read_text())[0]
        if shutil.which("busctl"):
            out["busctl_managed"] = await busctl(
                address, "call", "org.daxd.Daxd1", "/org/daxd/Daxd1",
                "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
            )  # fmt: skip
            out["busctl_get"] = await busctl(
                address, "get-property", "org.daxd.Daxd1", first, "org.daxd.Daxd1.Device", "State"
            )
        return out

    return phase


def concurrent_phase(address: str, clients: int, per_client: int) -> Phase:
    async def phase(daemon: Any, paths_file: Path) -> dict[str, Any]:
        start_at = time.time() + BARRIER
        runs = await asyncio.gather(
            *(
                client(
                    paths_file, address, "concurrent", str(per_client), BENCH_START_AT=str(start_at)
                )
                for _ in range(clients)
            )
        )
        return {
            "clients": clients,
            "per_client": per_client,
            "latencies": [t for r in runs for t in r["latencies"]],
            "wall": max(r["wall"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "error_samples": sorted({e for r in runs for e in r["error_samples"]})[:3],
            "wrong_values": sum(r["wrong_values"] for r in runs),
            "connect_s": median([r["connect_s"] for r in runs]),
        }

    return phase


def run(quick: bool = False) -> dict[str, Any]:
    heading("4. D-Bus")
    from tests.service.dbus_bus import private_system_bus

    production_logging()
    folder = scratch("dbus")
    folder.chmod(0o755)
    results: dict[str, Any] = {"devices": DEVICES}
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    repeats = 1 if quick else 3
    try:
        kernel = hmem_kernel(folder / "k", DEVICES, 2, movable=True)
        policy = write_policy(folder)
        (folder / "bus").mkdir()
        try:
            bus_cm = private_system_bus(folder / "bus")
            bus = bus_cm.__enter__()
        except BaseException as e:  # pytest.skip() when dbus-daemon/busctl are missing
            if isinstance(e, KeyboardInterrupt):
                raise
            print(f"Not measured: {e}")
            return {"skipped": str(e)}
        try:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address

            def session(phase: Phase) -> dict[str, Any]:
                return asyncio.run(with_daemon(kernel, policy, folder, bus.address, phase))

            results["sequential"] = session(sequential_phase(bus.address))
            results["concurrent"] = {
                str(CLIENTS * n): [
                    session(concurrent_phase(bus.address, CLIENTS, n)) for _ in range(repeats)
                ]
                for n in LEVELS
            }
            # For reference: one connection with more calls in flight than the bus allows.
            results["one_connection_200"] = session(concurrent_phase(bus.address, 1, 200))
        finally:
            bus_cm.__exit__(None, None, None)
    finally:
        if old is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
        remove(folder)
    report(results)
    return results


def stats(samples: list[float]) -> list[str]:
    return [
        str(len(samples)),
        ms(percentile(samples, 50)),
        ms(percentile(samples, 99)),
        ms(max(samples)),
    ]


def report(r: dict[str, Any]) -> None:
    seq = r["sequential"]
    print(
        f"Daemon in-process with {r['devices']} device objects on a private system bus "
        "(dbus-daemon, shipped policy); client: dbus-fast in another process, one call at a "
        f"time (GetManagedObjects returned {seq['objects']} objects; errors: {seq['errors']}):\n"
    )
    rows = [[call, *stats(seq[call])] for call in ("GetManagedObjects", "Get", "GetAll")]
    busctl_rows = (
        ("busctl_managed", "busctl call GetManagedObjects (process start included)"),
        ("busctl_get", "busctl get-property State (process start included)"),
    )
    for key, label in busctl_rows:
        if key in seq:
            rows.append([label, *stats(seq[key])])
    print(table(["call", "n", "p50 ms", "p99 ms", "max ms"], rows))

    print(
        f"\n{CLIENTS} client processes, each with N Properties.Get in flight at once (random "
        "device and property, values checked), started together; a fresh daemon per run; "
        "latencies include failed calls:\n"
    )
    burst_rows: list[list[object]] = []
    summary = {}
    for total, runs in r["concurrent"].items():
        for i, c in enumerate(runs):
            lat = c["latencies"]  # every call's, failed ones included
            burst_rows.append([
                total, i + 1, ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(c["wall"]),
                f"{len(lat) / c['wall']:,.0f}", c["errors"], c["wrong_values"],
                "yes" if c["daemon_on_bus_after"] else "**no**",
                "; ".join(c["error_samples"])[:90],
            ])  # fmt: skip
        summary[total] = {
            "errors": [c["errors"] for c in runs],
            "dropped_off_bus": sum(1 for c in runs if not c["daemon_on_bus_after"]),
        }
    print(table(
        ["in flight", "run", "p50 ms", "p99 ms", "wall ms", "reads/s", "errors", "wrong values",
         "daemon still on the bus", "first errors"],
        burst_rows,
    ))  # fmt: skip
    one = r["one_connection_200"]
    seen = "; ".join(one["error_samples"])[:120] or "none this time"
    print(
        f"\nFor reference, 1 connection with 200 calls in flight: {one['errors']} errors ({seen}). "
        "The system bus refuses more than 128 unanswered calls per connection "
        "(max_replies_per_connection, LimitsExceeded), hence 8 client connections for 1,000."
    )
    r["summary"] = summary

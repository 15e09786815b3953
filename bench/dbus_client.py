"""A D-Bus client process for bench.dbus: dbus-fast on $DBUS_SYSTEM_BUS_ADDRESS.

    python -m bench.dbus_client sequential PATHS.json    # GetManagedObjects, Get, GetAll
    python -m bench.dbus_client concurrent PATHS.json N  # N property reads at once

Prints one JSON object with per-call latencies (seconds) and the errors seen.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

BUS_NAME = "org.daxd.Daxd1"
MANAGER_PATH = "/org/daxd/Daxd1"
DEVICE_INTERFACE = "org.daxd.Daxd1.Device"
PROPERTIES = ("Name", "State", "Mode", "Zone", "BlocksOnline", "Size", "Rule", "LastChange")


def get(path: str, prop: str) -> Message:
    return Message(
        destination=BUS_NAME,
        path=path,
        interface="org.freedesktop.DBus.Properties",
        member="Get",
        signature="ss",
        body=[DEVICE_INTERFACE, prop],
    )


def get_all(path: str) -> Message:
    return Message(
        destination=BUS_NAME,
        path=path,
        interface="org.freedesktop.DBus.Properties",
        member="GetAll",
        signature="s",
        body=[DEVICE_INTERFACE],
    )


def managed_objects() -> Message:
    return Message(
        destination=BUS_NAME,
        path=MANAGER_PATH,
        interface="org.freedesktop.DBus.ObjectManager",
        member="GetManagedObjects",
    )


class Client:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.errors: list[str] = []

    async def timed(self, msg: Message) -> tuple[float, Message | None]:
        start = time.perf_counter()
        try:
            reply = await self.bus.call(msg)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return time.perf_counter() - start, None
        elapsed = time.perf_counter() - start
        assert reply is not None
        if reply.message_type != MessageType.METHOD_RETURN:
            self.errors.append(f"{reply.error_name}: {reply.body}")
            return elapsed, None
        return elapsed, reply


async def sequential(client: Client, paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(10):  # warm-up
        await client.timed(get(paths[0], "State"))
    samples, objects = [], 0
    for _ in range(200):
        t, reply = await client.timed(managed_objects())
        samples.append(t)
        if reply is not None:
            objects = len(reply.body[0])
    out["GetManagedObjects"] = samples
    out["objects"] = objects
    rng = random.Random(1)
    samples = []
    for _ in range(2000):
        path = rng.choice(paths)
        t, reply = await client.timed(get(path, "State"))
        samples.append(t)
    out["Get"] = samples
    samples = []
    for _ in range(500):
        t, _ = await client.timed(get_all(rng.choice(paths)))
        samples.append(t)
    out["GetAll"] = samples
    return out


async def concurrent(client: Client, paths: list[str], n: int) -> dict[str, Any]:
    rng = random.Random(os.getpid())
    wanted = [(rng.choice(paths), rng.choice(PROPERTIES)) for _ in range(n)]
    start = time.perf_counter()
    results = await asyncio.gather(*(client.timed(get(p, prop)) for p, prop in wanted))
    wall = time.perf_counter() - start
    wrong = 0
    for (path, prop), (_, reply) in zip(wanted, results, strict=True):
        if reply is None:
            continue
        value = reply.body[0]
        if not isinstance(value, Variant) or (
            prop == "Name" and value.value.replace(".", "_") != path.rsplit("/", 1)[1]
        ):
            wrong += 1
    return {"latencies": [t for t, _ in results], "wall": wall, "wrong_values": wrong}


async def main() -> None:
    mode, paths_file = sys.argv[1], Path(sys.argv[2])
    paths: list[str] = json.loads(paths_file.read_text())
    start_at = float(os.environ.get("BENCH_START_AT", "0"))
    address = os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
    t0 = time.perf_counter()
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    connect = time.perf_counter() - t0
    client = Client(bus)
    await client.timed(get(paths[0], "Name"))  # warm-up: first call, name lookup
    if start_at:  # line up with the other clients
        await asyncio.sleep(max(0.0, start_at - time.time()))
    if mode == "sequential":
        result = await sequential(client, paths)
    else:
        result = await concurrent(client, paths, int(sys.argv[3]))
    result["connect_s"] = connect
    result["errors"] = len(client.errors)
    result["error_samples"] = sorted(set(client.errors))[:3]
    bus.disconnect()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())

"""A D-Bus client for the abuse tests, run in its own process (as root or as nobody).

    python -m tests.reliability.dbus_client MODE [ARG]

MODE ``matrix``: every path x interface x method x argument signature listed below, once each;
``flood N``: N well-formed calls, 64 in flight at a time; ``huge BYTES``: Plan and Properties.Get
with a string argument of BYTES bytes.  Prints one JSON object: how many calls were made and
answered, the replies by type and error name, every distinct error text (cut to 300 characters,
prefixed with who sent it: ``bus`` or ``daxd``),
the calls that succeeded where they should not have, and the seconds it took.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

DEST = "org.daxd.Daxd1"
MANAGER_PATH = "/org/daxd/Daxd1"
DEVICE_PATH = "/org/daxd/Daxd1/devices/dax0_0"
MANAGER = "org.daxd.Daxd1.Manager"
DEVICE = "org.daxd.Daxd1.Device"
PROPS = "org.freedesktop.DBus.Properties"
PEER = "org.freedesktop.DBus.Peer"
INTROSPECT = "org.freedesktop.DBus.Introspectable"
OBJMGR = "org.freedesktop.DBus.ObjectManager"

PATHS = [
    MANAGER_PATH,
    DEVICE_PATH,
    "/",
    "/org/daxd",
    "/org/daxd/Daxd1/devices",
    "/org/daxd/Daxd1/devices/nope",
    "/a/b/c",
]
TARGETS: list[tuple[str | None, str]] = [
    (MANAGER, "Reload"),
    (MANAGER, "Reconcile"),
    (MANAGER, "Plan"),
    (MANAGER, "Explode"),
    (DEVICE, "Reload"),
    (PROPS, "Get"),
    (PROPS, "GetAll"),
    (PROPS, "Set"),
    (PROPS, "Nope"),
    (INTROSPECT, "Introspect"),
    (PEER, "Ping"),
    (PEER, "GetMachineId"),
    (OBJMGR, "GetManagedObjects"),
    ("org.example.Nope", "Plan"),
    (None, "Plan"),
    (None, "Reload"),
    (None, "Get"),
    (None, "Set"),
    (None, "Explode"),
]
BODIES: list[tuple[str, list[Any]]] = [
    ("", []),
    ("s", ["x"]),
    ("s", [""]),
    ("s", [MANAGER]),
    ("ss", [MANAGER, "Version"]),
    ("ss", [DEVICE, "State"]),
    ("ss", ["", ""]),
    ("ss", [PROPS, "Nope"]),
    ("ssv", [DEVICE, "State", Variant("s", "applied")]),
    ("ssv", [MANAGER, "Summary", Variant("i", 1)]),
    ("ssv", [MANAGER, "Nope", Variant("s", "x")]),
    ("i", [-1]),
    ("a{sv}", [{"a": Variant("s", "b")}]),
    ("v", [Variant("as", ["x"])]),
    ("ay", [b"\x00\xff"]),
    ("o", ["/"]),
    ("as", [["a"] * 100]),
    ("s", ["x" * 10_000]),
    ("(ss)", [["a", "b"]]),
]
# What a caller may read; used for the flood.
READS: list[tuple[str, str | None, str, str, list[Any]]] = [
    (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, "Summary"]),
    (DEVICE_PATH, PROPS, "GetAll", "s", [DEVICE]),
    (MANAGER_PATH, PROPS, "GetAll", "s", [MANAGER]),
    (MANAGER_PATH, INTROSPECT, "Introspect", "", []),
    (MANAGER_PATH, OBJMGR, "GetManagedObjects", "", []),
    (MANAGER_PATH, MANAGER, "Plan", "", []),
    (MANAGER_PATH, PEER, "Ping", "", []),
]
# Denied to nobody: by the bus, or by daxd itself behind a permissive bus.
CHANGES: list[tuple[str, str | None, str, str, list[Any]]] = [
    (MANAGER_PATH, MANAGER, "Reload", "", []),
    (MANAGER_PATH, MANAGER, "Reconcile", "", []),
    (MANAGER_PATH, None, "Reload", "", []),
    (DEVICE_PATH, PROPS, "Set", "ssv", [DEVICE, "State", Variant("s", "applied")]),
    (MANAGER_PATH, PROPS, "Set", "ssv", [MANAGER, "Summary", Variant("s", "hacked")]),
]

Call = tuple[str, str | None, str, str, list[Any]]


@dataclass
class Tally:
    made: int = 0
    answered: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    texts: dict[str, str] = field(default_factory=dict)  # error text -> the call that got it
    succeeded: list[str] = field(default_factory=list)


async def one(bus: MessageBus, call: Call, tally: Tally, gate: asyncio.Semaphore) -> None:
    path, interface, member, signature, body = call
    async with gate:
        tally.made += 1
        reply = await bus.call(
            Message(
                destination=DEST,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body,
            )
        )
    if reply is None:
        return
    tally.answered += 1
    if reply.message_type == MessageType.ERROR:
        name = reply.error_name or "?"
        tally.replies[name] += 1
        text = str(reply.body[0]) if reply.body else ""
        # The bus's own refusals (AccessDenied) describe both ends; only daxd's are daxd's.
        origin = "bus" if reply.sender == "org.freedesktop.DBus" else "daxd"
        key = f"{origin} {name}: {text[:300]}"
        tally.texts.setdefault(key, f"{interface}.{member}({signature})")
    else:
        tally.replies["return"] += 1
        if member in ("Reload", "Reconcile", "Set"):
            tally.succeeded.append(f"{path} {interface}.{member}({signature})")


def matrix() -> list[Call]:
    return [
        (path, interface, member, signature, body)
        for path in PATHS
        for interface, member in TARGETS
        for signature, body in BODIES
    ]


async def main(mode: str, arg: int) -> dict[str, Any]:
    bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
    tally = Tally()
    gate = asyncio.Semaphore(64)
    if mode == "matrix":
        calls = matrix()
    elif mode == "flood":
        pool = READS + (CHANGES if os.geteuid() != 0 else [])
        calls = [pool[i % len(pool)] for i in range(arg)]
    elif mode == "huge":
        big = "x" * arg
        calls = [
            (MANAGER_PATH, MANAGER, "Plan", "s", [big]),
            (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, big]),
            (MANAGER_PATH, PROPS, "Get", "ss", [big, "Version"]),
        ]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    start = time.monotonic()
    if mode == "huge":
        # One at a time: dbus-fast (5.2) drops its connection when a message is queued while a
        # large one is still half-written (sock.send raises EAGAIN).
        for c in calls:
            await one(bus, c, tally, gate)
    else:
        await asyncio.gather(*(one(bus, c, tally, gate) for c in calls))
    seconds = time.monotonic() - start
    bus.disconnect()
    return {
        "made": tally.made,
        "answered": tally.answered,
        "replies": dict(tally.replies),
        "texts": tally.texts,
        "succeeded": tally.succeeded,
        "seconds": round(seconds, 3),
        "uid": os.geteuid(),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    print(json.dumps(asyncio.run(main(mode, arg))))

"""A D-Bus client for the abuse tests, run in its own process (as root or as nobody).

    python -m tests.reliability.dbus_client MODE [ARG [STOPFILE]]

MODE ``matrix``: every path x interface x method x argument signature listed below, once each;
``flood N``: N well-formed calls, 64 in flight at a time; ``plans N``: N Plan() calls, 64 in
flight; ``reads SECONDS STOPFILE``: the calls open to every user (OPEN_READS), 64 in flight,
for SECONDS or until STOPFILE exists; ``huge BYTES``: Plan, Properties.Get/GetAll and
Manager.Apply with arguments of BYTES bytes, one call at a time; ``signal BYTES``: one signal
of BYTES bytes sent to daxd alone (no reply comes); ``limits``: Apply and others
with arguments at and just over daxd's size limits (LIMITS), one call at a time.  Prints one
JSON object: how many calls were made and answered, the replies by type and error name, every
distinct error text (cut to 300 characters, prefixed with who sent it: ``bus`` or ``daxd``),
the reply to each ``limits`` call by label, the calls that succeeded where they should not
have, and the seconds it took.
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
# The calls the shipped bus policy lets every user make, every other one a Plan() (no Peer:
# dbus-fast answers it without daxd).
PLAN: tuple[str, str | None, str, str, list[Any]] = (MANAGER_PATH, MANAGER, "Plan", "a{sv}", [{}])
OPEN_READS: list[tuple[str, str | None, str, str, list[Any]]] = [
    PLAN,
    (MANAGER_PATH, PROPS, "GetAll", "s", [MANAGER]),
    PLAN,
    (DEVICE_PATH, PROPS, "GetAll", "s", [DEVICE]),
    PLAN,
    (DEVICE_PATH, PROPS, "GetAll", "s", [""]),
    PLAN,
    (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, "Summary"]),
    PLAN,
    (DEVICE_PATH, PROPS, "Get", "ss", [DEVICE, "State"]),
    PLAN,
    (MANAGER_PATH, INTROSPECT, "Introspect", "", []),
    PLAN,
    (MANAGER_PATH, OBJMGR, "GetManagedObjects", "", []),
]
# What a caller may read; used for the flood.
READS: list[tuple[str, str | None, str, str, list[Any]]] = [
    (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, "Summary"]),
    (DEVICE_PATH, PROPS, "GetAll", "s", [DEVICE]),
    (MANAGER_PATH, PROPS, "GetAll", "s", [MANAGER]),
    (MANAGER_PATH, INTROSPECT, "Introspect", "", []),
    (MANAGER_PATH, OBJMGR, "GetManagedObjects", "", []),
    PLAN,
    (MANAGER_PATH, PEER, "Ping", "", []),
]
# Denied to nobody: by the bus, or by daxd itself behind a permissive bus.
CHANGES: list[tuple[str, str | None, str, str, list[Any]]] = [
    (MANAGER_PATH, MANAGER, "Reload", "a{sv}", [{}]),
    (MANAGER_PATH, MANAGER, "Reconcile", "a{sv}", [{}]),
    (MANAGER_PATH, None, "Reload", "a{sv}", [{}]),
    (DEVICE_PATH, DEVICE, "Reconcile", "a{sv}", [{}]),
    (DEVICE_PATH, PROPS, "Set", "ssv", [DEVICE, "State", Variant("s", "applied")]),
    (MANAGER_PATH, PROPS, "Set", "ssv", [MANAGER, "Summary", Variant("s", "hacked")]),
]

Call = tuple[str, str | None, str, str, list[Any]]

# daxd's limits on a call's arguments (daxd/service/dbus_api.py), and calls at and over each.
MAX_ARGS_SIZE = 2 << 20
MAX_STRING = 4096
MAX_ITEMS = 4096
LIMITS: dict[str, Call] = {
    "items at limit": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d"] * MAX_ITEMS, {}]),
    "items over": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d"] * (MAX_ITEMS + 1), {}]),
    "string at limit": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d" * MAX_STRING], {}]),
    "string over": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d" * (MAX_STRING + 1)], {}]),
    # 4096 names of 500 characters take about 2.08 MB on the wire; of 520 characters, 2.16 MB.
    "size at limit": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d" * 500] * MAX_ITEMS, {}]),
    "size over": (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [["d" * 520] * MAX_ITEMS, {}]),
    "option over": (
        MANAGER_PATH,
        MANAGER,
        "Apply",
        "asa{sv}",
        [["dax0.0"], {"offline-timeout": Variant("s", "9" * (MAX_STRING + 1))}],
    ),
    "options over": (
        MANAGER_PATH,
        MANAGER,
        "Apply",
        "asa{sv}",
        [[], {f"o{i}": Variant("b", True) for i in range(MAX_ITEMS + 1)}],
    ),
    "plan over": (MANAGER_PATH, MANAGER, "Plan", "as", [["x"] * (MAX_ITEMS + 1)]),
    "get over": (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, "V" * (MAX_STRING + 1)]),
    "device over": (DEVICE_PATH, PROPS, "GetAll", "s", ["x" * (MAX_STRING + 1)]),
    "elsewhere over": ("/a/b", "org.example.Nope", "Nope", "s", ["x" * (MAX_STRING + 1)]),
}


@dataclass
class Tally:
    made: int = 0
    answered: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    texts: dict[str, str] = field(default_factory=dict)  # error text -> the call that got it
    succeeded: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # label -> "name: text" or "return"


async def one(
    bus: MessageBus, call: Call, tally: Tally, gate: asyncio.Semaphore, label: str = ""
) -> None:
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
        if label:
            tally.labels[label] = f"{name}: {text[:300]}"
    else:
        tally.replies["return"] += 1
        if label:
            tally.labels[label] = "return"
        if member in ("Reload", "Reconcile", "Set"):
            tally.succeeded.append(f"{path} {interface}.{member}({signature})")


def matrix() -> list[Call]:
    return [
        (path, interface, member, signature, body)
        for path in PATHS
        for interface, member in TARGETS
        for signature, body in BODIES
    ]


async def main(mode: str, arg: int, stop_file: str = "") -> dict[str, Any]:
    bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"]).connect()
    tally = Tally()
    gate = asyncio.Semaphore(64)
    if mode == "matrix":
        calls = matrix()
    elif mode == "flood":
        pool = READS + (CHANGES if os.geteuid() != 0 else [])
        calls = [pool[i % len(pool)] for i in range(arg)]
    elif mode == "plans":
        calls = [PLAN] * arg
    elif mode in ("reads", "limits", "signal"):
        calls = []
    elif mode == "huge":
        big = "x" * arg
        # As many 255-character names as make BYTES, and always more than daxd's 4096.
        names = ["d" * 255] * max(MAX_ITEMS + 1, arg // 256)
        calls = [
            (MANAGER_PATH, MANAGER, "Plan", "s", [big]),
            (MANAGER_PATH, PROPS, "Get", "ss", [MANAGER, big]),
            (MANAGER_PATH, PROPS, "Get", "ss", [big, "Version"]),
            (DEVICE_PATH, PROPS, "GetAll", "s", [big]),
            (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [[big], {}]),
            (MANAGER_PATH, MANAGER, "Apply", "asa{sv}", [names, {}]),
            (
                MANAGER_PATH,
                MANAGER,
                "Apply",
                "asa{sv}",
                [[], {"offline-timeout": Variant("s", big)}],
            ),
        ]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    start = time.monotonic()
    if mode == "huge":
        # One at a time: dbus-fast (5.2) drops its connection when a message is queued while a
        # large one is still half-written (sock.send raises EAGAIN).
        for c in calls:
            await one(bus, c, tally, gate)
    elif mode == "signal":
        tally.made += 1
        await bus.send(
            Message(
                message_type=MessageType.SIGNAL,
                destination=DEST,
                path=MANAGER_PATH,
                interface="org.example.Abuse",
                member="Big",
                signature="s",
                body=["x" * arg],
            )
        )
    elif mode == "limits":
        for label, c in LIMITS.items():
            await one(bus, c, tally, gate, label)
    elif mode == "reads":
        deadline = start + arg

        def going_on() -> bool:
            return time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file))

        async def reader(k: int) -> None:
            while going_on():
                await one(bus, OPEN_READS[k % len(OPEN_READS)], tally, gate)
                k += 1

        await asyncio.gather(*(reader(k) for k in range(64)))
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
        "labels": tally.labels,
        "seconds": round(seconds, 3),
        "uid": os.geteuid(),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    stop_file = sys.argv[3] if len(sys.argv) > 3 else ""
    print(json.dumps(asyncio.run(main(mode, arg, stop_file))))

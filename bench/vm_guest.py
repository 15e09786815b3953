"""Conversion timings on a real kernel; runs as root inside the lab guest (see bench/vm.py).

For each dax device given, every round converts it devdax -> system-ram (all blocks online
Movable) and back, once with each method, interleaved so that drift in the machine hits all
methods alike:

- ``bare``: the kernel's own cost, the write sequence from this already running process with
  the memory block numbers computed beforehand, blocks in daxd's order (see zone_walk_order);
  each write is timed on its own; ``bare-ascending``: the same in address order;
- ``daxctl``: ``daxctl reconfigure-device`` (needs ``auto_online_blocks=offline`` to online
  into Movable at all);
- ``daxd-apply``: the ``daxd apply DEVICE`` command (a new process, as an operator runs it);
- ``daxd-inproc``: daxd's ``apply_device`` called in this process (``daxd apply`` without the
  interpreter start);
- ``daemon``: the running daxd.service: from the kernel's ``add`` uevent of the device (the
  namespace enabled) to ``State=applied`` on D-Bus, and back from a ``Reload`` call with a
  devdax policy to ``State=applied``.

After every conversion the device is checked (driver, every block online Movable, or no block
left); a wrong end state fails the benchmark. Prints one JSON document on stdout.

With ``--cxl`` the devices are CXL regions' (bench/vm.py --cxl): device_dax does not match them
by type, so ``bare`` binds it with ``new_id`` and takes the id back with ``remove_id`` (what daxd
does, so that later CXL devices still bind to kmem), and kmem with ``bind``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CXL = "--cxl" in sys.argv
SYS = "/sys"
DAX = f"{SYS}/bus/dax"
MEM = f"{SYS}/devices/system/memory"
POLICY = "/etc/daxd/policy.yaml"
BUS_NAME = "org.daxd.Daxd1"
MANAGER = "/org/daxd/Daxd1"
RELOAD = ("Reload", "a{sv}", "0")  # Manager.Reload(a{sv} options), no options

RAM_POLICY = """version: 1
rules:
  - name: bench-ram
    match: {{device: {name}}}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""
DEVDAX_POLICY = """version: 1
rules:
  - name: bench-devdax
    match: {{device: {name}}}
    mode: devdax
"""


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def driver(name: str) -> str:
    link = f"{DAX}/devices/{name}/driver"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else "none"


def block_numbers(name: str) -> list[int]:
    """The memory blocks kmem will add for the device (whole blocks inside its ranges)."""
    size = int(read(f"{MEM}/block_size_bytes"), 16)
    out: list[int] = []
    dev = f"{DAX}/devices/{name}"
    for entry in sorted(os.listdir(dev)):
        # mappingN/ ranges; a dynamic region's device also has a write-only ``mapping`` file
        if entry.startswith("mapping") and entry[7:].isdigit():
            start = int(read(f"{dev}/{entry}/start"), 0)
            end = int(read(f"{dev}/{entry}/end"), 0)
            out.extend(range((start + size - 1) // size, (end + 1) // size))
    return out


def check(name: str, blocks: list[int], want: str) -> None:
    """Fail unless the device is what the conversion was to make it."""
    drv = driver(name)
    if want == "devdax":
        left = [b for b in blocks if os.path.exists(f"{MEM}/memory{b}")]
        if drv != "device_dax" or left:
            raise SystemExit(f"{name}: driver {drv}, blocks left {left[:3]}: not devdax")
        return
    wrong = [
        b
        for b in blocks
        if read(f"{MEM}/memory{b}/state") != "online"
        or read(f"{MEM}/memory{b}/valid_zones") != "Movable"
    ]
    if drv != "kmem" or wrong:
        raise SystemExit(f"{name}: driver {drv}, not online Movable: {wrong[:3]}")


def set_auto_online(value: str) -> None:
    write(f"{MEM}/auto_online_blocks", value)


# -- bare: the write sequence and nothing else ----------------------------------------------


def zone_walk_order(blocks: list[int]) -> list[int]:
    """daxd's block order (daxd/plan/planner.py zone_walk_order): 2nd, last..3rd, 1st."""
    return blocks if len(blocks) < 3 else [blocks[1], *reversed(blocks[2:]), blocks[0]]


def bare_to_ram(name: str, blocks: list[int]) -> dict[str, float]:
    """device_dax unbind, kmem new_id (binds: the kernel adds the memory), then each block
    online_movable, or offline + online_movable when the kernel onlined it somewhere else."""
    auto = read(f"{MEM}/auto_online_blocks")
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    write(f"{DAX}/drivers/device_dax/unbind", name)
    t1 = time.perf_counter()
    # CXL (and hmem) devices match kmem by type: a plain bind; pmem's need an id.
    write(f"{DAX}/drivers/kmem/{'bind' if CXL else 'new_id'}", name)
    t2 = time.perf_counter()
    t["unbind"], t["bind"] = t1 - t0, t2 - t1
    offline = online = 0.0
    if auto != "online_movable":
        for b in blocks:
            state = f"{MEM}/memory{b}/state"
            a = time.perf_counter()
            if auto != "offline":
                write(state, "offline")
            c = time.perf_counter()
            write(state, "online_movable")
            d = time.perf_counter()
            offline += c - a
            online += d - c
    t["offline"], t["online"] = offline, online
    t["total"] = time.perf_counter() - t0
    return t


def bare_to_devdax(name: str, blocks: list[int]) -> dict[str, float]:
    t0 = time.perf_counter()
    for b in blocks:
        write(f"{MEM}/memory{b}/state", "offline")
    t1 = time.perf_counter()
    write(f"{DAX}/drivers/kmem/unbind", name)
    t2 = time.perf_counter()
    if CXL:  # device_dax/bind is ENODEV for CXL devices: new_id binds, remove_id cleans up
        write(f"{DAX}/drivers/device_dax/new_id", name)
        write(f"{DAX}/drivers/device_dax/remove_id", name)
    else:
        write(f"{DAX}/drivers/device_dax/bind", name)
    t3 = time.perf_counter()
    return {"offline": t1 - t0, "unbind": t2 - t1, "bind": t3 - t2, "total": t3 - t0}


# -- daxctl and daxd's command ----------------------------------------------------------------


def timed_command(argv: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return {"total": total}


def policy_file(kind: str, name: str) -> str:
    path = f"/run/daxd-bench-{kind}.yaml"
    with open(path, "w") as fh:
        fh.write((RAM_POLICY if kind == "ram" else DEVDAX_POLICY).format(name=name))
    return path


def inproc_apply(name: str, kind: str) -> dict[str, float]:
    from daxd.apply.executor import apply_device
    from daxd.kernel.scan import read_hotplug_settings
    from daxd.kernel.sysfs import Sysfs
    from daxd.policy.load import load_policy

    policy = load_policy(Path(policy_file(kind, name)))
    t0 = time.perf_counter()
    sysfs = Sysfs(Path(SYS))
    result = apply_device(sysfs, policy, name, read_hotplug_settings(sysfs))
    total = time.perf_counter() - t0
    if result.outcome.value != "applied":
        raise SystemExit(f"{name}: daxd apply_device: {result.outcome.value}: {result.error}")
    return {"total": total, "writes": float(len(result.results))}


# -- the daemon ---------------------------------------------------------------------------------


class DaemonWatch:
    """Follows one device's D-Bus properties and the kernel's dax uevents."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"{MANAGER}/devices/{name.replace('.', '_')}"
        self.props: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self.kernel_add: float | None = None
        self.udev_add: float | None = None

    async def start(self) -> None:
        import pyudev  # type: ignore[import-not-found, unused-ignore]
        from dbus_fast import BusType, Message, MessageType
        from dbus_fast.aio import MessageBus

        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.message_type = MessageType
        for rule in (
            f"type='signal',sender='{BUS_NAME}',path='{self.path}'",
            f"type='signal',sender='{BUS_NAME}',path='{MANAGER}'",
        ):
            await self.bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            )
        self.bus.add_message_handler(self.on_message)
        with contextlib.suppress(Exception):  # absent while the device is not there
            reply = await self.bus.call(
                Message(
                    destination=BUS_NAME,
                    path=self.path,
                    interface="org.freedesktop.DBus.Properties",
                    member="GetAll",
                    signature="s",
                    body=["org.daxd.Daxd1.Device"],
                )
            )
            if reply.message_type == MessageType.METHOD_RETURN:
                self.props.update({k: v.value for k, v in reply.body[0].items()})
        context = pyudev.Context()
        loop = asyncio.get_running_loop()
        self.monitors = []
        for source in ("kernel", "udev"):
            mon = pyudev.Monitor.from_netlink(context, source=source)
            mon.filter_by("dax")
            mon.start()
            loop.add_reader(mon.fileno(), self.on_uevent, mon, source)
            self.monitors.append(mon)

    def on_uevent(self, mon: Any, source: str) -> None:
        while True:
            dev = mon.poll(timeout=0)
            if dev is None:
                return
            if dev.action == "add" and dev.sys_name == self.name:
                now = time.perf_counter()
                if source == "kernel":
                    self.kernel_add = now
                else:
                    self.udev_add = now

    def on_message(self, msg: Any) -> bool:
        if msg.message_type != self.message_type.SIGNAL:
            return False
        if msg.member == "PropertiesChanged" and msg.path == self.path:
            self.props.update({k: v.value for k, v in msg.body[1].items()})
            self.changed.set()
        elif msg.member == "InterfacesAdded" and msg.body[0] == self.path:
            for props in msg.body[1].values():
                self.props.update({k: v.value for k, v in props.items()})
            self.changed.set()
        return False

    async def call(self, member: str) -> None:
        from dbus_fast import Message

        reply = await self.bus.call(
            Message(
                destination=BUS_NAME,
                path=MANAGER,
                interface="org.daxd.Daxd1.Manager",
                member=member,
                signature="a{sv}",  # every method's options (docs/dbus.md)
                body=[{}],
            )
        )
        if reply.message_type != self.message_type.METHOD_RETURN:
            raise SystemExit(f"{member}: {reply.body}")

    async def wait_applied(self, mode: str, timeout: float = 900.0) -> float:
        """The time the device was first seen State=applied in the wanted mode."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.props.get("State") == "applied" and self.props.get("Mode") == mode:
                return time.perf_counter()
            if self.props.get("State") == "failed":
                raise SystemExit(f"{self.name}: daxd failed: {self.props.get('LastError')}")
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SystemExit(f"{self.name}: not applied as {mode} in {timeout} s: {self.props}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


def run_quiet(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")


def install_policy(kind: str, name: str) -> None:
    with open(POLICY, "w") as fh:
        fh.write((RAM_POLICY if kind == "ram" else DEVDAX_POLICY).format(name=name))


async def daemon_round(name: str, namespace: str, blocks: list[int]) -> dict[str, dict[str, float]]:
    """The device is system RAM under daxd's control. Back: a devdax policy, Reload -> applied;
    then forward: the namespace disabled, a system-ram policy loaded, the namespace enabled ->
    the kernel's add -> State=applied."""
    watch = DaemonWatch(name)
    await watch.start()
    try:
        install_policy("devdax", name)
        t0 = time.perf_counter()
        await watch.call("Reload")
        t1 = await watch.wait_applied("devdax")
        check(name, blocks, "devdax")
        back = {"total": t1 - t0}

        run_quiet(["ndctl", "disable-namespace", namespace])
        install_policy("ram", name)
        await watch.call("Reload")
        watch.props.clear()
        watch.kernel_add = watch.udev_add = None
        proc = await asyncio.create_subprocess_exec(
            "ndctl", "enable-namespace", namespace, stdout=subprocess.DEVNULL
        )
        t2 = await watch.wait_applied("system-ram")
        await proc.wait()
        check(name, blocks, "ram")
        if watch.kernel_add is None:
            raise SystemExit(f"{name}: no kernel add uevent seen")
        forward = {
            "total": t2 - watch.kernel_add,
            "udev_add_after": (watch.udev_add or float("nan")) - watch.kernel_add,
        }
        return {"to_ram": forward, "to_devdax": back}
    finally:
        for mon in watch.monitors:
            asyncio.get_running_loop().remove_reader(mon.fileno())
        watch.bus.disconnect()


# -- the rounds ---------------------------------------------------------------------------------

Conversion = Callable[[], dict[str, float]]


def methods(name: str, blocks: list[int]) -> dict[str, tuple[Conversion, Conversion]]:
    ram, devdax = policy_file("ram", name), policy_file("devdax", name)
    friendly = zone_walk_order(blocks)
    return {
        "bare": (lambda: bare_to_ram(name, friendly), lambda: bare_to_devdax(name, friendly)),
        "bare-ascending": (
            lambda: bare_to_ram(name, blocks),
            lambda: bare_to_devdax(name, blocks),
        ),
        "daxctl": (
            lambda: timed_command(["daxctl", "reconfigure-device", "-m", "system-ram", name]),
            lambda: timed_command(["daxctl", "reconfigure-device", "-m", "devdax", "-f", name]),
        ),
        "daxd-apply": (
            lambda: timed_command(["daxd", "--policy", ram, "apply", name]),
            lambda: timed_command(["daxd", "--policy", devdax, "apply", name]),
        ),
        "daxd-inproc": (lambda: inproc_apply(name, "ram"), lambda: inproc_apply(name, "devdax")),
    }


def run_setting(
    name: str, namespace: str, setting: dict[str, Any], runs: int
) -> dict[str, list[dict[str, dict[str, float]]]]:
    blocks = block_numbers(name)
    set_auto_online(setting["auto_online_blocks"])
    memmap = setting.get("memmap_on_memory")
    if memmap is not None:
        write(f"{DAX}/devices/{name}/memmap_on_memory", "1" if memmap else "0")
    table = methods(name, blocks)
    chosen = setting["methods"]
    # Untimed: the first hot-add of a boot brings the device's node online (zonelists, kswapd).
    bare_to_ram(name, blocks)
    check(name, blocks, "ram")
    bare_to_devdax(name, blocks)
    check(name, blocks, "devdax")
    out: dict[str, list[dict[str, dict[str, float]]]] = {m: [] for m in chosen}
    for _ in range(runs):
        for method in chosen:
            if method == "daxd-client":
                out[method].append(client_round(name, blocks))
                continue
            if method == "daemon":
                run_quiet(["systemctl", "start", "daxd.service"])
                # The device enters system RAM by daxd's own hand first.
                install_policy("ram", name)
                run_quiet(["busctl", "call", BUS_NAME, MANAGER, "org.daxd.Daxd1.Manager", *RELOAD])
                wait_for(lambda: _is_ram(name, blocks))
                out[method].append(asyncio.run(daemon_round(name, namespace, blocks)))
                install_policy("devdax", name)
                run_quiet(["busctl", "call", BUS_NAME, MANAGER, "org.daxd.Daxd1.Manager", *RELOAD])
                wait_for(lambda: driver(name) == "device_dax")
                run_quiet(["systemctl", "stop", "daxd.service"])
                continue
            to_ram, to_devdax = table[method]
            forward = to_ram()
            check(name, blocks, "ram")
            back = to_devdax()
            check(name, blocks, "devdax")
            out[method].append({"to_ram": forward, "to_devdax": back})
            print(
                f"{name} {setting['label']} {method}: to_ram {forward['total']:.3f} s, "
                f"to_devdax {back['total']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    if memmap is not None:
        write(f"{DAX}/devices/{name}/memmap_on_memory", "0")
    return out


def client_round(name: str, blocks: list[int]) -> dict[str, dict[str, float]]:
    """`daxd apply DEVICE` with daxd.service running: the command asks the daemon, which takes
    the edited policy file and converts; timed from exec to exit of the command."""
    run_quiet(["systemctl", "start", "daxd.service"])
    try:
        install_policy("ram", name)
        forward = timed_command(["daxd", "apply", name])
        check(name, blocks, "ram")
        install_policy("devdax", name)
        back = timed_command(["daxd", "apply", name])
        check(name, blocks, "devdax")
        # in sync: what the client path costs around the daemon's answer
        idle = timed_command(["daxd", "apply", name])
    finally:
        run_quiet(["systemctl", "stop", "daxd.service"])
    print(
        f"{name} daxd-client: to_ram {forward['total']:.3f} s, to_devdax {back['total']:.3f} s, "
        f"in sync {idle['total']:.3f} s",
        file=sys.stderr,
        flush=True,
    )
    return {"to_ram": forward, "to_devdax": {**back, "in_sync": idle["total"]}}


def _is_ram(name: str, blocks: list[int]) -> bool:
    try:
        check(name, blocks, "ram")
    except SystemExit:
        return False
    return True


def wait_for(cond: Callable[[], bool], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the device")
        time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", action="append", required=True, metavar="DAX=NAMESPACE")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--settings", required=True, help="JSON list of settings")
    p.add_argument("--cxl", action="store_true", help="the devices are CXL regions' (see CXL)")
    args = p.parse_args()
    settings = json.loads(args.settings)
    original = read(f"{MEM}/auto_online_blocks")
    results: dict[str, Any] = {
        "kernel": os.uname().release,
        "auto_online_blocks_at_boot": original,
        "block_size": int(read(f"{MEM}/block_size_bytes"), 16),
        "devices": {},
    }
    try:
        for spec in args.device:
            name, namespace = spec.split("=")
            size = int(read(f"{DAX}/devices/{name}/size"))
            dev_out: dict[str, Any] = {"size": size, "blocks": len(block_numbers(name))}
            for setting in settings:
                dev_out[setting["label"]] = run_setting(name, namespace, setting, args.runs)
            results["devices"][name] = dev_out
    finally:
        set_auto_online(original)
    json.dump(results, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

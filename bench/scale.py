"""Benchmark 2: scale — plan+apply for 1 → 64 devices and 8 → 16,384 memory blocks, and bursts.

Each size gets a fresh fake kernel (hmem devices bound to kmem at boot, blocks auto-onlined in
Normal, a rule that wants Movable) and one daemon pass as ``daxd run`` makes it before READY
(``Reconciler.run_pass``: scan, plan, apply).  Timed separately: the read-only scan and
planning, the pass, and a second pass over the same tree (nothing to do: the cost of a rescan).
A counting Sysfs counts every sysfs operation on memory blocks; the time the fake kernel spends
answering writes (re-rendering its files) is measured and taken out of daxd's time.

Bursts: the daemon runs in-process with the test suite's fake udev source (a real fd) and the
production settle times (50 ms quiet, 1 s at most), and gets 10,000 memory uevents.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CountingSysfs,
    FastMemory,
    heading,
    hmem_kernel,
    ms,
    production_logging,
    remove,
    scratch,
    table,
    us,
    write_policy,
)
from daxd.kernel.scan import read_state
from daxd.plan.planner import plan_all
from daxd.service.daemon import Daemon, DaemonConfig
from daxd.service.events import Event
from daxd.service.reconciler import Batch
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import FakeUdev

EVENTS = 10_000


def make_daemon(kernel: FakeKernel, folder: Path, **config: Any) -> tuple[Daemon, CountingSysfs]:
    sysfs = CountingSysfs(kernel)
    daemon = Daemon(
        DaemonConfig(
            policy_path=write_policy(folder),
            roots=kernel.roots(base=folder / "root"),
            sysfs=sysfs,
            **config,
        )
    )
    daemon.load_policy()
    return daemon, sysfs


def one_size(folder: Path, devices: int, blocks_per_device: int) -> dict[str, Any]:
    run = folder / f"d{devices}-b{blocks_per_device}"
    start = time.perf_counter()
    kernel = hmem_kernel(run / "k", devices, blocks_per_device, movable=False)
    build = time.perf_counter() - start
    blocks = devices * blocks_per_device
    daemon, sysfs = make_daemon(kernel, run)

    start = time.perf_counter()
    state = read_state(sysfs)
    scan = time.perf_counter() - start
    scan_ops = sysfs.total("block")
    start = time.perf_counter()
    plans = plan_all(state, daemon.policy)
    plan = time.perf_counter() - start
    assert sum(len(p.steps) for p in plans) == 2 * blocks, "expected one move per block"

    sysfs.reset()
    start = time.perf_counter()
    daemon.reconciler.run_pass(Batch(daemon.policy, names=None, request_all=True))
    whole = time.perf_counter() - start
    fake = sysfs.fake_write_seconds
    ops = sysfs.block_ops()
    moved = sum(1 for b in kernel.blocks.values() if b.zone == "Movable")
    assert moved == blocks, f"{moved} of {blocks} blocks movable after the pass"
    states = {t.status.state for t in daemon.reconciler.tracked.values() if t.status is not None}
    assert states == {"applied"}, states

    sysfs.reset()
    start = time.perf_counter()
    daemon.reconciler.run_pass(Batch(daemon.policy, names=None, request_all=True))
    rescan = time.perf_counter() - start
    rescan_ops = sysfs.block_ops()
    remove(run)
    return {
        "devices": devices,
        "blocks": blocks,
        "build_s": build,
        "scan_s": scan,
        "scan_block_ops": scan_ops,
        "plan_s": plan,
        "pass_s": whole,
        "fake_kernel_s": fake,
        "daxd_s": whole - fake,
        "block_ops": ops,
        "rescan_s": rescan,
        "rescan_block_ops": rescan_ops,
    }


def per_block(r: dict[str, Any], op: str, key: str = "block_ops") -> str:
    return f"{r[key].get(op, 0) / r['blocks']:.1f}"


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares exponent k of time ~ n^k."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def print_sizes(title: str, rows: list[dict[str, Any]]) -> None:
    print(title + "\n")
    print(
        table(
            [
                "devices",
                "blocks",
                "scan ms",
                "plan ms",
                "pass ms (daxd)",
                "fake kernel ms",
                "µs/block (daxd)",
                "rescan ms",
                "µs/block rescan",
            ],
            [
                [
                    r["devices"],
                    r["blocks"],
                    ms(r["scan_s"]),
                    ms(r["plan_s"]),
                    ms(r["daxd_s"]),
                    ms(r["fake_kernel_s"]),
                    us(r["daxd_s"] / r["blocks"]),
                    ms(r["rescan_s"]),
                    us(r["rescan_s"] / r["blocks"]),
                ]
                for r in rows
            ],
        )
    )
    print(
        "\nsysfs operations per memory block (pass: scan + plan + move; rescan: nothing to do):\n"
    )
    print(
        table(
            [
                "devices",
                "blocks",
                "listdir",
                "read",
                "exists",
                "write",
                "rescan listdir",
                "rescan read",
                "rescan exists",
                "scan only (read_state)",
            ],
            [
                [
                    r["devices"],
                    r["blocks"],
                    per_block(r, "listdir"),
                    per_block(r, "read"),
                    per_block(r, "exists"),
                    per_block(r, "write"),
                    per_block(r, "listdir", "rescan_block_ops"),
                    per_block(r, "read", "rescan_block_ops"),
                    per_block(r, "exists", "rescan_block_ops"),
                    f"{r['scan_block_ops'] / r['blocks']:.1f}",
                ]
                for r in rows
            ],
        )
    )


# -- bursts ------------------------------------------------------------------------------------


async def _burst(folder: Path, mode: str) -> dict[str, Any]:
    kernel = hmem_kernel(folder / f"burst-{mode}", 16, 16, movable=True)
    daemon, sysfs = make_daemon(kernel, folder / f"burst-{mode}")
    udev = FakeUdev()
    daemon.events = udev
    task = asyncio.get_running_loop().create_task(daemon.run())
    while not daemon.ready:
        await asyncio.sleep(0.005)
    owned = sorted(daemon.reconciler.block_owner)
    first_unowned = max(kernel.blocks) + 1
    passes0 = daemon.reconciles
    sysfs.reset()

    def event(i: int) -> Event:
        action = "online" if i % 2 else "offline"
        if mode == "unknown":
            return Event("add", "memory", f"memory{first_unowned + i}")
        return Event(action, "memory", f"memory{owned[i % len(owned)]}")

    pushed = 0.0
    start = time.perf_counter()
    if mode == "queued":
        # All 10,000 wait in the source before the loop looks: one drain takes them all.
        for i in range(EVENTS):
            udev.push(event(i))
        pushed = time.perf_counter() - start
        start = time.perf_counter()  # what is timed is the daemon's handling
    else:

        def feed() -> None:
            nonlocal pushed
            for i in range(EVENTS):
                udev.push(event(i))
            pushed = time.perf_counter() - start

        threading.Thread(target=feed, daemon=True).start()
    while udev.delivered < EVENTS:
        await asyncio.sleep(0.0005)
    handled = time.perf_counter() - start
    await asyncio.sleep(0)
    await daemon.wait_idle()
    idle = time.perf_counter() - start
    passes = daemon.reconciles - passes0
    reads = sysfs.total()
    daemon.stop()
    await asyncio.wait_for(task, 30)
    return {
        "mode": mode,
        "events": EVENTS,
        "push_s": pushed,
        "handled_s": handled,
        "events_per_s": EVENTS / handled,
        "idle_s": idle,
        "reconciles": passes,
        "sysfs_ops": reads,
    }


async def _hotadd(folder: Path, blocks: int) -> dict[str, Any]:
    """A device of ``blocks`` blocks hot-added (and auto-onlined in Normal) under the daemon."""
    kernel = hmem_kernel(folder / "hotadd", 1, 16, movable=True)
    fast = kernel.memory
    assert isinstance(fast, FastMemory)
    daemon, sysfs = make_daemon(kernel, folder / "hotadd")
    udev = FakeUdev()
    daemon.events = udev
    kernel.listener = udev.from_kernel
    task = asyncio.get_running_loop().create_task(daemon.run())
    while not daemon.ready:
        await asyncio.sleep(0.005)
    passes0 = daemon.reconciles
    events0 = len(kernel.uevents)
    movable0 = sum(1 for b in kernel.blocks.values() if b.zone == "Movable")
    start = time.perf_counter()
    with fast.bulk():
        kernel.add_hmem_device(size=blocks * kernel.config.block_size)
    added = time.perf_counter() - start
    kernel_events = len(kernel.uevents) - events0
    await asyncio.sleep(0.06)
    while True:
        await daemon.wait_idle()
        await asyncio.sleep(0.1)  # the events daxd's own writes caused may start another pass
        if udev.delivered >= len(kernel.uevents) - events0 and daemon._idle.is_set():
            break
    done = time.perf_counter() - start
    moved = sum(1 for b in kernel.blocks.values() if b.zone == "Movable") - movable0
    passes = daemon.reconciles - passes0
    daemon.stop()
    await asyncio.wait_for(task, 30)
    kernel.listener = None
    return {
        "blocks": blocks,
        "kernel_events": kernel_events,
        "all_events": len(kernel.uevents) - events0,
        "delivered": udev.delivered,
        "reconciles": passes,
        "fake_add_s": added,
        "until_settled_s": done,
        "daxd_after_add_s": done - added - sysfs.fake_write_seconds,
        "fake_kernel_s": sysfs.fake_write_seconds,
        "movable": moved,
    }


def run(quick: bool = False) -> dict[str, Any]:
    heading("2. Scale")
    production_logging()
    folder = scratch("scale")
    results: dict[str, Any] = {}
    try:
        sizes = (8, 64, 512, 2048) if quick else (8, 64, 512, 4096, 16384)
        by_blocks = [one_size(folder, 1, n) for n in sizes]
        print_sizes(
            "One hmem device of N blocks (128 MiB each), all online in Normal, rule wants Movable:",
            by_blocks,
        )
        big = [(r["blocks"], r["daxd_s"]) for r in by_blocks if r["blocks"] >= 512]
        k = slope(big)
        print(
            f"\nGrowth: daxd time ~ blocks^{k:.2f} over {big[0][0]}..{big[-1][0]} blocks "
            f"(1.00 = linear); building the largest fake tree took {by_blocks[-1]['build_s']:.1f} s"
        )
        results["by_blocks"] = by_blocks
        results["blocks_exponent"] = k

        counts = (1, 4, 16) if quick else (1, 4, 16, 64)
        by_devices = [one_size(folder, d, 16) for d in counts]
        print()
        print_sizes("D hmem devices of 16 blocks each (2 GiB), same rule:", by_devices)
        kd = slope([(r["blocks"], r["daxd_s"]) for r in by_devices])
        print(f"\nGrowth: daxd time ~ blocks^{kd:.2f} over 16..{by_devices[-1]['blocks']} blocks")
        results["by_devices"] = by_devices
        results["devices_exponent"] = kd

        bursts = [asyncio.run(_burst(folder, mode)) for mode in ("queued", "streamed", "unknown")]
        labels = {
            "queued": "10,000 online/offline of owned blocks, queued before the loop looks",
            "streamed": "10,000 online/offline of owned blocks, pushed by a thread",
            "unknown": "10,000 add of blocks no device owns (each asks for a full rescan)",
        }
        print(
            "\nEvent bursts: 16 devices x 16 blocks in sync, production settle "
            "(50 ms quiet, 1 s max):\n"
        )
        print(
            table(
                [
                    "burst",
                    "events/s handled",
                    "until handled ms",
                    "until idle ms",
                    "reconcile passes",
                    "sysfs ops",
                ],
                [
                    [
                        labels[b["mode"]],
                        f"{b['events_per_s']:,.0f}",
                        ms(b["handled_s"]),
                        ms(b["idle_s"]),
                        b["reconciles"],
                        b["sysfs_ops"],
                    ]
                    for b in bursts
                ],
            )
        )
        results["bursts"] = bursts
        hot = asyncio.run(_hotadd(folder, 1024 if quick else 4096))
        own = hot["all_events"] - hot["kernel_events"]
        print(
            f"\nHot-add under the running daemon: a {hot['blocks']}-block device appears "
            f"({hot['kernel_events']:,} uevents from the kernel: add, bind, memory add and "
            f"online), daxd moves every block (its own writes cause {own:,} more uevents): "
            f"{hot['reconciles']} reconcile passes, {hot['movable']} blocks moved to Movable, "
            f"{hot['until_settled_s']:.2f} s from the add to idle (fake kernel: "
            f"{hot['fake_add_s']:.2f} s to build the device + {hot['fake_kernel_s']:.2f} s "
            f"answering writes; daxd {hot['daxd_after_add_s']:.2f} s)."
        )
        results["hotadd"] = hot
    finally:
        remove(folder)
    return results


def main() -> None:
    run()


if __name__ == "__main__":
    main()

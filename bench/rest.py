"""Benchmark 3: at rest — RSS after start and after 10,000 events, and idle wake-ups.

A real ``python -m daxd ... run`` subprocess on an in-sync fake tree (16 hmem devices of 16
blocks, all Movable as the rule wants), with WATCHDOG_USEC=10 s and a NOTIFY_SOCKET bound here.
The events reach it the way they reach it in production: through its libudev monitor.  They are
sent as systemd-udevd sends them (bench.udevnl) inside a private network namespace
(``unshare --net``), so nothing else on the machine sees them.  Three set-ups: no bus and no
udev (the smallest), udev only, and udev plus D-Bus on a private system bus (production).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    child_env,
    heading,
    hmem_kernel,
    remove,
    scratch,
    table,
    write_policy,
)

TARGET_MIB = 40


def netns_possible() -> str | None:
    """Why synthetic udev events cannot reach a subprocess here, or None."""
    if os.geteuid() != 0:
        return "not root (libudev ignores events from other uids; unshare needs root)"
    if shutil.which("unshare") is None:
        return "unshare(1) is missing"
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15).close()
    except OSError as e:
        return f"no netlink uevent socket: {e}"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare --net fails: {probe.stderr.decode().strip()}"
    return None


def measure(
    folder: Path,
    tree: Path,
    policy: Path,
    blocks: Path,
    *,
    idle: float,
    events: int,
    mode: str,
    bus_address: str | None = None,
) -> dict[str, Any]:
    work = folder / mode.replace(" ", "-")
    work.mkdir()
    argv = [
        "unshare", "--net", "--", PYTHON, "-m", "bench.rest_inner",
        "--tree", str(tree), "--policy", str(policy), "--folder", str(work),
        "--blocks", str(blocks), "--idle", str(idle), "--events", str(events),
    ]  # fmt: skip
    if mode == "minimal":
        argv.append("--no-udev")
    elif mode.endswith("without-ssl"):
        argv.append("--without-ssl")
    else:
        argv.append("--strace")
    env = child_env()
    if bus_address is not None:
        argv.append("--bus")
        env["DBUS_SYSTEM_BUS_ADDRESS"] = bus_address
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def mib(kib_value: int) -> str:
    return f"{kib_value / 1024:.1f}"


def private_bus(folder: Path) -> Any:
    from tests.service.dbus_bus import private_system_bus

    return private_system_bus(folder)


def run(quick: bool = False) -> dict[str, Any]:
    heading("3. At rest")
    idle = 5.0 if quick else 10.0
    events = 2_000 if quick else 10_000
    folder = scratch("rest")
    folder.chmod(0o755)
    results: dict[str, Any] = {"idle_window_s": idle, "events_per_batch": events}
    try:
        kernel = hmem_kernel(folder / "k", 16, 16, movable=True)
        policy = write_policy(folder)
        owned = sorted(b.index for name in kernel.devices for b in kernel.blocks_of(name))
        blocks = folder / "blocks.json"
        blocks.write_text(json.dumps(owned))
        why = netns_possible()
        if why is not None:
            print(f"Not measured in a subprocess: {why}.")
            results["skipped"] = why
            return results
        runs: dict[str, dict[str, Any]] = {}
        runs["minimal"] = measure(
            folder, kernel.sysfs_root, policy, blocks, mode="minimal", idle=idle, events=events
        )
        runs["udev"] = measure(
            folder, kernel.sysfs_root, policy, blocks, mode="udev", idle=idle, events=events
        )
        try:
            bus_folder = folder / "bus"
            bus_folder.mkdir()
            with private_bus(bus_folder) as bus:
                runs["udev + D-Bus"] = measure(
                    folder, kernel.sysfs_root, policy, blocks, mode="udev-bus",
                    bus_address=bus.address, idle=idle, events=events,
                )  # fmt: skip
                runs["what-if"] = measure(
                    folder, kernel.sysfs_root, policy, blocks, mode="udev-bus-without-ssl",
                    bus_address=bus.address, idle=2.0, events=events,
                )  # fmt: skip
        except BaseException as e:  # pytest.skip raises a BaseException
            if isinstance(e, KeyboardInterrupt):
                raise
            print(f"(D-Bus set-up not measured: {e})")
        results["runs"] = runs
        report(runs, events, idle)
    finally:
        remove(folder)
    return results


def report(runs: dict[str, dict[str, Any]], events: int, idle: float) -> None:
    labels = {
        "minimal": "`run --no-bus --no-udev`",
        "udev": "`run --no-bus` (udev)",
        "udev + D-Bus": "`run` (udev + D-Bus)",
        "what-if": "what-if: `run` (udev + D-Bus), `ssl` unimportable",
    }
    rows = []
    for key, r in runs.items():
        start = r["after_start"]
        row = [
            labels[key],
            mib(start["VmRSS_kib"]),
            mib(start["VmHWM_kib"]),
            f"{mib(start['RssAnon_kib'])} / {mib(start['RssFile_kib'])}",
            start["threads"],
        ]
        batches = r.get("batches", [])
        for i in range(2):
            if i < len(batches):
                after = batches[i]["after"]
                row += [f"{mib(after['VmRSS_kib'])} / {mib(after['VmHWM_kib'])}"]
            else:
                row += ["-"]
        peak = max([start["VmRSS_kib"]] + [b["after"]["VmRSS_kib"] for b in batches])
        row.append("MET" if peak <= TARGET_MIB * 1024 else "MISSED")
        rows.append(row)
    print(
        f"Memory of the daemon process (MiB); 16 devices, 256 blocks in sync; target VmRSS <= "
        f"{TARGET_MIB} MiB:\n"
    )
    print(table(
        ["daemon", "VmRSS after start", "VmHWM after start", "RssAnon / RssFile", "threads",
         f"VmRSS / VmHWM after {events:,} events", f"after {2 * events:,} events", "target"],
        rows,
    ))  # fmt: skip

    rows = []
    for key, r in runs.items():
        if key == "what-if":
            continue
        for b_i, b in enumerate(r.get("batches", [])):
            rows.append([
                labels[key], f"{b_i + 1}", f"{b['events'] / b['send_s']:,.0f}",
                f"{b['last_pass_after_s']:.2f}" if b["last_pass_after_s"] is not None else "-",
                b["reconcile_passes"], f"{b['cpu_s']:.2f}", "yes" if r["events_lost"] else "no",
            ])  # fmt: skip
    if rows:
        print(
            f"\nEvent batches ({events:,} memory online/offline uevents of owned blocks, sent "
            "through netlink as udevd sends them):\n"
        )
        print(table(
            ["daemon", "batch", "sent/s", "last pass ends after s", "reconcile passes",
             "daemon CPU s", "events lost"],
            rows,
        ))  # fmt: skip

    rows = []
    for key, r in runs.items():
        if key == "what-if":
            continue
        i = r["idle"]
        st = r.get("strace")
        calls = "-"
        if st:
            top = sorted(st["by_syscall"].items(), key=lambda kv: -kv[1])[:4]
            calls = f"{st['syscalls']} ({', '.join(f'{n} {c}' for n, c in top)})"
        rows.append([
            labels[key], f"{i['switches_per_s']:.2f}", i["context_switches"],
            i["watchdog_pings"], i["other_datagrams"], f"{i['cpu_s']:.2f}", calls,
        ])  # fmt: skip
    print(
        f"\nIdle for {idle:.0f} s after READY (WATCHDOG_USEC=10 s: a ping every 5 s); context "
        "switches of all threads from /proc/PID/task/*/status; syscalls from `strace -c -f` over "
        "a second window of the same length:\n"
    )
    print(table(
        ["daemon", "wake-ups/s", "context switches", "WATCHDOG=1", "other sd_notify",
         "CPU s", "syscalls (top)"],
        rows,
    ))  # fmt: skip


def main() -> None:
    run()


if __name__ == "__main__":
    main()

"""The at-rest measurement of one ``daxd run`` subprocess; run by bench.rest inside
``unshare --net`` so that the synthetic udev events it sends stay in a private namespace.

Prints one JSON object: RSS after start, idle context switches / CPU / watchdog pings /
strace summary, and RSS after each batch of events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    NotifyListener,
    child_env,
    context_switches,
    cpu_seconds,
    kib,
    proc_status,
    stop_process,
)
from bench.udevnl import UdevSender

WATCHDOG_USEC = "10000000"  # 10 s: the daemon pings every 5 s
# `python -m daxd` with the ssl module made unimportable (asyncio then runs without TLS support,
# which daxd never uses): how much of the footprint is asyncio's unconditional `import ssl`.
WITHOUT_SSL = (
    "import runpy, sys; sys.modules['ssl'] = None; "
    "runpy.run_module('daxd', run_name='__main__', alter_sys=True)"
)


def memory(pid: int) -> dict[str, int]:
    st = proc_status(pid)
    return {
        "VmRSS_kib": kib(st["VmRSS"]),
        "VmHWM_kib": kib(st["VmHWM"]),
        "RssAnon_kib": kib(st["RssAnon"]),
        "RssFile_kib": kib(st["RssFile"]),
        "threads": int(st["Threads"]),
    }


def count(datagrams: list[str], field: str) -> int:
    return sum(1 for d in datagrams if any(line.startswith(field) for line in d.split("\n")))


def idle_window(pid: int, notify: NotifyListener, seconds: float) -> dict[str, Any]:
    notify.drain()
    cs0, cpu0, t0 = context_switches(pid), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cs1, cpu1, t1 = context_switches(pid), cpu_seconds(pid), time.monotonic()
    got = notify.drain()
    per_thread = {
        str(tid): [cs1[tid][0] - v0, cs1[tid][1] - n0]
        for tid, (v0, n0) in cs0.items()
        if tid in cs1
    }
    new_threads = [tid for tid in cs1 if tid not in cs0]
    total = sum(v + n for v, n in per_thread.values()) + sum(sum(cs1[t]) for t in new_threads)
    return {
        "seconds": t1 - t0,
        "context_switches": total,
        "switches_per_s": total / (t1 - t0),
        "per_thread": per_thread,
        "new_threads": len(new_threads),
        "cpu_s": cpu1 - cpu0,
        "watchdog_pings": count(got, "WATCHDOG=1"),
        "other_datagrams": len(got) - count(got, "WATCHDOG=1"),
    }


def strace_window(pid: int, seconds: float, out: Path) -> dict[str, Any] | None:
    if shutil.which("strace") is None:
        return None
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(seconds)
    tracer.send_signal(signal.SIGINT)
    try:
        tracer.wait(10)
    except subprocess.TimeoutExpired:
        tracer.kill()
        tracer.wait()
    calls: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in out.read_text().splitlines():
            # % time  seconds  usecs/call  calls  [errors]  syscall
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return {"seconds": seconds, "syscalls": sum(calls.values()), "by_syscall": calls}


def event_batch(
    pid: int, notify: NotifyListener, sender: UdevSender, blocks: list[int], n: int
) -> dict[str, Any]:
    notify.drain()
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    for i in range(n):
        sender.memory("online" if i % 2 else "offline", blocks[i % len(blocks)])
    sent = time.perf_counter() - start
    # Handled: a pass has reported STATUS since, and the process has used no CPU for 1 s.
    deadline = time.monotonic() + 120
    last_cpu, quiet_since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        notify.drain()
        cpu = cpu_seconds(pid)
        if cpu != last_cpu:
            last_cpu, quiet_since = cpu, time.monotonic()
        statuses = [t for t, d in notify.messages if t > start and d.startswith("STATUS=")]
        if statuses and time.monotonic() - quiet_since >= 1.0:
            break
    statuses = [t for t, d in notify.messages if t > start and d.startswith("STATUS=")]
    return {
        "events": n,
        "send_s": sent,
        "last_pass_after_s": (max(statuses) - start) if statuses else None,
        "reconcile_passes": len(statuses),
        "cpu_s": last_cpu - cpu0,
        "after": memory(pid),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tree", type=Path, required=True)
    p.add_argument("--policy", type=Path, required=True)
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--blocks", type=Path, help="JSON list of memory block indices the devices own")
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--bus", action="store_true", help="publish on $DBUS_SYSTEM_BUS_ADDRESS")
    p.add_argument("--no-udev", action="store_true")
    p.add_argument("--strace", action="store_true")
    p.add_argument("--without-ssl", action="store_true", help="a what-if: see WITHOUT_SSL")
    args = p.parse_args()

    notify = NotifyListener(args.folder / "notify")
    start_daxd = ["-c", WITHOUT_SSL] if args.without_ssl else ["-m", "daxd"]
    argv = [PYTHON, *start_daxd, "--sysfs", str(args.tree), "--policy", str(args.policy), "run"]
    if not args.bus:
        argv.append("--no-bus")
    if args.no_udev:
        argv.append("--no-udev")
    extra = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": WATCHDOG_USEC}
    if args.bus:
        extra["DBUS_SYSTEM_BUS_ADDRESS"] = os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
    log = args.folder / "daemon.log"
    result: dict[str, Any] = {"argv": argv[1:]}
    with log.open("wb") as err:
        start = time.perf_counter()
        daemon = subprocess.Popen(
            argv, env=child_env(**extra), stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        try:
            arrived, _ = notify.wait("READY=1", timeout=60)
            result["ready_s"] = arrived - start
            time.sleep(1.0)
            result["after_start"] = memory(daemon.pid)
            result["idle"] = idle_window(daemon.pid, notify, args.idle)
            if args.strace:
                result["strace"] = strace_window(daemon.pid, args.idle, args.folder / "strace.txt")
            if not args.no_udev and args.events:
                blocks = json.loads(args.blocks.read_text())
                sender = UdevSender()
                result["batches"] = [
                    event_batch(daemon.pid, notify, sender, blocks, args.events)
                    for _ in range(args.batches)
                ]
                sender.close()
                result["after_events_idle"] = idle_window(daemon.pid, notify, min(args.idle, 5.0))
        finally:
            result["exit_code"] = stop_process(daemon)
    text = log.read_text(errors="replace")
    result["events_lost"] = "were lost" in text
    result["log_tail"] = text.splitlines()[-5:]
    notify.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

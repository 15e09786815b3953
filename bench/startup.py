"""Benchmark 1: start to READY=1.

- subprocess: ``python -m daxd --sysfs TREE --policy FILE run --no-bus --no-udev`` from exec to
  the READY=1 datagram on a NOTIFY_SOCKET bound here; trees that need no write (the fake
  kernel's write semantics exist only in-process): no device, 1 and 16 devices already in sync;
- in-process: from ``Daemon(...)`` to READY=1 for 1 and 16 devices whose blocks must move from
  Normal to Movable (256 blocks for 16), and 16 in sync for comparison;
- ``python -X importtime``: what the run imports, and what it should not need.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    CountingSysfs,
    NotifyListener,
    child_env,
    heading,
    hmem_kernel,
    median,
    ms,
    production_logging,
    remove,
    scratch,
    status_of,
    stop_process,
    table,
    write_policy,
)

TARGET = 0.3  # seconds to READY with no device
BLOCKS_PER_DEVICE = 16  # 2 GiB hmem devices, 128 MiB blocks

# Imported by `daxd run --no-bus --no-udev` although that run does not use them.
NOT_NEEDED = {
    "dbus_fast": "D-Bus (only with the bus)",
    "daxd.service.dbus_api": "D-Bus API (only with the bus)",
    "pyudev": "udev (only without --no-udev)",
    "daxd.cli.render": "CLI output (plan/list/apply only)",
    "daxd.cli.status": "`daxd status` only",
    "json": "JSON output (CLI --json, D-Bus Plan)",
    "importlib.metadata": "pydantic's plugin lookup",
}


@dataclass
class ImportLine:
    self_us: int
    cumulative_us: int
    depth: int
    name: str


def daemon_argv(
    tree: Path, policy: Path, *extra: str, python_flags: tuple[str, ...] = ()
) -> list[str]:
    return [
        PYTHON,
        *python_flags,
        "-m",
        "daxd",
        "--sysfs",
        str(tree),
        "--policy",
        str(policy),
        "run",
        "--no-bus",
        "--no-udev",
        *extra,
    ]


def time_to_ready(
    argv: list[str], folder: Path, runs: int, warmup: int = 2, **env: str
) -> tuple[list[float], str, str]:
    """Seconds from exec to READY=1, per run; the READY status; stderr of the last run."""
    notify = NotifyListener(folder / "notify")
    times: list[float] = []
    status = ""
    log = folder / "daemon.log"
    try:
        for i in range(warmup + runs):
            with log.open("wb") as err:
                start = time.perf_counter()
                p = subprocess.Popen(
                    argv,
                    env=child_env(NOTIFY_SOCKET=str(notify.path), **env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
                try:
                    arrived, datagram = notify.wait("READY=1", timeout=30)
                finally:
                    stop_process(p)
            if i >= warmup:
                times.append(arrived - start)
            status = status_of(datagram)
    finally:
        notify.close()
    return times, status, log.read_text(errors="replace")


def command_time(code: str, runs: int, **env: str) -> list[float]:
    """Seconds to run ``python -c code`` (interpreter start, imports, exit)."""
    out = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([PYTHON, "-c", code], env=child_env(**env), check=True)
        out.append(time.perf_counter() - start)
    return out[1:]


def parse_importtime(text: str) -> list[ImportLine]:
    lines = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            lines.append(
                ImportLine(int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4))
            )
    return lines


def importtime_profile(tree: Path, policy: Path, folder: Path) -> list[ImportLine]:
    argv = daemon_argv(tree, policy, python_flags=("-X", "importtime"))
    _, _, stderr = time_to_ready(argv, folder, runs=1, warmup=0)
    return parse_importtime(stderr)


def group_of(name: str) -> str:
    top = name.split(".", maxsplit=1)[0]
    if top in ("pydantic", "pydantic_core", "annotated_types", "typing_inspection"):
        return "pydantic"
    if top == "daxd":
        return ".".join(name.split(".")[:2])
    if top in ("yaml", "_yaml"):
        return "yaml (PyYAML)"
    if top in ("sdnotify",):
        return "sdnotify"
    if top in ("asyncio", "concurrent", "ssl", "_ssl", "selectors", "_asyncio"):
        return "asyncio (+ssl, concurrent)"
    if top in ("importlib", "email", "zipfile", "csv", "_csv", "zipimport"):
        return "importlib.metadata & co"
    return "other stdlib"


PYDANTIC_PROBE = """
import time, json, sys
t0 = time.perf_counter()
import pydantic
from pydantic import BaseModel
t1 = time.perf_counter()
import daxd.policy.model, daxd.policy.document
t2 = time.perf_counter()
import daxd.policy.load
t3 = time.perf_counter()
from pathlib import Path
daxd.policy.load.load_policy(Path(sys.argv[1]))
t4 = time.perf_counter()
print(json.dumps({"import pydantic": t1 - t0, "build policy models": t2 - t1,
                  "rest of daxd.policy": t3 - t2, "first load_policy": t4 - t3}))
"""


def pydantic_cost(policy: Path, runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for _ in range(runs + 1):
        out = subprocess.run(
            [PYTHON, "-c", PYDANTIC_PROBE, str(policy)],
            env=child_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for k, v in json.loads(out).items():
            samples.setdefault(k, []).append(v)
    return {k: median(v[1:]) for k, v in samples.items()}


# -- in-process, with writes ----------------------------------------------------------------


def inprocess_ready(
    folder: Path, devices: int, movable: bool, settle: float | None = None
) -> dict[str, Any]:
    from daxd.service.daemon import Daemon, DaemonConfig
    from daxd.service.notify import Notifier

    run = folder / f"run-{devices}-{movable}-{time.monotonic_ns()}"
    run.mkdir()
    kernel = hmem_kernel(run / "k", devices, BLOCKS_PER_DEVICE, movable=movable)
    policy = write_policy(run)
    sysfs = CountingSysfs(kernel)
    notify = run / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = str(notify)
    extra = {} if settle is None else {"settle": settle}

    async def main() -> tuple[float, str, int]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        daemon = Daemon(
            DaemonConfig(
                policy_path=policy,
                roots=kernel.roots(base=run / "root"),
                sysfs=sysfs,
                **extra,  # type: ignore[arg-type]
            ),
            notifier=Notifier(),
        )
        task = loop.create_task(daemon.run())
        while True:
            data = (await loop.sock_recv(sock, 65536)).decode()
            if "READY=1" in data.split("\n"):
                elapsed = time.perf_counter() - start
                break
        daemon.stop()
        await asyncio.wait_for(task, 30)
        return elapsed, status_of(data), daemon.reconciles

    try:
        elapsed, status, passes = asyncio.run(main())
    finally:
        sock.close()
        if old is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = old
    movable_now = sum(1 for b in kernel.blocks.values() if b.zone == "Movable")
    writes = sum(n for (op, _), n in sysfs.counts.items() if op == "write")
    remove(run)
    return {
        "seconds": elapsed,
        "status": status,
        "reconciles": passes,
        "movable_blocks": movable_now,
        "writes": writes,
        "fake_kernel_seconds": sysfs.fake_write_seconds,
    }


# -- the benchmark ----------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    heading("1. Start to READY")
    production_logging()
    runs = 5 if quick else 15
    folder = scratch("startup")
    results: dict[str, Any] = {"runs": runs}
    try:
        trees = {}
        for devices in (0, 1, 16):
            kernel = hmem_kernel(
                folder / f"tree{devices}", devices, BLOCKS_PER_DEVICE, movable=True
            )
            trees[devices] = kernel.sysfs_root
        policy = write_policy(folder)

        # Subprocess: exec -> READY=1.
        rows = []
        sub: dict[str, Any] = {}
        for devices, tree in trees.items():
            times, status, _ = time_to_ready(daemon_argv(tree, policy), folder, runs)
            sub[str(devices)] = {
                "median": median(times),
                "min": min(times),
                "max": max(times),
                "status": status,
            }
            rows.append([devices, ms(median(times)), ms(min(times)), ms(max(times)), status])
        # The same from a source tree where Python may not write bytecode (compiles daxd each time).
        empty = folder / "nocache"
        empty.mkdir()
        times, status, _ = time_to_ready(
            daemon_argv(trees[0], policy),
            folder,
            max(5, runs // 3),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPYCACHEPREFIX=str(empty),
        )
        sub["0-nobytecode"] = {"median": median(times), "min": min(times), "max": max(times)}
        rows.append(
            ["0, no bytecode cache", ms(median(times)), ms(min(times)), ms(max(times)), status]
        )
        print(
            "Subprocess `python -m daxd --sysfs TREE --policy FILE run --no-bus --no-udev`, "
            "exec to READY=1 "
            f"(ms, {runs} runs after 2 warm-up runs; trees in sync: no write needed):\n"
        )
        print(table(["devices", "median", "min", "max", "READY status"], rows))
        met = sub["0"]["median"] <= TARGET
        print(
            f"\nTarget: <= {TARGET * 1000:.0f} ms with no device: {'MET' if met else 'MISSED'} "
            f"(median {ms(sub['0']['median'])} ms)"
        )
        results["subprocess"] = sub
        results["target_met"] = met

        # Decomposition.
        # os._exit: without the interpreter's teardown, which the daemon only pays when it stops.
        bare = command_time("import os; os._exit(0)", runs)
        imports = command_time("import daxd.cli.main, daxd.service.run, os; os._exit(0)", runs)
        pyd = pydantic_cost(policy, max(5, runs // 2))
        results["interpreter"] = median(bare)
        results["imports"] = median(imports)
        results["pydantic"] = pyd
        print("\nWhere the time goes (medians, ms):\n")
        rows = [
            ["interpreter start + site (`python -c 'import os; os._exit(0)'`)", ms(median(bare))],
            [
                "imports of the run (`import daxd.cli.main, daxd.service.run`), interpreter "
                "included",
                ms(median(imports)),
            ],
            ["  of which: import pydantic + BaseModel", ms(pyd["import pydantic"])],
            [
                "  of which: build the policy models (schema + validators)",
                ms(pyd["build policy models"]),
            ],
            ["first load_policy() (one-rule file)", ms(pyd["first load_policy"])],
            ["exec to READY=1 (no device)", ms(sub["0"]["median"])],
            [
                "  so after the imports (policy, sysfs, 50 ms settle, READY)",
                ms(sub["0"]["median"] - median(imports)),
            ],
        ]
        print(table(["step", "ms"], rows))

        # -X importtime.
        lines = importtime_profile(trees[0], policy, folder)
        total = sum(x.self_us for x in lines)
        groups: dict[str, int] = {}
        for x in lines:
            groups[group_of(x.name)] = groups.get(group_of(x.name), 0) + x.self_us
        print(
            f"\n`python -X importtime` of the run: {len(lines)} modules, {total / 1000:.1f} ms "
            "(self times summed; one run, so noisier than the medians above)\n"
        )
        print(
            table(
                ["group", "self ms"],
                [[g, f"{t / 1000:.1f}"] for g, t in sorted(groups.items(), key=lambda kv: -kv[1])],
            )
        )
        top = sorted((x for x in lines if x.depth <= 1), key=lambda x: -x.cumulative_us)[:15]
        print("\nTop-level imports by cumulative time:\n")
        print(
            table(
                ["module", "cumulative ms", "self ms"],
                [[x.name, f"{x.cumulative_us / 1000:.1f}", f"{x.self_us / 1000:.1f}"] for x in top],
            )
        )
        heavy = sorted(lines, key=lambda x: -x.self_us)[:15]
        print("\nHeaviest modules by self time:\n")
        print(table(["module", "self ms"], [[x.name, f"{x.self_us / 1000:.1f}"] for x in heavy]))
        names = {x.name for x in lines}
        unneeded = [[m, why, "yes" if m in names else "no"] for m, why in NOT_NEEDED.items()]
        print("\nModules this run does not need:\n")
        print(table(["module", "needed for", "imported?"], unneeded))
        results["importtime_total_ms"] = total / 1000
        results["import_groups_ms"] = {g: t / 1000 for g, t in groups.items()}
        results["unneeded_imported"] = [m for m, _, y in unneeded if y == "yes"]

        # In-process, with writes.
        rows = []
        inproc: dict[str, Any] = {}
        reps = 3 if quick else 5
        for devices, movable, label in (
            (0, True, "0 devices"),
            (1, False, "1 device, 16 blocks Normal -> Movable"),
            (16, False, "16 devices, 256 blocks Normal -> Movable"),
            (16, True, "16 devices in sync"),
        ):
            samples = [inprocess_ready(folder, devices, movable) for _ in range(reps)]
            secs = [s["seconds"] for s in samples]
            last = samples[-1]
            inproc[label] = {
                "median": median(secs),
                "min": min(secs),
                **{k: v for k, v in last.items() if k != "seconds"},
            }
            rows.append(
                [
                    label,
                    ms(median(secs)),
                    ms(min(secs)),
                    last["writes"],
                    ms(last["fake_kernel_seconds"]),
                    last["reconciles"],
                    last["status"],
                ]
            )
        print(
            f"\nIn-process, `Daemon(...)` to READY=1 (ms, median of {reps}; imports already done; "
            "production settle 50 ms):\n"
        )
        print(
            table(
                [
                    "case",
                    "median",
                    "min",
                    "sysfs writes",
                    "fake kernel ms",
                    "passes",
                    "READY status",
                ],
                rows,
            )
        )
        nosettle = [inprocess_ready(folder, 0, True, settle=0.0)["seconds"] for _ in range(reps)]
        inproc["0 devices, settle 0"] = {"median": median(nosettle)}
        print(
            f"\n(0 devices with settle=0: {ms(median(nosettle))} ms — the 50 ms quiet time the "
            "first pass waits for an event burst to end is part of every start.)"
        )
        results["inprocess"] = inproc
    finally:
        remove(folder)
    return results


def main() -> None:
    run()


if __name__ == "__main__":
    main()

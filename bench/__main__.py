"""``python -m bench [all|startup|scale|rest|dbus|vm ...] [--quick] [--json FILE]``.

``all`` runs the four fake-kernel benchmarks; ``vm`` (the real kernel in the QEMU lab) only when
named.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common

NAMES = ("startup", "scale", "rest", "dbus")
LAB = ("vm",)  # needs the lab's host tools and ~25 minutes: never part of "all"


def runner(name: str) -> Callable[[bool], dict[str, Any]]:
    if name == "startup":
        from bench.startup import run
    elif name == "scale":
        from bench.scale import run
    elif name == "rest":
        from bench.rest import run
    elif name == "vm":
        from bench.vm import run
    else:
        from bench.dbus import run
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("which", nargs="*", default=["all"], choices=[*NAMES, *LAB, "all"])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and sizes (a smoke run)")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    args = p.parse_args(argv)
    chosen = list(NAMES) if "all" in args.which else list(dict.fromkeys(args.which))
    info = common.machine()
    print("# daxd benchmarks\n")
    print(
        f"nproc {info['nproc']}, Python {info['python']}, kernel {info['kernel']}, "
        f"load average {' '.join(f'{x:.2f}' for x in info['loadavg'])}"
    )
    print(info["lscpu"])
    results: dict[str, Any] = {"machine": info}
    failed = []
    start = time.monotonic()
    for name in chosen:
        t0 = time.monotonic()
        try:
            results[name] = runner(name)(args.quick)
        except Exception as e:  # report, run the others
            import traceback

            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        results[name]["wall_seconds"] = time.monotonic() - t0
        print(f"\n({name}: {time.monotonic() - t0:.1f} s)", flush=True)
    results["machine"]["loadavg_after"] = common.machine()["loadavg"]
    print(
        f"\nTotal: {time.monotonic() - start:.1f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in results['machine']['loadavg_after'])}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

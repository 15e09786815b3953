"""The figures of the fault sweep, as docs/reliability.md cites them.

    .venv/bin/python -m tests.reliability.report [default|full|quick] [--workers N]

Runs the sweep of tests/reliability/faults.py (the same runs test_fault_sweep.py makes) and
prints: the scenarios and their fault-free writes, the faults injected by kind, by errno and by
scenario, what the applies and retries ended in, the invariant violations (with the first few
runs that broke one) and the time taken.  Exits 1 when an invariant broke.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tests.reliability.faults import (
    SCENARIOS,
    baseline,
    counts,
    jobs,
    profile,
    run_jobs,
)


def table(title: str, counter: Counter[str]) -> str:
    width = max((len(k) for k in counter), default=0)
    lines = [f"{title}:"]
    lines += [f"  {key:<{width}}  {n:>6}" for key, n in sorted(counter.items())]
    lines.append(f"  {'total':<{width}}  {sum(counter.values()):>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("profile", nargs="?", choices=["default", "full", "quick"])
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPUs)")
    args = parser.parse_args(argv)
    prof = args.profile or profile()

    print(f"profile: {prof}")
    print("scenarios (fault-free writes):")
    for s in SCENARIOS:
        print(f"  {s.name:<26} {len(baseline(s.name)):>3}  {s.about}")
    print(f"  {'total':<26} {sum(len(baseline(s.name)) for s in SCENARIOS):>3}")

    todo = jobs(prof)
    start = time.monotonic()
    records = run_jobs(todo, args.workers)
    elapsed = time.monotonic() - start
    figures = counts(records)
    print(table("faults by kind", figures["fault"]))
    print(table("faults by errno the kernel returned", figures["errno"]))
    print(table("runs by scenario", figures["scenario"]))
    print(table("outcome -> retry", figures["outcome"]))
    broken = [r for r in records if r.problems]
    print(f"invariant violations: {len(broken)}")
    for r in broken[:10]:
        print(f"  {r}")
    print(f"{len(records)} runs in {elapsed:.1f} s")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

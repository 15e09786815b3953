"""Text output of the `daxd` command (its JSON documents: daxd/apply/report.py)."""

from __future__ import annotations

from daxd.apply.executor import DeviceResult
from daxd.kernel.model import KernelState
from daxd.kernel.view import view
from daxd.plan.steps import DevicePlan, Step


def human_size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{n} B"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def list_text(state: KernelState, rules: dict[str, str | None]) -> str:
    rows = [["DEVICE", "PROVIDER", "SIZE", "NODE", "MODE", "ZONE", "MEMMAP", "BLOCKS", "RULE"]]
    for name, rule in rules.items():
        d = state.devices[name]
        v = view(d, state.blocks_of(name))
        memmap = {None: "-", True: "yes", False: "no"}[v.memmap_on_memory]
        rows.append(
            [
                name,
                v.provider,
                human_size(v.size),
                "-" if v.target_node is None else str(v.target_node),
                v.mode,
                v.zone or "-",
                memmap,
                f"{v.blocks_online}/{v.blocks_total}",
                rule or "-",
            ]
        )
    return table(rows)


def block_runs(items: list[tuple[Step, str]]) -> list[str]:
    """Lines for steps, with blocks that get the same treatment one after the other folded into
    one line.

    daxd does a device's blocks out of address order (planner.zone_walk_order), so a line names
    the set: ``memory32..memory40 (9 blocks)`` when it has no gaps, else its bounds and count.

    ``items`` pairs each step with a suffix (e.g. its outcome); a block's consecutive steps form
    its treatment.
    """
    lines: list[str] = []
    run: list[int] = []
    seen: set[int] = set()
    run_key: tuple[tuple[str, str, str], ...] | None = None
    i = 0

    def flush() -> None:
        if run and run_key is not None:
            ops = ", ".join(f"{value}{suffix}" for value, suffix, _ in run_key)
            lines.append(f"{_span(run)}: {ops}  # {run_key[0][2]}")
        run.clear()
        seen.clear()

    while i < len(items):
        step, suffix = items[i]
        if step.block is None:
            flush()
            run_key = None
            lines.append(f"{step.describe()}{suffix}")
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0].block == step.block:
            j += 1
        key = tuple((s.value, suf, s.reason) for s, suf in items[i:j])
        if key != run_key or step.block in seen:
            flush()
            run_key = key
        run.append(step.block)
        seen.add(step.block)
        i = j
    flush()
    return lines


def _span(blocks: list[int]) -> str:
    if len(blocks) == 1:
        return f"memory{blocks[0]}"
    low, high = min(blocks), max(blocks)
    if high - low + 1 == len(blocks):
        return f"memory{low}..memory{high} ({len(blocks)} blocks)"
    return f"{len(blocks)} blocks between memory{low} and memory{high}"


def plan_text(p: DevicePlan) -> str:
    head = f"{p.device}: {p.verdict}"
    if p.rule:
        head += f" (rule {p.rule!r} at {p.rule_location})"
    lines = [head]
    if p.reason:
        lines.append(f"  {p.reason}")
    lines += [f"  {i}. {ln}" for i, ln in enumerate(block_runs([(s, "") for s in p.steps]), 1)]
    lines += [f"  {n}" for n in p.notes]
    return "\n".join(lines)


def result_text(r: DeviceResult) -> str:
    head = f"{r.device}: {r.outcome}"
    if r.plan and r.plan.rule:
        head += f" (rule {r.plan.rule!r})"
    lines = [head]
    done = [
        (s.step, (" (undo)" if s.rollback else "") + (" ok" if s.ok else f" FAILED: {s.error}"))
        for s in r.results
    ]
    lines += [f"  {ln}" for ln in block_runs(done)]
    if r.error:
        lines.append(f"  {r.error}")
    if r.final is not None:
        f = r.final
        lines.append(
            f"  now: {f.mode}, zone {f.zone or '-'}, "
            f"{f.blocks_online}/{f.blocks_total} blocks online"
        )
    return "\n".join(lines)

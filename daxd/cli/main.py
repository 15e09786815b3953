"""The `daxd` command: check, list, plan, apply, migrate-device-model, run, status."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daxd import __version__
from daxd.cli import exitcodes
from daxd.kernel.model import KernelState
from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import Sysfs, SysfsError, install_interrupt_handler
from daxd.plan.planner import device_sort_key, plan_all
from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy
from daxd.policy.model import Policy

DEFAULT_POLICY = Path("/etc/daxd/policy.yaml")


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daxd",
        description="Apply a declarative memory policy to DAX devices.",
        epilog="Exit codes and JSON output: docs/cli.md (installed under /usr/share/doc/daxd).",
    )
    p.add_argument("--version", action="version", version=f"daxd {__version__}")
    p.add_argument("--sysfs", metavar="DIR", default="/sys", help="sysfs root (default /sys)")
    p.add_argument("--procfs", metavar="DIR", default="/proc", help="procfs root (default /proc)")
    p.add_argument(
        "--runtime-dir",
        metavar="DIR",
        type=Path,
        help="where daxd records what a crash must not leave behind (default /run/daxd; "
        "none with another --sysfs)",
    )
    p.add_argument(
        "--policy", metavar="FILE", type=Path, default=DEFAULT_POLICY, help="policy file"
    )
    p.add_argument(
        "--policy-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="drop-in folder (default: policy.d beside the policy file)",
    )
    p.add_argument(
        "--allow-untrusted-policy",
        action="store_true",
        help="use policy files others could have written (not owned by root, group/world "
        "writable, symlinks out of the policy folder)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every sysfs write")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("check", help="validate a policy; exit 0 when valid, 1 when not")
    c.add_argument("file", nargs="?", type=Path, help="policy file (default: --policy)")

    ls = sub.add_parser("list", help="devices, provider, mode, zone, blocks online/total")
    ls.add_argument("--json", action="store_true")

    pl = sub.add_parser("plan", help="what apply would do, per device, with reasons")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("devices", nargs="*", metavar="DEVICE")

    ap = sub.add_parser("apply", help="make the devices match the policy now (one shot)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--offline-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up offlining one memory block after this long (default 30)",
    )
    ap.add_argument("devices", nargs="*", metavar="DEVICE")

    st = sub.add_parser("status", help="what the running daemon reports (else: sysfs)")
    st.add_argument("--json", action="store_true")

    rn = sub.add_parser("run", help="the daemon (started by systemd as daxd.service)")
    rn.add_argument(
        "--offline-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
        help="give up offlining one memory block after this long (default 30)",
    )  # fmt: skip
    rn.add_argument("--no-bus", action="store_true", help="do not publish on D-Bus")
    rn.add_argument("--no-udev", action="store_true", help="do not follow udev events")

    mg = sub.add_parser(
        "migrate-device-model", help="opt in to /sys/bus/dax on kernels using /sys/class/dax"
    )
    mg.add_argument("--root", type=Path, default=Path("/"), help="install below this root")
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None, *, sysfs: Sysfs | None = None) -> int:
    """The command; ``sysfs`` replaces the one --sysfs names (tests pass a fake kernel's)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args, sysfs)
    except PolicyError as e:
        print(str(e), file=sys.stderr)
        return exitcodes.POLICY_INVALID
    except UsageError as e:
        print(f"daxd: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except SysfsError as e:
        print(f"daxd: {e}", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED


def _runtime_dir(args: argparse.Namespace, injected: Sysfs | None) -> Path | None:
    """The runtime folder; by default only for the running kernel's own /sys."""
    if args.runtime_dir is not None:
        return Path(args.runtime_dir)
    if injected is None and args.sysfs == "/sys":
        from daxd.apply.autoonline import RUNTIME_DIR

        return RUNTIME_DIR
    return None


def _dispatch(args: argparse.Namespace, injected: Sysfs | None) -> int:
    command: str = args.command
    if command == "check":
        return _check(args)
    if command == "migrate-device-model":
        from daxd.cli.migrate import migrate_device_model

        return migrate_device_model(args.root)
    if command == "run":
        from daxd.service.run import run, setup_logging

        setup_logging(args.verbose)
        return run(
            sysfs_root=args.sysfs,
            proc_root=args.procfs,
            policy=args.policy,
            policy_dir=args.policy_dir,
            strict_policy=not args.allow_untrusted_policy,
            offline_timeout=args.offline_timeout,
            use_bus=not args.no_bus,
            use_udev=not args.no_udev,
            runtime_dir=_runtime_dir(args, injected),
        )
    sysfs = injected or Sysfs(args.sysfs)
    if command == "status":
        return _status(args, sysfs)
    if command == "list":
        return _list(args, sysfs)
    if command == "plan":
        return _plan(args, sysfs)
    if command == "apply":
        return _apply(args, sysfs, _runtime_dir(args, injected))
    raise UsageError(f"unknown command {command!r}")


def _load(args: argparse.Namespace, path: Path | None = None) -> Policy:
    return load_policy(path or args.policy, args.policy_dir, strict=not args.allow_untrusted_policy)


def _check(args: argparse.Namespace) -> int:
    path: Path = args.file or args.policy
    policy = _load(args, path)
    files = ", ".join(policy.sources) or str(path)
    print(f"{files}: valid, {len(policy.rules)} rule(s)")
    return exitcodes.OK


def _read(sysfs: Sysfs) -> KernelState:
    state = read_state(sysfs)
    for d in state.diagnostics:
        print(f"daxd: warning: {d}", file=sys.stderr)
    if state.legacy_device_model:
        print(
            "daxd: this kernel exposes DAX devices through the legacy /sys/class/dax model; "
            "run `daxd migrate-device-model` and reboot to manage them",
            file=sys.stderr,
        )
    return state


def _selected(state: KernelState, names: list[str]) -> list[str]:
    if not names:
        return sorted(state.devices, key=device_sort_key)
    unknown = [n for n in names if n not in state.devices]
    if unknown:
        raise UsageError(f"no such DAX device: {', '.join(unknown)}")
    return list(dict.fromkeys(names))


def _list(args: argparse.Namespace, sysfs: Sysfs) -> int:
    from daxd.apply.report import list_entry
    from daxd.cli.render import list_text  # not needed by `daxd run`

    state = _read(sysfs)
    policy = _load_optional(args)
    rules = {
        n: (r.name if (r := policy.match(state.devices[n])) else None) if policy else None
        for n in _selected(state, [])
    }
    if args.json:
        entries = [list_entry(state.devices[n], state.blocks_of(n), rules[n]) for n in rules]
        print(_document("list", state, entries))
    elif rules:
        print(list_text(state, rules))
    else:
        print("no DAX devices")
    return exitcodes.OK


def _status(args: argparse.Namespace, sysfs: Sysfs) -> int:
    from daxd.cli.status import daemon_status, status_json, status_text

    found = daemon_status() if args.sysfs == "/sys" else None
    if found is None:
        print("daxd is not running; showing what sysfs tells", file=sys.stderr)
        return _list(args, sysfs)
    manager, devices = found
    print(status_json(manager, devices) if args.json else status_text(manager, devices))
    return exitcodes.OK


def _document(kind: str, state: KernelState, entries: list[dict[str, Any]]) -> str:
    from daxd.apply.report import document

    return document(
        kind,
        state.hotplug,
        entries,
        legacy_device_model=state.legacy_device_model,
        diagnostics=state.diagnostics,
    )


def _load_optional(args: argparse.Namespace) -> Policy | None:
    """`list` works without a valid policy: it then shows no rules and says why."""
    try:
        return _load(args)
    except PolicyError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid policy"
        print(f"daxd: warning: policy not used: {first}", file=sys.stderr)
        return None


def _plan(args: argparse.Namespace, sysfs: Sysfs) -> int:
    from daxd.apply.report import plan_entry
    from daxd.cli.render import plan_text

    policy = _load(args)
    state = _read(sysfs)
    plans = plan_all(state, policy, _selected(state, args.devices))
    if args.json:
        entries = [plan_entry(state.devices[p.device], state.blocks_of(p.device), p) for p in plans]
        print(_document("plan", state, entries))
    else:
        print("\n".join(plan_text(p) for p in plans) if plans else "no DAX devices")
    return exitcodes.OK


def _apply(args: argparse.Namespace, sysfs: Sysfs, runtime_dir: Path | None) -> int:
    from daxd.apply import autoonline
    from daxd.apply.executor import ApplyOptions, Outcome, apply_device
    from daxd.apply.report import result_entry
    from daxd.cli.render import result_text

    policy = _load(args)
    if runtime_dir is not None and (done := autoonline.recover(sysfs, runtime_dir)):
        print(f"daxd: {done}", file=sys.stderr)
    state = _read(sysfs)
    if state.legacy_device_model and not state.devices:
        return exitcodes.ENVIRONMENT
    install_interrupt_handler()
    opts = ApplyOptions(
        proc_root=Path(args.procfs),
        offline_timeout=args.offline_timeout,
        runtime_dir=runtime_dir,
    )
    results = [
        apply_device(sysfs, policy, name, state.hotplug, opts)
        for name in _selected(state, args.devices)
    ]
    if args.json:
        entries = [
            result_entry(state.devices.get(r.device), state.blocks_of(r.device), r) for r in results
        ]
        print(_document("apply", state, entries))
    else:
        print("\n".join(result_text(r) for r in results) if results else "no DAX devices")
    outcomes = {r.outcome for r in results}
    if outcomes & {Outcome.FAILED, Outcome.STOPPED}:
        return exitcodes.FAILED
    if Outcome.REFUSED in outcomes:
        return exitcodes.REFUSED
    return exitcodes.OK

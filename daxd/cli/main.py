"""The `daxd` command: check, list, plan, apply, migrate-device-model, run, status.

Start-up stays light: the policy language (pydantic, PyYAML), the planner, the executor and udev
are imported by the functions that need them, so that `daxd apply` leaving the work to the
running daemon, and `daxd status` asking it, import none of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daxd import __version__
from daxd.cli import exitcodes
from daxd.kernel.roots import DEFAULT_LOCK_TIMEOUT, DEFAULT_OFFLINE_TIMEOUT, Roots
from daxd.kernel.sysfs import Sysfs, SysfsError

if TYPE_CHECKING:
    from daxd.cli.client import DaemonError
    from daxd.kernel.model import KernelState
    from daxd.policy.model import Policy, Rule

DEFAULT_POLICY = Path("/etc/daxd/policy.yaml")
# A sysfs tree daxd can work with has at least one of these (a kernel without DAX devices still
# has its memory blocks); a tree with none is the wrong folder.
SYSFS_LANDMARKS = ("bus/dax", "class/dax", "devices/system/memory")


class UsageError(Exception):
    """Exit 2: a bad command line or an unknown device; ``str()`` says which."""


class PolicyInvalid(Exception):
    """Exit 1: the policy has errors; ``str()`` lists them, located (FILE:LINE:COL)."""


class EnvironmentProblem(Exception):
    """Exit 5: the system is not one daxd can act on as asked; ``str()`` says why."""


def _global_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.

    The main parser has them with their defaults, each subcommand without any (SUPPRESS): a value
    given after the command replaces one given before it, and an option not given after the
    command leaves the value given before it alone.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    g = argparse.ArgumentParser(add_help=False)
    g.add_argument(
        "--root-dir",
        metavar="DIR",
        type=Path,
        default=default(None),
        help="act on the system below DIR: DIR/sys, DIR/proc, DIR/run/daxd, and the udev rules "
        "and daxctl configuration below DIR (default /)",
    )
    g.add_argument(
        "--sysfs",
        metavar="DIR",
        type=Path,
        default=default(None),
        help="another sysfs tree (a dump): nothing is recorded or locked for it (default: "
        "/sys, or DIR/sys of --root-dir)",
    )
    g.add_argument(
        "--policy",
        metavar="FILE",
        type=Path,
        default=default(None),
        help=f"the policy file (default {DEFAULT_POLICY})",
    )
    g.add_argument(
        "--policy-dir",
        metavar="DIR",
        type=Path,
        default=default(None),
        help="drop-in folder (default: policy.d beside the policy file)",
    )
    g.add_argument(
        "--allow-untrusted-policy",
        action="store_true",
        default=default(False),
        help="use policy files others could have written (not owned by root, group/world "
        "writable, symlinks out of the policy folder)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log every sysfs write to standard error",
    )
    return g


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daxd",
        description="Apply a declarative memory policy to DAX devices.",
        epilog="Exit codes and JSON output: docs/cli.md (installed under /usr/share/doc/daxd).",
        parents=[_global_options(defaults=True)],
    )
    p.add_argument("--version", action="version", version=f"daxd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, help="what to do")
    late = [_global_options(defaults=False)]  # the global options, after the command's name

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=late)

    def json_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="print the JSON document (docs/cli.md)"
        )

    c = command("check", "validate a policy; exit 0 when valid, 1 when not")
    c.add_argument("file", nargs="?", type=Path, help="policy file (default: --policy)")

    ls = command("list", "devices, provider, mode, zone, blocks online/total")
    json_option(ls)

    pl = command("plan", "what apply would do, per device, with reasons; changes nothing")
    json_option(pl)
    pl.add_argument("devices", nargs="*", metavar="DEVICE", help="only these (default: all)")

    ap = command(
        "apply",
        "make the devices match the policy now (one shot; the running daemon does it, if any)",
    )
    json_option(ap)
    ap.add_argument(
        "--offline-timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="give up offlining one memory block after this long "
        f"(default {DEFAULT_OFFLINE_TIMEOUT:g}, or the daemon's)",
    )
    ap.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="wait this long for another writer (a daxd apply, a daemon not on D-Bus) to "
        f"finish; exit 6 after (default {DEFAULT_LOCK_TIMEOUT:g})",
    )
    ap.add_argument("devices", nargs="*", metavar="DEVICE", help="only these (default: all)")

    st = command("status", "what the running daemon reports (else: what sysfs shows)")
    json_option(st)

    rn = command("run", "the daemon (started by systemd as daxd.service)")
    rn.add_argument(
        "--offline-timeout", type=_positive_float, default=DEFAULT_OFFLINE_TIMEOUT,
        metavar="SECONDS",
        help=f"give up offlining one memory block after this long "
        f"(default {DEFAULT_OFFLINE_TIMEOUT:g})",
    )  # fmt: skip
    rn.add_argument("--no-bus", action="store_true", help="do not publish on D-Bus")
    rn.add_argument("--no-udev", action="store_true", help="do not follow udev events")

    mg = command("migrate-device-model", "opt in to /sys/bus/dax on kernels using /sys/class/dax")
    mg.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="install below this root (default: --root-dir, else /)",
    )
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


def _seconds(text: str) -> float:
    """A wait: 0 (do not wait) up to a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


def roots_of(args: argparse.Namespace) -> Roots:
    """The roots the options name: --root-dir DIR (else the running system), --sysfs on top."""
    roots = Roots.under(args.root_dir) if args.root_dir is not None else Roots()
    if args.sysfs is not None:
        roots = roots.with_sysfs(args.sysfs)
    return roots


def main(argv: Sequence[str] | None = None, *, sysfs: Sysfs | None = None) -> int:
    """The command. ``sysfs`` replaces the Sysfs of the roots' sysfs tree (tests pass a fake
    kernel's); with it the command never takes the roots for the running system's."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args, roots_of(args), sysfs)
    except PolicyInvalid as e:
        print(str(e), file=sys.stderr)
        return exitcodes.POLICY_INVALID
    except UsageError as e:
        print(f"daxd: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except (EnvironmentProblem, SysfsError) as e:
        print(f"daxd: {e}", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED


def _dispatch(args: argparse.Namespace, roots: Roots, injected: Sysfs | None) -> int:
    command: str = args.command
    live = roots.live and injected is None  # the running system: its daemon may be on D-Bus
    if command == "check":
        return _check(args)
    if command == "migrate-device-model":
        from daxd.cli.migrate import migrate_device_model

        return migrate_device_model(args.root if args.root is not None else roots.base)
    if command == "run":
        from daxd.service.run import run, setup_logging

        setup_logging(args.verbose)
        return run(
            roots=roots,
            policy=_policy_path(args),
            policy_dir=args.policy_dir,
            strict_policy=not args.allow_untrusted_policy,
            offline_timeout=args.offline_timeout,
            use_bus=not args.no_bus,
            use_udev=not args.no_udev,
        )
    if command == "apply" and live and not _policy_given(args):
        done = _apply_through_daemon(args)
        if done is not None:
            return done
    sysfs = injected or Sysfs(roots.sys)
    if command == "status":
        return _status(args, sysfs, live)
    if command == "list":
        return _list(args, sysfs)
    if command == "plan":
        return _plan(args, sysfs)
    if command == "apply":
        return _apply_locally(args, roots, sysfs, live)
    raise UsageError(f"unknown command {command!r}")


# --- the policy ----------------------------------------------------------------------------------
def _policy_path(args: argparse.Namespace) -> Path:
    return args.policy if args.policy is not None else DEFAULT_POLICY


def _policy_given(args: argparse.Namespace) -> bool:
    """Whether the command line chose the policy: the daemon applies its own, so then `apply`
    acts itself (and waits for the daemon's lock)."""
    return args.policy is not None or args.policy_dir is not None or args.allow_untrusted_policy


def _load(args: argparse.Namespace, path: Path | None = None) -> Policy:
    from daxd.policy.errors import PolicyError
    from daxd.policy.load import load_policy

    try:
        return load_policy(
            path or _policy_path(args), args.policy_dir, strict=not args.allow_untrusted_policy
        )
    except PolicyError as e:
        raise PolicyInvalid(str(e)) from None


def _load_optional(args: argparse.Namespace) -> Policy | None:
    """`list` works without a valid policy: it then shows no rules and says why."""
    try:
        return _load(args)
    except PolicyInvalid as e:
        first = str(e).splitlines()[0] if str(e) else "invalid policy"
        print(f"daxd: warning: policy not used: {first}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    path: Path = args.file or _policy_path(args)
    policy = _load(args, path)
    files = ", ".join(policy.sources) or str(path)
    regions = f", {len(policy.regions)} region(s)" if policy.regions else ""
    layouts = f", {len(policy.layouts)} layout(s)" if policy.layouts else ""
    print(f"{files}: valid, {len(policy.rules)} rule(s){regions}{layouts}")
    return exitcodes.OK


# --- what the kernel shows -----------------------------------------------------------------------
def _require_tree(sysfs: Sysfs) -> None:
    """A folder without any of the landmarks is not a sysfs tree: say so, not "no devices"."""
    if not any(sysfs.exists(rel) for rel in SYSFS_LANDMARKS):
        raise EnvironmentProblem(
            f"{sysfs.root} is not a sysfs tree: it has no bus/dax, class/dax or "
            "devices/system/memory (--sysfs takes the sysfs folder itself, --root-dir the "
            "folder holding sys/)"
        )


def _read(sysfs: Sysfs) -> KernelState:
    from daxd.kernel.scan import read_state

    _require_tree(sysfs)
    state = read_state(sysfs)
    _warn(state.diagnostics, state.legacy_device_model)
    return state


def _warn(diagnostics: Sequence[object], legacy_device_model: bool) -> None:
    for d in diagnostics:
        print(f"daxd: warning: {d}", file=sys.stderr)
    if legacy_device_model:
        print(
            "daxd: this kernel exposes DAX devices through the legacy /sys/class/dax model; "
            "run `daxd migrate-device-model` and reboot to manage them",
            file=sys.stderr,
        )


def _selected(state: KernelState, names: list[str]) -> list[str]:
    from daxd.plan.planner import device_sort_key

    if not names:
        return sorted(state.devices, key=device_sort_key)
    unknown = [n for n in names if n not in state.devices]
    if unknown:
        raise UsageError(f"no such DAX device: {', '.join(unknown)}")
    return list(dict.fromkeys(names))


def _document(
    kind: str,
    state: KernelState,
    entries: list[dict[str, Any]],
    regions: list[dict[str, Any]] | None = None,
    cxl: dict[str, Any] | None = None,
) -> str:
    from daxd.apply.report import document

    return document(
        kind,
        state.hotplug,
        entries,
        legacy_device_model=state.legacy_device_model,
        diagnostics=state.diagnostics,
        regions=regions,
        cxl=cxl,
    )


# --- list, status, plan --------------------------------------------------------------------------
def _list(args: argparse.Namespace, sysfs: Sysfs) -> int:
    from daxd.apply.region_report import cxl_overview, cxl_problems, region_plan_text
    from daxd.apply.report import list_entry
    from daxd.cli.render import list_text
    from daxd.kernel.cxl_topology import read_cxl_topology

    state = _read(sysfs)
    policy = _load_optional(args)
    entries = []
    for name in _selected(state, []):
        device = state.devices[name]
        rule = policy.match(device) if policy else None
        entries.append(
            list_entry(device, state.blocks_of(name), rule.name if rule else None, state.hotplug)
        )
    topo = read_cxl_topology(sysfs)
    regions = _region_plans(args, sysfs, policy, state) if policy and policy.regions else None
    if args.json:
        cxl = cxl_overview(topo) if topo.present else None
        print(_document("list", state, entries, regions, cxl))
        return exitcodes.OK
    text = _with_regions(list_text(entries), regions, lambda r: region_plan_text(r, steps=False))
    problems = [f"cxl: {p}" for p in cxl_problems(topo)]
    print("\n".join([text, *problems]))
    return exitcodes.OK


def _status(args: argparse.Namespace, sysfs: Sysfs, live: bool) -> int:
    from daxd.cli.status import daemon_status, status_json, status_text

    found = daemon_status() if live else None
    if found is None:
        print("daxd is not running; showing what sysfs tells", file=sys.stderr)
        return _list(args, sysfs)
    manager, devices, regions = found
    if args.json:
        print(status_json(manager, devices, regions))
    else:
        print(status_text(manager, devices, regions))
    return exitcodes.OK


def _plan(args: argparse.Namespace, sysfs: Sysfs) -> int:
    from daxd.apply.region_report import region_plan_text
    from daxd.apply.report import plan_entry, plan_text
    from daxd.plan.planner import plan_all

    policy = _load(args)
    state = _read(sysfs)
    layouts: list[dict[str, Any]] = []
    if policy.layouts:
        policy, layouts = _layout_plans(args, policy, state)
    plans = plan_all(state, policy, _selected(state, args.devices))
    entries = [
        plan_entry(state.devices[p.device], state.blocks_of(p.device), p, state.hotplug)
        for p in plans
    ]
    regions = _region_plans(args, sysfs, policy, state) if policy.regions else None
    if args.json:
        print(_with_layouts(_document("plan", state, entries, regions), layouts))
    else:
        from daxd.apply.layout_report import layout_text

        text = _with_regions(plan_text(entries), regions, region_plan_text)
        print(layout_text(layouts) + text)
    return exitcodes.OK


def _layout_plans(
    args: argparse.Namespace, policy: Policy, state: KernelState
) -> tuple[Policy, list[dict[str, Any]]]:
    """The layouts' plans, and the policy the devices are then planned with: a laid-out
    region's devices by their entries, the others of a region still to carve held."""
    from daxd.apply.carving import with_device_rules
    from daxd.apply.layout_report import layout_plan_json
    from daxd.kernel.users import device_users
    from daxd.plan.carving import CarveVerdict, layout_device_rules, plan_layouts

    names = [n for n, d in state.devices.items() if d.driver == "device_dax"]
    planned = plan_layouts(policy, state, device_users(roots_of(args).proc, names))
    rules: dict[str, Rule] = {}
    for p in planned:
        synced = p.plan.verdict is CarveVerdict.IN_SYNC
        why = "" if synced else f"{p.plan.verdict}, see the layout above"
        rules |= layout_device_rules(
            p.layout, p.plan.assigned if synced else None, list(p.devices), why
        )
    return with_device_rules(policy, rules), [layout_plan_json(p) for p in planned]


def _with_layouts(document: str, layouts: list[dict[str, Any]]) -> str:
    if not layouts:
        return document
    data = json.loads(document)
    data["layouts"] = layouts
    return json.dumps(data, indent=2)


def _region_plans(
    args: argparse.Namespace, sysfs: Sysfs, policy: Policy, state: KernelState
) -> list[dict[str, Any]]:
    from daxd.apply.cxl_regions import read_leftovers
    from daxd.apply.region_report import region_plan_json
    from daxd.kernel.cxl_topology import read_cxl_topology
    from daxd.kernel.users import cxl_device_users
    from daxd.plan.cxl_regions import plan_region

    roots = roots_of(args)
    topo = read_cxl_topology(sysfs)
    users = cxl_device_users(roots.proc, state)
    leftovers = read_leftovers(roots.runtime, [s.name for s in policy.regions])
    return [
        region_plan_json(plan_region(s, topo, state, users, leftovers.get(s.name)))
        for s in policy.regions
    ]


def _with_regions(
    text: str,
    regions: list[dict[str, Any]] | None,
    render: Callable[[Sequence[Mapping[str, Any]]], str],
) -> str:
    """The policy's regions first: the devices they bring follow from them."""
    return f"{render(regions)}\n{text}" if regions else text


# --- apply ---------------------------------------------------------------------------------------
def _apply_code(entries: Sequence[Mapping[str, Any]]) -> int:
    """The exit code of an apply, from its entries' outcomes (docs/cli.md)."""
    outcomes = {e.get("outcome") for e in entries}
    if outcomes & {"failed", "stopped"}:
        return exitcodes.FAILED
    if "refused" in outcomes:
        return exitcodes.REFUSED
    return exitcodes.OK


def _apply_through_daemon(args: argparse.Namespace) -> int | None:
    """Let the running daemon apply; its exit code, or None when no daemon is on the bus."""
    from daxd.apply.report import apply_text
    from daxd.cli.client import DaemonError, apply_via_daemon
    from daxd.cli.progress import ProgressLine

    progress = ProgressLine()
    try:
        reply = apply_via_daemon(
            args.devices,
            offline_timeout=args.offline_timeout,
            progress=progress.device if progress.active else None,
        )
    except DaemonError as e:
        return _daemon_refused(e)
    except KeyboardInterrupt:
        progress.clear()
        print("daxd: interrupted; the daemon goes on with the apply", file=sys.stderr)
        raise
    finally:
        progress.clear()
    if reply is None:
        return None
    try:
        doc = json.loads(reply)
        entries = doc["devices"]
        if not isinstance(entries, list):
            raise TypeError("devices is not a list")
    except (ValueError, TypeError, KeyError) as e:
        raise EnvironmentProblem(f"the daemon's answer is not an apply document: {e}") from None
    _warn(doc.get("diagnostics") or [], bool(doc.get("legacy_device_model")))
    if doc.get("legacy_device_model") and not entries:
        return exitcodes.ENVIRONMENT
    print(reply if args.json else apply_text(entries))
    return _apply_code(entries)


def _daemon_refused(e: DaemonError) -> int:
    from daxd.cli.client import ERROR_ACCESS_DENIED, ERROR_NO_SUCH_DEVICE

    if e.name == "org.daxd.Daxd1.Error.PolicyInvalid":
        raise PolicyInvalid(e.text)
    if e.name == ERROR_NO_SUCH_DEVICE:
        text = e.text.removeprefix("daxd: ")
        raise UsageError(
            text if text.startswith("no such DAX device") else f"no such DAX device: {text}"
        )
    if e.name in ("org.daxd.Daxd1.Error.PermissionDenied", ERROR_ACCESS_DENIED):
        raise EnvironmentProblem(f"only root may apply the policy (the daemon said: {e.text})")
    raise EnvironmentProblem(f"the daemon could not apply the policy: {e}")


def _apply_locally(args: argparse.Namespace, roots: Roots, sysfs: Sysfs, live: bool) -> int:
    """No daemon to ask: act, under the writer lock of the roots' runtime folder."""
    from daxd.apply.writer_lock import LockBusy, LockUnavailable, WriterLock

    policy = _load(args)
    _require_tree(sysfs)  # before the lock: a wrong --root-dir gets no run/daxd made in it
    lock = WriterLock(roots.runtime, "daxd apply") if roots.runtime is not None else None
    if lock is not None:
        try:
            lock.acquire(args.lock_timeout)
        except LockBusy as e:
            hint = ""
            if live and _policy_given(args):
                hint = (
                    " (a running daemon applies its own policy: `daxd apply` without --policy, "
                    "--policy-dir and --allow-untrusted-policy asks it to)"
                )
            print(f"daxd: {e}{hint}", file=sys.stderr)
            return exitcodes.BUSY
        except LockUnavailable as e:
            raise EnvironmentProblem(str(e)) from None
    try:
        return _apply_held(args, roots, sysfs, policy)
    finally:
        if lock is not None:
            lock.release()


def _apply_held(args: argparse.Namespace, roots: Roots, sysfs: Sysfs, policy: Policy) -> int:
    from daxd.apply import autoonline
    from daxd.apply.executor import ApplyOptions, apply_device
    from daxd.apply.region_report import region_apply_text
    from daxd.apply.report import apply_text, result_entry
    from daxd.apply.settle import wait_settled
    from daxd.cli.progress import ProgressLine
    from daxd.kernel.scan import read_device
    from daxd.kernel.sysfs import install_interrupt_handler

    if roots.runtime is not None and (done := autoonline.recover(sysfs, roots.runtime)):
        print(f"daxd: {done}", file=sys.stderr)
    state = _read(sysfs)
    if state.legacy_device_model and not state.devices:
        return exitcodes.ENVIRONMENT
    install_interrupt_handler()
    progress = ProgressLine()
    opts = ApplyOptions(
        proc_root=roots.proc,
        offline_timeout=(
            args.offline_timeout if args.offline_timeout is not None else DEFAULT_OFFLINE_TIMEOUT
        ),
        runtime_dir=roots.runtime,
        on_step=progress.step if progress.active else None,
    )
    keeper = _RegionApply(sysfs, policy, roots) if policy.regions and not args.devices else None
    if keeper is not None:
        keeper.run(state)
        state = _read(sysfs)  # with the dax devices the regions brought
    layouts: list[dict[str, Any]] = []
    if policy.layouts:
        from daxd.apply.carving import apply_layouts, layout_rules, with_device_rules
        from daxd.apply.layout_report import layout_result_json

        carved = apply_layouts(sysfs, policy, state, opts)
        layouts = [layout_result_json(o) for o in carved]
        policy = with_device_rules(policy, layout_rules(carved))
        if any(o.result is not None and o.result.results for o in carved):
            state = _read(sysfs)  # the devices as carved
    results = []
    try:
        for name in _selected(state, args.devices):
            # memory kmem is still adding is planned once the kernel is done (bounded)
            first = read_device(sysfs, name, state.hotplug)
            settled = wait_settled(sysfs, name, state.hotplug, first)
            results.append(
                apply_device(sysfs, policy, name, state.hotplug, opts, reading=settled.reading)
            )
    finally:
        progress.clear()
    entries = [
        result_entry(state.devices.get(r.device), state.blocks_of(r.device), r, state.hotplug)
        for r in results
    ]
    regions = None
    if keeper is not None:
        if keeper.releasing:
            keeper.run(_read(sysfs))  # their memory is offline now: the regions can go
        regions = keeper.entries
    if args.json:
        print(_with_layouts(_document("apply", state, entries, regions), layouts))
    else:
        from daxd.apply.layout_report import layout_text

        print(layout_text(layouts) + _with_regions(apply_text(entries), regions, region_apply_text))
    return max(
        _apply_code(entries),
        _region_code(regions or []),
        _layout_code(layouts),
        key=_SEVERITY.index,
    )


def _layout_code(entries: Sequence[Mapping[str, Any]]) -> int:
    outcomes = {e.get("outcome") for e in entries}
    if outcomes & {"failed", "stopped"}:
        return exitcodes.FAILED
    if outcomes & {"refused", "held"}:
        return exitcodes.REFUSED
    return exitcodes.OK


_SEVERITY = [exitcodes.OK, exitcodes.REFUSED, exitcodes.FAILED]


def _region_code(entries: Sequence[Mapping[str, Any]]) -> int:
    outcomes = {e.get("outcome") for e in entries}
    if "failed" in outcomes:
        return exitcodes.FAILED
    if outcomes & {"refused", "waiting", "release"}:
        return exitcodes.REFUSED
    return exitcodes.OK


class _RegionApply:
    """`daxd apply` for the policy's regions: built (or torn down) before the devices."""

    def __init__(self, sysfs: Sysfs, policy: Policy, roots: Roots) -> None:
        self.sysfs, self.policy, self.roots = sysfs, policy, roots
        self.entries: list[dict[str, Any]] = []
        self.releasing = False

    def run(self, state: KernelState) -> None:
        from daxd.apply.cxl_regions import apply_regions
        from daxd.apply.region_report import region_result_json
        from daxd.plan.cxl_regions import RegionVerdict

        done = apply_regions(
            self.sysfs, self.policy, state, proc=self.roots.proc, runtime=self.roots.runtime
        )
        self.entries = [region_result_json(plan, result) for plan, result in done]
        self.releasing = any(e["verdict"] == str(RegionVerdict.RELEASE) for e in self.entries)

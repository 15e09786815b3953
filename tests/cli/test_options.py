"""The command line itself: the roots it names, global options anywhere, help for everything,
a folder that is not a sysfs tree, and the one-writer lock of `daxd apply`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from daxd.apply.writer_lock import WriterLock
from daxd.cli import exitcodes
from daxd.cli.main import DEFAULT_POLICY, build_parser, main, roots_of
from daxd.kernel.roots import DEFAULT_LOCK_TIMEOUT, DEFAULT_OFFLINE_TIMEOUT, Roots
from tests.cli.helpers import daxd, devices, kernel_root
from tests.fakekernel import FakeKernel
from tests.plan.helpers import DEVDAX, driver, write_policy

PMEM_RAM = "rules:\n  - name: pmem-ram\n    mode: system-ram\n    allow_pmem_data_loss: true\n"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# --- the roots -----------------------------------------------------------------------------------
def test_roots_default_to_the_running_system() -> None:
    roots = roots_of(parse("list"))
    assert roots == Roots()
    assert roots.live


def test_root_dir_puts_every_root_below_it(tmp_path: Path) -> None:
    roots = roots_of(parse("--root-dir", str(tmp_path), "list"))
    assert roots == Roots(
        base=tmp_path, sys=tmp_path / "sys", proc=tmp_path / "proc", runtime=tmp_path / "run/daxd"
    )
    assert not roots.live
    assert roots_of(parse("--root-dir", "/", "list")).live


def test_sysfs_is_a_dump_without_a_runtime_folder(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    assert roots_of(parse("--sysfs", str(dump), "list")) == Roots(sys=dump, runtime=None)
    # below --root-dir: that root's proc and base, still no runtime folder
    roots = roots_of(parse("--root-dir", str(tmp_path), "--sysfs", str(dump), "list"))
    assert (roots.base, roots.sys, roots.proc, roots.runtime) == (
        tmp_path,
        dump,
        tmp_path / "proc",
        None,
    )
    # the root's own sysfs is no dump
    assert roots_of(parse("--root-dir", str(tmp_path), "--sysfs", str(tmp_path / "sys"), "list"))
    assert roots_of(parse("--sysfs", "/sys", "list")).live


def test_removed_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--procfs", "--runtime-dir"):  # gone: --root-dir names both
        with pytest.raises(SystemExit) as info:
            parse(f"{option}=/tmp", "list")
        assert info.value.code == exitcodes.USAGE
        assert f"unrecognized arguments: {option}=/tmp" in capsys.readouterr().err


def test_defaults_come_from_roots_py() -> None:
    apply = parse("apply")
    assert apply.offline_timeout is None  # not given: the daemon's, else DEFAULT_OFFLINE_TIMEOUT
    assert apply.lock_timeout == DEFAULT_LOCK_TIMEOUT
    assert parse("run").offline_timeout == DEFAULT_OFFLINE_TIMEOUT
    assert parse("apply", "--lock-timeout", "0").lock_timeout == 0


def test_run_gets_the_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import daxd.service.run

    calls: list[dict[str, Any]] = []

    def fake_run(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(daxd.service.run, "run", fake_run)
    monkeypatch.setattr(daxd.service.run, "setup_logging", lambda verbose: None)
    assert main(["--root-dir", str(tmp_path), "run", "--no-bus", "--no-udev"]) == 0
    assert main(["--sysfs", str(tmp_path), "run", "--offline-timeout", "5"]) == 0
    assert calls == [
        {
            "roots": Roots.under(tmp_path),
            "policy": DEFAULT_POLICY,
            "policy_dir": None,
            "strict_policy": True,
            "offline_timeout": DEFAULT_OFFLINE_TIMEOUT,
            "use_bus": False,
            "use_udev": False,
        },
        {
            "roots": Roots().with_sysfs(tmp_path),
            "policy": DEFAULT_POLICY,
            "policy_dir": None,
            "strict_policy": True,
            "offline_timeout": 5.0,
            "use_bus": True,
            "use_udev": True,
        },
    ]


def test_migrate_device_model_installs_below_the_root_dir(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--root-dir", str(tmp_path), "migrate-device-model"]) == 0
    assert (tmp_path / "etc/modprobe.d/daxd-device-model.conf").exists()
    other = tmp_path / "other"
    assert main(["--root-dir", str(tmp_path), "migrate-device-model", "--root", str(other)]) == 0
    assert (other / "etc/modprobe.d/daxd-device-model.conf").exists()


# --- global options anywhere ---------------------------------------------------------------------
def test_global_options_after_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_policy(tmp_path, DEVDAX)
    path.chmod(0o666)  # writable by others: refused unless allowed
    assert main(["check", str(path)]) == exitcodes.POLICY_INVALID
    assert "writable by group or others" in capsys.readouterr().err
    assert main(["check", "--allow-untrusted-policy", str(path)]) == exitcodes.OK
    assert main(["--allow-untrusted-policy", "check", str(path)]) == exitcodes.OK
    assert "valid, 1 rule(s)" in capsys.readouterr().out


def test_a_global_option_given_twice_takes_the_later(tmp_path: Path) -> None:
    args = parse("--policy", "a.yaml", "--sysfs", "/x", "plan", "--policy", "b.yaml")
    assert (args.policy, args.sysfs) == (Path("b.yaml"), Path("/x"))
    # one not repeated after the command keeps its value from before it
    args = parse("--root-dir", str(tmp_path), "-v", "list", "--json")
    assert (args.root_dir, args.verbose, args.json) == (tmp_path, True, True)
    args = parse("list", "--root-dir", str(tmp_path))
    assert (args.root_dir, args.policy, args.allow_untrusted_policy) == (tmp_path, None, False)


def test_list_with_the_tree_after_the_command(
    capsys: pytest.CaptureFixture[str], mixed_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, DEVDAX)
    argv = ["list", "--sysfs", str(mixed_kernel.sysfs_root), "--policy", str(policy), "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(devices(doc)) == ["dax0.0", "dax1.0", "dax2.0", "dax2.1"]


def _actions(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        found.append((where, action))
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the subcommands as listed in --help
                found.append((where, choice))
            for name, sub in action.choices.items():
                found += _actions(sub, f"{where} {name}")
    return found


def test_every_command_option_and_argument_has_help() -> None:
    actions = _actions(build_parser(), "daxd")
    assert len(actions) > 40  # the walk reached the subcommands
    missing = [
        f"{where}: {'/'.join(a.option_strings) or a.dest}"
        for where, a in actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []
    commands = {a.dest for where, a in actions if where == "daxd" and not a.option_strings}
    assert {"check", "list", "plan", "apply", "status", "run", "migrate-device-model"} <= commands


# --- not a sysfs tree ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["list", "plan", "apply", "status"])
@pytest.mark.parametrize("option", ["--sysfs", "--root-dir"])
def test_a_folder_that_is_no_sysfs_tree_is_exit_5(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, option: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sys").mkdir()  # --root-dir: a sys/ without anything in it
    policy = write_policy(tmp_path, DEVDAX)
    assert main([option, str(empty), "--policy", str(policy), command]) == exitcodes.ENVIRONMENT
    err = capsys.readouterr().err
    tree = empty if option == "--sysfs" else empty / "sys"
    assert f"daxd: {tree} is not a sysfs tree: it has no bus/dax, class/dax or " in err
    assert "no DAX devices" not in err
    assert not (empty / "run").exists()  # no lock folder made in the wrong place


def test_a_tree_with_memory_blocks_but_no_dax_bus_has_no_devices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "sys/devices/system/memory").mkdir(parents=True)
    policy = write_policy(tmp_path, DEVDAX)
    assert main(["--sysfs", str(tmp_path / "sys"), "--policy", str(policy), "list"]) == 0
    assert capsys.readouterr().out == "no DAX devices\n"


# --- one writer ----------------------------------------------------------------------------------
def lock_of(kernel: FakeKernel) -> WriterLock:
    return WriterLock(kernel_root(kernel) / "run" / "daxd", "daxd run")


def test_apply_holds_the_lock_and_lets_it_go(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, PMEM_RAM)
    ran = daxd(capsys, pmem_kernel, policy, "apply")
    assert ran.code == 0
    lock = kernel_root(pmem_kernel) / "run" / "daxd" / "lock"
    assert lock.read_text() == f"{os.getpid()} daxd apply\n"  # it was taken, by this apply
    other = lock_of(pmem_kernel)
    assert other.try_acquire()  # and given back
    other.release()


def test_apply_waits_for_the_lock_then_is_busy(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    auto = "devices/system/memory/auto_online_blocks"
    record = kernel_root(pmem_kernel) / "run" / "daxd" / "auto_online_blocks.switched"
    policy = write_policy(tmp_path, PMEM_RAM)
    with lock_of(pmem_kernel) as held:
        held.acquire(0)
        pmem_kernel.sysfs.write(auto, "offline")
        record.write_text("online offline 999999999\n")
        ran = daxd(capsys, pmem_kernel, policy, "apply", "--lock-timeout", "0.2")
        assert ran.code == exitcodes.BUSY == 6
        assert ran.out == ""
        assert ran.err == (
            f"daxd: another writer holds {held.path}: pid {os.getpid()} (daxd run); "
            "gave up after 0.2 s\n"
        )
        # nothing done: no device converted, the record left to the holder
        assert driver(pmem_kernel) == "device_dax"
        assert pmem_kernel.sysfs.read(auto) == "offline"
        assert record.exists()
        # --json too: nothing on stdout
        ran = daxd(capsys, pmem_kernel, policy, "apply", "--json", "--lock-timeout", "0")
        assert (ran.code, ran.out) == (exitcodes.BUSY, "")
    # a bad policy is told at once, without waiting for the lock
    with lock_of(pmem_kernel) as held:
        held.acquire(0)
        bad = write_policy(tmp_path, "rules: [", "bad.yaml")
        assert daxd(capsys, pmem_kernel, bad, "apply").code == exitcodes.POLICY_INVALID
    # free again: the apply runs, and puts auto_online_blocks back first
    ran = daxd(capsys, pmem_kernel, policy, "apply")
    assert ran.code == 0
    assert "put auto_online_blocks back to online" in ran.err
    assert driver(pmem_kernel) == "kmem"


def test_a_lock_that_cannot_be_made_is_exit_5(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    (kernel_root(pmem_kernel) / "run").write_text("a file where the folder should be")
    ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply")
    assert ran.code == exitcodes.ENVIRONMENT
    assert ran.err.startswith(f"daxd: cannot open {kernel_root(pmem_kernel)}/run/daxd/lock: ")
    assert driver(pmem_kernel) == "device_dax"


def test_plan_and_list_take_no_lock(
    capsys: pytest.CaptureFixture[str], pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, PMEM_RAM)
    with lock_of(pmem_kernel) as held:
        held.acquire(0)
        assert daxd(capsys, pmem_kernel, policy, "plan").code == 0
        assert daxd(capsys, pmem_kernel, policy, "list").code == 0

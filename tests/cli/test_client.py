"""`daxd apply` on the running system asks the daemon: against a fake daemon on a private bus.

The fake owns org.daxd.Daxd1 and answers Manager.Apply with what a test gives it: the records
of an "apply" document that a local `daxd apply --json` printed for a fake kernel (and its
hotplug settings and diagnostics as the manager's Hotplug and Diagnostics), or a D-Bus error.
The command's text, JSON and exit code for that answer must be what the local apply printed.
The command runs in a thread (it runs its own event loop); the fake serves from this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from daxd.cli import client, exitcodes
from daxd.cli.main import main
from daxd.service.dbus_api import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH, connect_system_bus
from daxd.service.dbus_values import to_dbus
from tests.cli.helpers import Ran, daxd
from tests.fakekernel import FakeKernel
from tests.plan.helpers import DEVDAX, device_block_indices, walk_order, write_policy
from tests.service.dbus_bus import (
    NOBODY,
    REPO,
    TIMEOUT,
    PrivateSystemBus,
    client_env,
    system_bus_for_test,
)

PMEM_RAM = "rules:\n  - name: pmem-ram\n    mode: system-ram\n    allow_pmem_data_loss: true\n"
NO_CONSENT = "rules:\n  - name: pmem-ram\n    mode: system-ram\n"
POLICY_ERRORS = (
    "/etc/daxd/policy.yaml:6:5: unknown key 'zon'; did you mean 'zone'?\n    zon: normal\n    ^"
)
# Run by the import checks: `daxd apply` in a fresh interpreter; what it imported, on stderr.
IMPORTS_SCRIPT = """\
import json, sys
import daxd.cli.main as m
def local(*args, **kwargs):
    print("acted locally", file=sys.stderr)
    sys.exit(99)
m._apply_locally = local
{patch}
code = m.main({argv!r})
found = sorted(n for n in sys.modules if n.split(".")[0] in ("pydantic", "yaml", "pyudev"))
daxd = sorted(n for n in sys.modules if n.startswith(("daxd.policy", "daxd.plan")))
print("IMPORTS " + json.dumps({{"code": code, "heavy": found, "daxd": daxd}}), file=sys.stderr)
"""

Answer = Callable[[Message], Message | None]


@dataclass
class FakeDaemon:
    bus: MessageBus
    answer: Answer
    calls: list[tuple[str, list[str], dict[str, tuple[str, Any]]]] = field(default_factory=list)
    manager: dict[str, Variant] = field(default_factory=dict)  # GetAll(Manager)

    def handle(self, msg: Message) -> Message | bool | None:
        if msg.message_type is MessageType.METHOD_CALL and (
            msg.path,
            msg.interface,
            msg.member,
            msg.body,
        ) == (MANAGER_PATH, "org.freedesktop.DBus.Properties", "GetAll", [MANAGER_INTERFACE]):
            return Message.new_method_return(msg, "a{sv}", [self.manager])
        if msg.message_type is not MessageType.METHOD_CALL or (
            msg.path,
            msg.interface,
            msg.member,
        ) != (MANAGER_PATH, MANAGER_INTERFACE, "Apply"):
            return None
        devices, options = msg.body if msg.signature == "asa{sv}" else ([], {})
        self.calls.append(
            (msg.signature, list(devices), {k: (v.signature, v.value) for k, v in options.items()})
        )
        return self.answer(msg) or True


def returns(document: str) -> Answer:
    """Apply's answer for an "apply" document: its entries as records (as the daemon sends
    them); manager_properties(document) are the Hotplug and Diagnostics to go with it."""
    doc = json.loads(document)
    records = [to_dbus(entry) for entry in doc.get("devices", [])]
    return lambda msg: Message.new_method_return(msg, "aa{sv}", [records])


def manager_properties(document: str) -> dict[str, Variant]:
    doc = json.loads(document)
    hotplug = doc.get("hotplug") or {}
    record = {
        "block-size": hotplug.get("block_size"),
        "auto-online-blocks": hotplug.get("auto_online_blocks"),
        "memmap-on-memory": hotplug.get("memmap_on_memory"),
        "online-policy": hotplug.get("online_policy"),
        "hotremove": True,
    }
    return {
        "Version": Variant("s", "0.1.0"),
        "Hotplug": Variant("a{sv}", to_dbus(record)),
        "Diagnostics": Variant("as", doc.get("diagnostics", [])),
    }


def fails(name: str, text: str) -> Answer:
    return lambda msg: Message.new_error(msg, name, text)


@contextlib.contextmanager
def fake_daemon(answer: Answer, manager: dict[str, Variant] | None = None) -> Iterator[FakeDaemon]:
    """The fake, owning org.daxd.Daxd1 on $DBUS_SYSTEM_BUS_ADDRESS, served by a thread of its
    own: the command under test runs in this one (it sets signal handlers) with its own loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        bus = await connect_system_bus()
        daemon = FakeDaemon(bus, answer, manager=manager or {})
        bus.add_message_handler(daemon.handle)
        try:
            await bus.request_name(BUS_NAME)
            box["daemon"] = daemon
            ready.set()
            await stop.wait()
        finally:
            bus.disconnect()

    def thread_main() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as e:
            box["error"] = e
            ready.set()

    thread = threading.Thread(target=thread_main, name="fake-daxd", daemon=True)
    thread.start()
    try:
        assert ready.wait(TIMEOUT), "the fake daemon did not start"
        if "error" in box:
            raise box["error"]
        yield box["daemon"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT)
        loop.close()


@pytest.fixture
def private_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as bus:
        yield bus


@pytest.fixture
def local_applies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return no_local_apply(monkeypatch)


def no_local_apply(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time the command would have acted itself (on this machine's /sys!) instead."""
    import daxd.cli.main

    acted: list[str] = []

    def local(*args: Any, **kwargs: Any) -> int:
        acted.append("local")
        return 99

    monkeypatch.setattr(daxd.cli.main, "_apply_locally", local)
    return acted


def command(
    capsys: pytest.CaptureFixture[str],
    answer: Answer,
    *argv: str,
    manager: dict[str, Variant] | None = None,
) -> tuple[Ran, FakeDaemon]:
    """`daxd ARGV...` against a fake daemon answering ``answer``; (what it did, the daemon)."""
    capsys.readouterr()
    with fake_daemon(answer, manager) as daemon:
        code = main(list(argv))
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err), daemon


# --- the same outcome, through the daemon and locally ---------------------------------------------
def applied(kernel: FakeKernel) -> str:
    kernel.add_pmem_device()
    return PMEM_RAM


def failed(kernel: FakeKernel) -> str:
    kernel.add_hmem_device()
    kernel.block_offline_fails(walk_order(device_block_indices(kernel))[2], errno.EBUSY)
    return DEVDAX


def refused(kernel: FakeKernel) -> str:
    kernel.add_pmem_device()
    return NO_CONSENT


@pytest.mark.parametrize(
    ("scenario", "code", "head"),
    [
        (applied, exitcodes.OK, "dax0.0: applied (rule 'pmem-ram')"),
        (failed, exitcodes.FAILED, "dax0.0: failed (rule 'keep-devdax')"),
        (refused, exitcodes.REFUSED, "dax0.0: refused (rule 'pmem-ram')"),
    ],
    ids=["applied", "failed", "refused"],
)
def test_the_daemons_answer_prints_as_a_local_apply(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    fake_kernel_base: Path,
    tmp_path: Path,
    private_bus: PrivateSystemBus,
    scenario: Callable[[FakeKernel], str],
    code: int,
    head: str,
) -> None:
    # Two kernels alike: one applied with --json (what the daemon answers), one with text.
    one, two = FakeKernel(fake_kernel_base / "one"), FakeKernel(fake_kernel_base / "two")
    policy = write_policy(tmp_path, scenario(one))
    assert scenario(two) == policy.read_text()
    answer = daxd(capsys, one, policy, "apply", "--json")
    local = daxd(capsys, two, policy, "apply")
    assert (answer.code, local.code) == (code, code)
    assert local.out.splitlines()[0] == head

    local_applies = no_local_apply(monkeypatch)
    props = manager_properties(answer.out)
    ran, daemon = command(capsys, returns(answer.out), "apply", manager=props)
    assert (ran.code, ran.out, ran.err) == (code, local.out, "")
    ran, daemon = command(capsys, returns(answer.out), "apply", "--json", manager=props)
    assert (ran.code, ran.out) == (code, answer.out)
    assert ran.json()["kind"] == "apply"
    assert daemon.calls == [("asa{sv}", [], {})]
    assert local_applies == []


def test_devices_and_the_offline_timeout_go_to_the_daemon(
    capsys: pytest.CaptureFixture[str], private_bus: PrivateSystemBus, local_applies: list[str]
) -> None:
    doc = json.dumps({"format": 1, "kind": "apply", "devices": [], "diagnostics": ["odd"]})
    ran, daemon = command(
        capsys,
        returns(doc),
        "apply",
        "--offline-timeout",
        "7",
        "dax1.0",
        "dax0.0",
        manager=manager_properties(doc),
    )
    assert (ran.code, ran.out, ran.err) == (0, "no DAX devices\n", "daxd: warning: odd\n")
    assert daemon.calls == [("asa{sv}", ["dax1.0", "dax0.0"], {"offline-timeout": ("d", 7.0)})]
    assert local_applies == []


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "code", "err"),
    [
        (
            "org.daxd.Daxd1.Error.PolicyInvalid",
            POLICY_ERRORS,
            exitcodes.POLICY_INVALID,
            POLICY_ERRORS + "\n",
        ),
        (
            "org.daxd.Daxd1.Error.NoSuchDevice",
            "dax9.9",
            exitcodes.USAGE,
            "daxd: no such DAX device: dax9.9\n",
        ),
        (
            "org.daxd.Daxd1.Error.NoSuchDevice",
            "no such DAX device: dax9.9, dax8.8",
            exitcodes.USAGE,
            "daxd: no such DAX device: dax9.9, dax8.8\n",
        ),
        (
            "org.daxd.Daxd1.Error.PermissionDenied",
            "Apply is only allowed for root",
            exitcodes.ENVIRONMENT,
            "daxd: only root may apply the policy (the daemon said: Apply is only allowed for "
            "root)\n",
        ),
        (
            "org.daxd.Daxd1.Error.Failed",
            "daxd failed to handle the request",
            exitcodes.ENVIRONMENT,
            "daxd: the daemon could not apply the policy: org.daxd.Daxd1.Error.Failed: daxd "
            "failed to handle the request\n",
        ),
    ],
    ids=["policy-invalid", "no-such-device", "no-such-devices", "permission-denied", "failed"],
)
def test_errors_of_the_daemon(
    capsys: pytest.CaptureFixture[str],
    private_bus: PrivateSystemBus,
    local_applies: list[str],
    *,
    name: str,
    text: str,
    code: int,
    err: str,
) -> None:
    ran, daemon = command(capsys, fails(name, text), "apply", "dax9.9")
    assert (ran.code, ran.out, ran.err) == (code, "", err)
    assert len(daemon.calls) == 1
    assert local_applies == []


def test_a_daemon_that_leaves_without_answering(
    capsys: pytest.CaptureFixture[str], private_bus: PrivateSystemBus, local_applies: list[str]
) -> None:
    holder: list[FakeDaemon] = []

    def leave(msg: Message) -> None:
        holder[0].bus.disconnect()

    capsys.readouterr()
    with fake_daemon(leave) as daemon:
        holder.append(daemon)
        assert main(["apply"]) == exitcodes.ENVIRONMENT
    err = capsys.readouterr().err
    assert err.startswith("daxd: the daemon could not apply the policy: ")
    assert "NoReply" in err
    assert local_applies == []


def test_only_root_may_apply_through_the_bus(private_bus: PrivateSystemBus) -> None:
    """The shipped bus policy lets nobody but root call Apply: AccessDenied, exit 5."""
    script = IMPORTS_SCRIPT.format(patch="", argv=["apply"])
    nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with fake_daemon(returns("{}")) as daemon:
        returncode, _, err = run_script(script, client_env(private_bus), prefix=nobody, cwd="/")
    assert daemon.calls == []
    assert returncode == 0, err
    assert err.startswith("daxd: only root may apply the policy (the daemon said: ")
    assert json.loads(err.split("IMPORTS ", 1)[1])["code"] == exitcodes.ENVIRONMENT


# --- when the daemon is not there ----------------------------------------------------------------
def test_no_owner_on_the_bus_means_acting_locally(
    capsys: pytest.CaptureFixture[str], private_bus: PrivateSystemBus, local_applies: list[str]
) -> None:
    assert client.apply_via_daemon([]) is None
    assert main(["apply"]) == 99
    assert local_applies == ["local"]


def test_no_bus_means_acting_locally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, local_applies: list[str]
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-socket")
    assert client.apply_via_daemon(["dax0.0"], offline_timeout=3.0) is None
    assert main(["apply"]) == 99
    assert local_applies == ["local"]


def test_a_policy_on_the_command_line_is_applied_locally(
    capsys: pytest.CaptureFixture[str],
    private_bus: PrivateSystemBus,
    local_applies: list[str],
    tmp_path: Path,
) -> None:
    policy = write_policy(tmp_path, DEVDAX)
    ran, daemon = command(capsys, returns("{}"), "--policy", str(policy), "apply")
    assert (ran.code, daemon.calls, local_applies) == (99, [], ["local"])
    ran, daemon = command(capsys, returns("{}"), "apply", "--allow-untrusted-policy")
    assert (ran.code, daemon.calls, local_applies) == (99, [], ["local", "local"])


def test_a_fake_kernel_is_never_sent_to_the_daemon(
    capsys: pytest.CaptureFixture[str],
    private_bus: PrivateSystemBus,
    pmem_kernel: FakeKernel,
    tmp_path: Path,
) -> None:
    with fake_daemon(returns("{}")) as daemon:
        ran = daxd(capsys, pmem_kernel, write_policy(tmp_path, PMEM_RAM), "apply")
    assert ran.code == 0
    assert ran.out.startswith("dax0.0: applied")
    assert daemon.calls == []


# --- what the client path imports ----------------------------------------------------------------
def run_script(
    script: str, env: dict[str, str], *, prefix: Sequence[str] = (), cwd: str | None = None
) -> tuple[int, str, str]:
    """``python -c script`` in a fresh interpreter (``prefix``: e.g. setpriv to another user)."""
    done = subprocess.run(
        [*prefix, sys.executable, "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def imports_of(err: str) -> dict[str, Any]:
    assert "IMPORTS " in err, err
    found: dict[str, Any] = json.loads(err.split("IMPORTS ", 1)[1])
    return found


def test_the_client_path_imports_no_policy_language_on_a_real_bus(
    private_bus: PrivateSystemBus, fake_kernel_base: Path, tmp_path: Path
) -> None:
    doc = json.dumps({"format": 1, "kind": "apply", "devices": [], "diagnostics": []})
    script = IMPORTS_SCRIPT.format(patch="", argv=["apply", "--offline-timeout", "9"])

    with fake_daemon(returns(doc), manager_properties(doc)) as daemon:
        returncode, out, err = run_script(script, client_env(private_bus))
    assert returncode == 0, err
    assert out == "no DAX devices\n"
    assert daemon.calls == [("asa{sv}", [], {"offline-timeout": ("d", 9.0)})]
    assert imports_of(err) == {"code": 0, "heavy": [], "daxd": []}


def test_the_client_path_imports_no_policy_language() -> None:
    """The same without a bus (runs everywhere): the client call answers with a document."""
    entry: dict[str, Any] = {
        "name": "dax0.0",
        "outcome": "in-sync",
        "error": None,
        "plan": {"rule": "keep", "steps": []},
        "steps": [],
        "final": {"mode": "devdax", "zone": None, "blocks": {"online": 0, "total": 0}},
    }
    doc = json.dumps({"format": 1, "kind": "apply", "devices": [entry], "diagnostics": []})
    patch = (
        "import daxd.cli.client as c\n"
        f"c.apply_via_daemon = lambda devices, offline_timeout=None, progress=None: {doc!r}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/none"}
    code, out, err = run_script(IMPORTS_SCRIPT.format(patch=patch, argv=["apply", "dax0.0"]), env)
    assert code == 0, err
    assert out == "dax0.0: in-sync (rule 'keep')\n  now: devdax, zone -, 0/0 blocks online\n"
    assert imports_of(err) == {"code": 0, "heavy": [], "daxd": []}
    # The check can fail: a local apply (no daemon) imports the policy language.
    check = IMPORTS_SCRIPT.format(patch="", argv=["--policy", "/nonexistent.yaml", "check"])
    code, out, err = run_script(check, env)
    assert imports_of(err)["heavy"] != []


def test_an_answer_that_is_no_apply_records_is_exit_5(
    capsys: pytest.CaptureFixture[str], private_bus: PrivateSystemBus, local_applies: list[str]
) -> None:
    answers: list[tuple[str, list[Any], str]] = [
        ("s", ["{}"], "the daemon answered Apply with 's'"),
        ("", [], "the daemon answered Apply with ''"),
        ("a{sv}", [{}], "the daemon answered Apply with 'a{sv}'"),
        ("aa{sv}", [[{"name": Variant("s", "dax0.0")}]], "a record lacking name or outcome"),
    ]
    for signature, body, text in answers:

        def answer(msg: Message, signature: str = signature, body: list[Any] = body) -> Message:
            return Message.new_method_return(msg, signature, body)

        ran, _ = command(capsys, answer, "apply")
        assert (ran.code, ran.out) == (exitcodes.ENVIRONMENT, "")
        assert ran.err.startswith("daxd: the daemon could not apply the policy: unexpected: ")
        assert text in ran.err
    assert local_applies == []


def test_without_the_managers_properties_the_document_has_no_hotplug_values(
    capsys: pytest.CaptureFixture[str], private_bus: PrivateSystemBus, local_applies: list[str]
) -> None:
    """A daemon that does not answer GetAll: the outcome is printed all the same."""
    doc = json.dumps({"format": 1, "kind": "apply", "devices": []})
    ran, _ = command(capsys, returns(doc), "apply", "--json")
    assert ran.code == 0
    assert ran.json()["hotplug"] == {
        "block_size": None,
        "auto_online_blocks": None,
        "memmap_on_memory": None,
        "online_policy": None,
    }

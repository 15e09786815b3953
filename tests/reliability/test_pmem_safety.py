"""Every way a pmem device could become system RAM without consent -- and that it never does.

Turning persistent memory into RAM destroys what it stores, so a rule must say
``allow_pmem_data_loss: true``.  Each path that can lead to a conversion is tried with a policy
that lacks that consent: a rule run by ``daxd apply``, a policy reload in the daemon, a D-Bus
Reconcile, the daemon seeing a pmem namespace hot-plugged, a drop-in adding a system-ram rule, an
earlier rule without consent shadowing a later one with it, a malformed consent, and a pmem
device left unbound half-way by a crash.  Every time: the driver stays device_dax (or the device
stays as it was), no write names the device, and the refusal is reported with its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from daxd.cli import exitcodes
from daxd.service.run import serve
from daxd.service.status import DeviceState
from tests.cli.helpers import daxd, devices
from tests.fakekernel import FakeKernel
from tests.plan.helpers import write_policy
from tests.service.daemon_harness import Harness, harness, start, stop
from tests.service.dbus_bus import PrivateSystemBus, busctl, run_async, system_bus_for_test

NO_CONSENT = "rules:\n  - name: pmem-ram\n    match: {provider: pmem}\n    mode: system-ram\n"
ALL_RAM = "rules:\n  - name: everything-ram\n    mode: system-ram\n    zone: movable\n"
CONSENT_TOO_LATE = """\
rules:
  - name: ram-no-consent
    match: {provider: [pmem, cxl]}
    mode: system-ram
  - name: pmem-ram-consent
    match: {provider: pmem}
    mode: system-ram
    allow_pmem_data_loss: true
"""
CONSENT_ELSEWHERE = """\
rules:
  - name: cxl-ram
    match: {provider: cxl}
    mode: system-ram
    allow_pmem_data_loss: true
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
"""
DEVDAX = "rules:\n  - name: devdax\n    mode: devdax\n"
CXL_DEVDAX = "rules:\n  - name: cxl-devdax\n    match: {provider: cxl}\n    mode: devdax\n"
REASON = "allow_pmem_data_loss"


def touched(kernel: FakeKernel, name: str) -> list[tuple[str, str]]:
    """Writes that name the device or go to its attributes."""
    return [
        (path, value)
        for path, value in kernel.writes
        if value.strip() == name or path.startswith(f"bus/dax/devices/{name}/")
    ]


def assert_not_converted(kernel: FakeKernel, name: str = "dax0.0") -> None:
    assert kernel.sysfs.link_name(f"bus/dax/devices/{name}/driver") == "device_dax"
    assert touched(kernel, name) == []
    assert kernel.blocks_of(name) == []  # no memory block was ever hot-added
    assert kernel.sigbus == []


@pytest.fixture
def pmem(fake_kernel: FakeKernel) -> FakeKernel:
    fake_kernel.add_pmem_device()  # dax0.0, device_dax
    return fake_kernel


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [NO_CONSENT, ALL_RAM, CONSENT_TOO_LATE, CONSENT_ELSEWHERE])
@pytest.mark.parametrize("named", [False, True], ids=["all", "named"])
def test_cli_apply_refuses(
    capsys: pytest.CaptureFixture[str], pmem: FakeKernel, tmp_path: Path, text: str, named: bool
) -> None:
    policy = write_policy(tmp_path, text)
    ran = daxd(capsys, pmem, policy, "apply", "--json", *(["dax0.0"] if named else []))
    assert ran.code == exitcodes.REFUSED, ran.err
    entry = devices(ran.json())["dax0.0"]
    assert entry["outcome"] == "refused"
    assert REASON in entry["error"]
    assert entry["steps"] == []
    assert entry["final"]["driver"] == "device_dax"
    assert_not_converted(pmem)


def test_cli_apply_with_a_drop_in(
    capsys: pytest.CaptureFixture[str], pmem: FakeKernel, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, CXL_DEVDAX)
    (tmp_path / "policy.d").mkdir()
    write_policy(tmp_path / "policy.d", NO_CONSENT, "50-pmem.yaml")
    ran = daxd(capsys, pmem, policy, "apply", "--json")
    assert ran.code == exitcodes.REFUSED
    entry = devices(ran.json())["dax0.0"]
    assert (entry["outcome"], entry["rule"]) == ("refused", "pmem-ram")
    assert REASON in entry["error"]
    assert_not_converted(pmem)


@pytest.mark.parametrize("consent", ["yes", "'true'", "1", "on", "True-ish"])
def test_a_malformed_consent_is_no_consent(
    capsys: pytest.CaptureFixture[str], pmem: FakeKernel, tmp_path: Path, consent: str
) -> None:
    policy = write_policy(tmp_path, NO_CONSENT + f"    allow_pmem_data_loss: {consent}\n")
    ran = daxd(capsys, pmem, policy, "apply")
    assert ran.code == exitcodes.POLICY_INVALID
    assert f"{policy}:5:" in ran.err
    assert_not_converted(pmem)


def test_a_pmem_device_left_unbound_stays_unconverted(
    capsys: pytest.CaptureFixture[str], pmem: FakeKernel, tmp_path: Path
) -> None:
    """A crash after device_dax let go: the next daxd, whose rule lacks consent, must not finish
    the conversion (it was consented to by a policy no longer in force)."""
    pmem.sysfs.write("bus/dax/drivers/device_dax/unbind", "dax0.0")
    pmem.sysfs.write("bus/dax/drivers/device_dax/remove_id", "dax0.0")
    start_writes = len(pmem.writes)
    ran = daxd(capsys, pmem, write_policy(tmp_path, NO_CONSENT), "apply", "--json")
    assert ran.code == exitcodes.REFUSED
    entry = devices(ran.json())["dax0.0"]
    assert entry["outcome"] == "refused"
    assert REASON in entry["error"]
    assert pmem.writes[start_writes:] == []
    assert pmem.sysfs.link_name("bus/dax/devices/dax0.0/driver") is None
    assert pmem.blocks_of("dax0.0") == []


# --- the daemon ----------------------------------------------------------------------------------


def refused(h: Harness, name: str = "dax0.0") -> bool:
    status = h.publisher.devices.get(name)
    return status is not None and status.state is DeviceState.REFUSED


def assert_reported(h: Harness, name: str = "dax0.0") -> None:
    status = h.publisher.devices[name]
    assert status.state is DeviceState.REFUSED
    assert REASON in status.last_error
    assert (status.mode, status.driver) == ("devdax", "device_dax")


def test_daemon_start(pmem: FakeKernel, tmp_path: Path) -> None:
    with harness(pmem, tmp_path, NO_CONSENT) as h:

        async def scenario() -> None:
            task = await start(h)
            assert_reported(h)
            await stop(h, task)

        asyncio.run(scenario())
    assert_not_converted(pmem)


@pytest.mark.parametrize("text", [NO_CONSENT, ALL_RAM, CONSENT_TOO_LATE])
def test_daemon_reload(pmem: FakeKernel, tmp_path: Path, text: str) -> None:
    with harness(pmem, tmp_path, DEVDAX) as h:

        async def scenario() -> None:
            task = await start(h)
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            h.policy.write_text(text)
            await h.daemon.reload()
            assert h.daemon.policy_error == ""
            assert_reported(h)
            await stop(h, task)

        asyncio.run(scenario())
    assert_not_converted(pmem)


def test_daemon_reload_with_a_drop_in(pmem: FakeKernel, tmp_path: Path) -> None:
    with harness(pmem, tmp_path, CXL_DEVDAX) as h:

        async def scenario() -> None:
            task = await start(h)
            assert h.publisher.devices["dax0.0"].state is DeviceState.UNMANAGED
            (tmp_path / "policy.d").mkdir()
            write_policy(tmp_path / "policy.d", NO_CONSENT, "50-pmem.yaml")
            await h.daemon.reload()
            assert_reported(h)
            assert h.publisher.devices["dax0.0"].rule == "pmem-ram"
            await stop(h, task)

        asyncio.run(scenario())
    assert_not_converted(pmem)


def test_daemon_hotplug(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(fake_kernel, tmp_path, ALL_RAM) as h:

        async def scenario() -> None:
            task = await start(h)
            fake_kernel.add_pmem_device()  # ndctl create-namespace -m devdax, after boot
            await h.until(lambda: refused(h))
            await h.settled()
            assert_reported(h)
            await stop(h, task)

        asyncio.run(scenario())
    assert_not_converted(fake_kernel)


def test_daemon_reconcile_and_drift(pmem: FakeKernel, tmp_path: Path) -> None:
    """Reconcile (forced) and udev events for the device change nothing either."""
    with harness(pmem, tmp_path, NO_CONSENT) as h:

        async def scenario() -> None:
            task = await start(h)
            await h.daemon.reconcile()
            h.udev.from_kernel(pmem.uevents[-1])  # a re-sent "bind"
            await h.settled()
            assert_reported(h)
            await stop(h, task)

        asyncio.run(scenario())
    assert_not_converted(pmem)


# --- D-Bus -------------------------------------------------------------------------------------


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    with system_bus_for_test(tmp_path, monkeypatch) as private_bus:
        yield private_bus


def test_dbus_reconcile_and_reload(bus: PrivateSystemBus, pmem: FakeKernel, tmp_path: Path) -> None:
    manager = ("org.daxd.Daxd1", "/org/daxd/Daxd1", "org.daxd.Daxd1.Manager")
    device = ("org.daxd.Daxd1", "/org/daxd/Daxd1/devices/dax0_0", "org.daxd.Daxd1.Device")
    with harness(pmem, tmp_path, DEVDAX) as h:

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(serve(h.daemon, use_bus=True))
            await h.until(lambda: h.daemon.ready or task.done())
            h.policy.write_text(NO_CONSENT)
            (await busctl(bus, "call", *manager, "Reload", "a{sv}", "0")).check()
            (await busctl(bus, "call", *manager, "Reconcile", "a{sv}", "0")).check()
            state = await busctl(bus, "get-property", *device, "State")
            assert state.check().stdout.strip() == 's "refused"'
            error = await busctl(bus, "get-property", *device, "LastError")
            assert REASON in error.check().stdout
            h.daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0

        run_async(scenario)
    assert_not_converted(pmem)

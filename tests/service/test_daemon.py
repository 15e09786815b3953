"""The daemon on the fake kernel: coldplug before READY, udev events, drift, reload, systemd."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from pathlib import Path

import pytest

from daxd.service.daemon import PolicyRejected
from daxd.service.events import Event
from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness, start, stop

MOVABLE = """\
rules:
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""

DEVDAX = """\
rules:
  - name: all-devdax
    mode: devdax
"""


def block_indices(kernel: FakeKernel, name: str) -> list[int]:
    return [b.index for b in kernel.blocks_of(name)]


def zones(kernel: FakeKernel, name: str) -> set[str]:
    return {
        kernel.sysfs.read(f"devices/system/memory/memory{i}/valid_zones") or ""
        for i in block_indices(kernel, name)
    }


def states(kernel: FakeKernel, name: str) -> set[str]:
    return {
        kernel.sysfs.read(f"devices/system/memory/memory{i}/state") or ""
        for i in block_indices(kernel, name)
    }


def driver(kernel: FakeKernel, name: str) -> str | None:
    return kernel.sysfs.link_name(f"bus/dax/devices/{name}/driver")


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_ready_only_after_coldplug_fixed_the_zone(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            assert zones(hmem_kernel, "dax0.0") == {"Normal"}  # auto-onlined at "boot"
            task = await start(h)
            ready = [m for m in h.notify.collect() if "READY=1" in m]
            assert len(ready) == 1
            # When systemd hears READY, the memory is already where the policy wants it.
            assert zones(hmem_kernel, "dax0.0") == {"Movable"}
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            assert h.publisher.devices["dax0.0"].rule == "hmem-movable"
            assert await stop(h, task) == 0
            assert any("STOPPING=1" in m for m in h.notify.collect())

        run(scenario())


def test_status_line_is_one_ascii_line(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            ready = next(m for m in h.notify.collect() if "READY=1" in m)
            status = [ln for ln in ready.split("\n") if ln.startswith("STATUS=")]
            assert status == ["STATUS=1 device(s): 1 applied"]
            await stop(h, task)

        run(scenario())


def test_hotplugged_device_gets_its_rule(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(fake_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            assert h.publisher.devices == {}
            fake_kernel.add_pmem_device()  # ndctl create-namespace -m devdax after boot
            await h.until(lambda: driver(fake_kernel, "dax0.0") == "kmem")
            await h.settled()
            assert zones(fake_kernel, "dax0.0") == {"Movable"}
            assert states(fake_kernel, "dax0.0") == {"online"}
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            assert h.publisher.devices["dax0.0"].blocks_online == 7
            assert any(a[0] == "dax0.0" and a[2] == "ok" for a in h.publisher.actions)
            await stop(h, task)

        run(scenario())


def test_removed_device_disappears(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, DEVDAX) as h:

        async def scenario() -> None:
            task = await start(h)
            assert driver(hmem_kernel, "dax0.0") == "device_dax"
            hmem_kernel.remove_device("dax0.0")
            await h.until(lambda: "dax0.0" in h.publisher.removed)
            assert "dax0.0" not in h.publisher.devices
            await stop(h, task)

        run(scenario())


def test_hand_offlined_block_is_restored(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            block = hmem_kernel.blocks_of("dax0.0")[3].index
            path = f"devices/system/memory/memory{block}/state"
            hmem_kernel.sysfs.write(path, "offline")  # an operator, by hand
            await h.until(lambda: hmem_kernel.sysfs.read(path) == "online")
            await h.settled()
            assert zones(hmem_kernel, "dax0.0") == {"Movable"}
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            await stop(h, task)

        run(scenario())


def test_hand_made_zone_change_is_restored(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            block = hmem_kernel.blocks_of("dax0.0")[0].index
            path = f"devices/system/memory/memory{block}/state"
            hmem_kernel.sysfs.write(path, "offline")
            hmem_kernel.sysfs.write(path, "online_kernel")
            await h.until(lambda: zones(hmem_kernel, "dax0.0") == {"Movable"})
            await stop(h, task)

        run(scenario())


def test_drift_that_would_take_memory_is_reported_not_undone(
    pmem_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with harness(pmem_kernel, tmp_path, DEVDAX) as h:

        async def scenario() -> None:
            task = await start(h)
            assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            # daxctl reconfigure-device -m system-ram, by hand:
            pmem_kernel.sysfs.write("bus/dax/drivers/device_dax/unbind", "dax0.0")
            pmem_kernel.sysfs.write("bus/dax/drivers/kmem/new_id", "dax0.0")
            await h.until(
                lambda: h.publisher.devices["dax0.0"].state is DeviceState.DRIFTED, timeout=5
            )
            await h.settled()
            # The memory stays online: taking it away is done only on request.
            assert states(pmem_kernel, "dax0.0") == {"online"}
            assert driver(pmem_kernel, "dax0.0") == "kmem"
            assert "outside daxd" in h.publisher.devices["dax0.0"].last_error
            # Later events about the device do not wear the hold down.
            first = block_indices(pmem_kernel, "dax0.0")[0]
            h.udev.push(Event("online", "memory", f"memory{first}"))
            h.udev.push(Event("change", "dax", "dax0.0"))
            await h.settled()
            assert driver(pmem_kernel, "dax0.0") == "kmem"
            assert states(pmem_kernel, "dax0.0") == {"online"}
            held = h.publisher.devices["dax0.0"]
            assert held.state is DeviceState.DRIFTED
            # An explicit Reconcile (D-Bus) applies the policy fully.
            await h.daemon.reconcile()
            assert driver(pmem_kernel, "dax0.0") == "device_dax"
            done = h.publisher.devices["dax0.0"]
            assert done.state is DeviceState.APPLIED
            assert pmem_kernel.leaks == []
            await stop(h, task)

        with caplog.at_level("WARNING"):
            run(scenario())
        assert any("changed outside daxd" in r.getMessage() for r in caplog.records)


def test_reload_applies_new_policy(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            h.notify.collect()
            h.policy.write_text(DEVDAX)
            await h.daemon.reload()
            assert driver(hmem_kernel, "dax0.0") == "device_dax"
            messages = h.notify.collect()
            reloading = [m for m in messages if "RELOADING=1" in m]
            assert len(reloading) == 1
            assert re.search(r"MONOTONIC_USEC=\d+", reloading[0])
            assert messages.index(reloading[0]) < max(
                i for i, m in enumerate(messages) if "READY=1" in m
            )
            assert h.daemon.policy_error == ""
            await stop(h, task)

        run(scenario())


def test_invalid_reload_keeps_the_policy_in_force(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            h.policy.write_text("rules:\n  - mode: sideways\n")
            with pytest.raises(PolicyRejected) as err:
                await h.daemon.reload()
            assert f"{h.policy}:2:" in str(err.value)
            assert f"{h.policy}:2:" in h.daemon.policy_error
            assert h.publisher.managers[-1].policy_error == h.daemon.policy_error
            assert "READY=1" in h.notify.collect()[-1]  # systemd is told the reload ended
            # Still the old policy: a block taken out of Movable is put back.
            block = hmem_kernel.blocks_of("dax0.0")[0].index
            hmem_kernel.sysfs.write(f"devices/system/memory/memory{block}/state", "offline")
            await h.until(lambda: zones(hmem_kernel, "dax0.0") == {"Movable"})
            await stop(h, task)

        run(scenario())


def test_sighup_reloads(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            h.policy.write_text(DEVDAX)
            os.kill(os.getpid(), 1)  # SIGHUP
            await h.until(lambda: driver(hmem_kernel, "dax0.0") == "device_dax")
            await stop(h, task)

        run(scenario())


def test_invalid_policy_at_start_changes_nothing(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, "rules: [{mode: devdax, zone: movable}]\n") as h:

        async def scenario() -> None:
            task = await start(h)
            assert zones(hmem_kernel, "dax0.0") == {"Normal"}
            assert h.daemon.policy_error
            assert h.publisher.devices["dax0.0"].state is DeviceState.UNMANAGED
            await stop(h, task)

        run(scenario())


def test_watchdog_pings_at_half_the_interval(
    hmem_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            h.notify.collect()
            start_at = asyncio.get_running_loop().time()
            h.notify.messages.clear()
            while asyncio.get_running_loop().time() - start_at < 0.55:
                h.notify.collect()  # stamped when read: read often
                await asyncio.sleep(0.005)
            pings = [t for t, m in h.notify.messages if m == "WATCHDOG=1"]
            assert len(pings) >= 4
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert all(0.07 < g < 0.25 for g in gaps), gaps
            await stop(h, task)

        run(scenario())


def test_event_burst_is_coalesced(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            before = h.daemon.reconciles
            first = hmem_kernel.blocks_of("dax0.0")[0].index
            for _ in range(500):
                for action in ("offline", "online"):
                    h.udev.push(Event(action, "memory", f"memory{first}"))
            await h.settled()
            assert h.udev.delivered >= 1000
            assert h.daemon.reconciles - before <= 5
            await stop(h, task)

        run(scenario())


def test_lost_events_trigger_a_full_rescan(fake_kernel: FakeKernel, tmp_path: Path) -> None:
    with harness(fake_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            fake_kernel.listener = None  # udev lost these events
            fake_kernel.add_hmem_device()
            h.udev.overflow = True
            h.udev.push(Event("change", "memory", "memory0"))
            await h.until(lambda: zones(fake_kernel, "dax0.0") == {"Movable"})
            await stop(h, task)

        run(scenario())


def test_sigterm_mid_conversion_leaves_nothing_half_done(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            blocks = block_indices(hmem_kernel, "dax0.0")

            # Stop the daemon while it takes the device back to devdax, after 3 offlines.
            def listener(ev: object) -> None:
                h.udev.from_kernel(ev)  # type: ignore[arg-type]
                offline = sum(
                    1 for i in blocks
                    if hmem_kernel.sysfs.read(f"devices/system/memory/memory{i}/state")
                    == "offline"
                )  # fmt: skip
                if offline == 3:
                    h.daemon._stop.set()

            hmem_kernel.listener = listener
            h.policy.write_text(DEVDAX)
            await h.daemon.reload()
            await stop(h, task)
            # Rolled back: still kmem, every block online again, nothing leaked.
            assert driver(hmem_kernel, "dax0.0") == "kmem"
            assert states(hmem_kernel, "dax0.0") == {"online"}
            assert hmem_kernel.leaks == []

        run(scenario())


def test_conflicts_are_reported(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    rules = tmp_path / "root/lib/udev/rules.d"
    rules.mkdir(parents=True)
    (rules / "40-memory.rules").write_text(
        'SUBSYSTEM=="memory", ACTION=="add", ATTR{state}=="offline", ATTR{state}="online"\n'
    )
    with harness(hmem_kernel, tmp_path, MOVABLE) as h:

        async def scenario() -> None:
            task = await start(h)
            conflicts = h.publisher.managers[-1].conflicts
            assert any("40-memory.rules onlines memory" in c for c in conflicts)
            assert any("auto_online_blocks=online" in c for c in conflicts)
            await stop(h, task)

        run(scenario())


def test_start_puts_back_auto_online_left_switched_by_a_dead_daxd(
    hmem_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed between switching auto_online_blocks and putting it back: the next start repairs
    it, even when every device is already in sync (no apply would run)."""
    auto = "devices/system/memory/auto_online_blocks"
    hmem_kernel.sysfs.write(auto, "online_movable")
    run_dir = hmem_kernel.roots().runtime
    assert run_dir is not None
    run_dir.mkdir(parents=True)
    (run_dir / "auto_online_blocks.switched").write_text("online online_movable 999999999\n")
    with harness(hmem_kernel, tmp_path, "rules: []\n") as h:

        async def scenario() -> None:
            task = await start(h)
            assert hmem_kernel.sysfs.read(auto) == "online"
            assert not (run_dir / "auto_online_blocks.switched").exists()
            assert await stop(h, task) == 0

        run(scenario())
    assert "put auto_online_blocks back to online" in caplog.text

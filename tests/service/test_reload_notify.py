"""Reload over D-Bus (what ExecReload= does) does not send RELOADING=1; SIGHUP's reload does.

Found in the QEMU lab (tests/vm/test_scenario_restart.py): with RELOADING=1 sent while systemd
runs ExecReload=, systemd waits for READY=1 after the ExecReload= command ends. When daxd dies
in the middle of that reload (SIGKILL, a crash), no READY=1 comes and systemd restarts daxd only
when the watchdog (60 s) or the reload timeout fires, instead of at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daxd.service.run import _Controller
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness, start, stop

POLICY = """\
rules:
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
"""


def test_dbus_reload_tells_systemd_ready_but_not_reloading(
    hmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(hmem_kernel, tmp_path, POLICY) as h:

        async def scenario() -> None:
            task = await start(h)
            h.notify.collect()
            await _Controller(h.daemon).reload()
            messages = h.notify.collect()
            assert not [m for m in messages if "RELOADING=1" in m], messages
            assert [m for m in messages if "READY=1" in m], messages
            # The signal path still announces its reload (systemd is not reloading then).
            await h.daemon.reload()
            assert [m for m in h.notify.collect() if "RELOADING=1" in m]
            await stop(h, task)

        asyncio.run(scenario())

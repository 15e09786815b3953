"""A rule daxd refuses to apply is said in the journal once, not only on D-Bus.

Found in the QEMU lab (tests/vm/test_scenario_policy.py): with pmem and a system-ram rule
without allow_pmem_data_loss, the journal said only "ready: 2 device(s): 2 refused".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness, start, stop

NO_CONSENT = """\
rules:
  - name: pmem-as-ram-without-consent
    match: {provider: pmem}
    mode: system-ram
"""


def test_refused_rule_is_logged_once(
    pmem_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with harness(pmem_kernel, tmp_path, NO_CONSENT) as h:

        async def scenario() -> None:
            task = await start(h)
            assert h.publisher.devices["dax0.0"].state is DeviceState.REFUSED
            await h.daemon.reconcile()  # the same refusal again: not logged again
            await stop(h, task)

        with caplog.at_level("WARNING"):
            asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
    assert lines == [
        "dax0.0: rule 'pmem-as-ram-without-consent' not applied: persistent memory: system-ram "
        "destroys what it stores; the rule must say allow_pmem_data_loss: true to consent"
    ]

"""`daxd apply` through the daemon follows the device while the daemon converts it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from daxd.cli import client
from daxd.service import reconciler
from tests.fakekernel import FakeKernel
from tests.service.bus_daemon import running
from tests.service.dbus_bus import PrivateSystemBus, run_async, system_bus_for_test

DEVDAX = "rules:\n  - name: all-devdax\n    mode: devdax\n"
RAM = """\
rules:
  - name: all-ram
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    (tmp_path / "bus").mkdir()
    with system_bus_for_test(tmp_path / "bus", monkeypatch) as private_bus:
        yield private_bus


def test_the_client_sees_the_blocks_come_online_before_the_answer(
    bus: PrivateSystemBus,
    fake_kernel: FakeKernel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_kernel.add_pmem_device(size=16 * fake_kernel.config.block_size + (32 << 20))
    monkeypatch.setattr(reconciler, "PROGRESS_INTERVAL", 0.0)
    seen: list[dict[str, Any]] = []

    def progress(props: Mapping[str, Any]) -> None:
        seen.append(dict(props))

    async def scenario() -> str | None:
        async with running(fake_kernel, tmp_path, DEVDAX) as service:
            service.h.policy.write_text(RAM)
            return await client._apply([], {}, 60.0, 10.0, progress)

    document = run_async(scenario)
    assert document is not None
    assert '"outcome": "applied"' in document
    assert {p.get("Name") for p in seen} == {"dax0.0"}  # named from the first look
    total = seen[-1]["BlocksTotal"]
    halfway = [p for p in seen if p["State"] == "pending" and 0 < p["BlocksOnline"] < total]
    assert halfway, [(p["State"], p["BlocksOnline"]) for p in seen]

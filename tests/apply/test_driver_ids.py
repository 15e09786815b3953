"""No kernel default left changed: an id daxd writes to a driver's new_id is taken out again.

Linux keeps an id written to ``bus/dax/drivers/<driver>/new_id`` until reboot, and matches it
before the region's type (dax_bus_match()): left there, it hands the next device of that name to
the driver daxd chose for this one, even with daxd stopped (seen in the CXL lab). So after each
bind daxd writes the same id to ``remove_id``, and its rollbacks do too; a device appearing
afterwards binds as the kernel alone would bind it.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from daxd.apply.executor import Outcome
from daxd.plan.steps import Action
from tests.fakekernel import DEVDAX, KMEM, FakeKernel
from tests.plan.helpers import DEVDAX as DEVDAX_POLICY
from tests.plan.helpers import RAM_MOVABLE, apply, driver, load

PMEM_RAM = "rules:\n  - mode: system-ram\n    allow_pmem_data_loss: true\n"


def id_writes(kernel: FakeKernel, start: int) -> list[tuple[str, str]]:
    return [(p, v) for p, v in kernel.writes[start:] if p.endswith(("/new_id", "/remove_id"))]


@pytest.mark.parametrize("provider", ["cxl", "hmem"])
def test_a_device_recreated_after_devdax_binds_as_without_daxd(
    fake_kernel: FakeKernel, tmp_path: Path, provider: str
) -> None:
    add = fake_kernel.add_cxl_device if provider == "cxl" else fake_kernel.add_hmem_device
    add(size=1 << 30)
    start = len(fake_kernel.writes)
    result = apply(fake_kernel, load(tmp_path, DEVDAX_POLICY))
    assert result.outcome is Outcome.APPLIED, result.error
    assert driver(fake_kernel) == DEVDAX
    assert id_writes(fake_kernel, start) == [
        ("bus/dax/drivers/kmem/remove_id", "dax0.0"),
        ("bus/dax/drivers/device_dax/new_id", "dax0.0"),
        ("bus/dax/drivers/device_dax/remove_id", "dax0.0"),  # once bound: the device stays
    ]
    assert fake_kernel.dynamic_ids() == {}
    # The region comes back (hmem.N re-probed, the CXL region re-created under its id): the
    # kernel alone gives such a device to kmem.
    fake_kernel.recreate_device("dax0.0")
    assert driver(fake_kernel) == KMEM


def test_pmem_recreated_after_system_ram_is_devdax_again(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    result = apply(pmem_kernel, load(tmp_path, PMEM_RAM))
    assert result.outcome is Outcome.APPLIED, result.error
    assert driver(pmem_kernel) == KMEM
    assert pmem_kernel.dynamic_ids() == {}
    for b in pmem_kernel.blocks_of("dax0.0"):
        pmem_kernel.sysfs.write(f"devices/system/memory/memory{b.index}/state", "offline", 5)
    # ndctl disable-namespace + enable-namespace: a namespace comes back as devdax, never as RAM
    pmem_kernel.recreate_device("dax0.0")
    assert driver(pmem_kernel) == DEVDAX


def test_a_new_device_of_another_name_binds_as_the_kernel_would(
    fake_kernel: FakeKernel, tmp_path: Path
) -> None:
    fake_kernel.add_cxl_device(size=1 << 30)
    assert apply(fake_kernel, load(tmp_path, DEVDAX_POLICY)).outcome is Outcome.APPLIED
    cxl = fake_kernel.add_cxl_device(size=1 << 30)  # the next CXL region, daxd not running
    assert driver(fake_kernel, cxl.name) == KMEM
    pmem = fake_kernel.add_pmem_device()
    assert driver(fake_kernel, pmem.name) == DEVDAX


def test_a_refused_remove_id_is_reported_and_the_conversion_stays(
    fake_kernel: FakeKernel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_kernel.add_hmem_device(size=1 << 30)
    fake_kernel.fail("bus/dax/drivers/device_dax/remove_id", errno.EBUSY)
    with caplog.at_level(logging.WARNING, "daxd.apply"):
        result = apply(fake_kernel, load(tmp_path, DEVDAX_POLICY))
    assert result.outcome is Outcome.APPLIED, result.error
    assert driver(fake_kernel) == DEVDAX
    failed = [r for r in result.results if not r.ok]
    assert [(r.step.action, r.step.driver, r.errno) for r in failed] == [
        (Action.REMOVE_ID, DEVDAX, "EBUSY")
    ]
    assert not any(r.rollback for r in result.results)
    assert "the id stays in device_dax" in caplog.text
    assert fake_kernel.dynamic_ids() == {DEVDAX: ["dax0.0"]}


@pytest.mark.parametrize("setup", ["pmem", "hmem"])
def test_a_bind_whose_probe_fails_leaves_no_id_behind(
    fake_kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str
) -> None:
    # pmem to RAM (kmem), hmem to devdax (device_dax); back to the driver each came from
    policy, target, back = (
        (PMEM_RAM, KMEM, DEVDAX) if setup == "pmem" else (DEVDAX_POLICY, DEVDAX, KMEM)
    )
    if setup == "pmem":
        fake_kernel.add_pmem_device()
    else:
        fake_kernel.add_hmem_device(size=1 << 30)

    def failing(d: object) -> None:
        raise OSError(errno.ENOMEM, "probe failed")

    # new_id is accepted and keeps the id (do_id_store() ignores the probe's error); the bind
    # daxd tries next fails with the probe's error
    monkeypatch.setattr(
        fake_kernel.bus, "_kmem_probe" if target == KMEM else "_devdax_probe", failing
    )
    result = apply(fake_kernel, load(tmp_path, policy))
    monkeypatch.undo()
    assert result.outcome is Outcome.FAILED
    assert [r.step.action for r in result.results if not r.ok] == [Action.BIND]
    assert driver(fake_kernel) == back  # given back
    assert fake_kernel.dynamic_ids() == {}
    undo = [(r.step.action, r.step.driver) for r in result.results if r.rollback]
    assert (Action.REMOVE_ID, target) in undo
    assert undo[-2:] == [(Action.NEW_ID, back), (Action.REMOVE_ID, back)]


def test_zone_moves_write_no_ids(hmem_kernel: FakeKernel, tmp_path: Path) -> None:
    start = len(hmem_kernel.writes)
    assert apply(hmem_kernel, load(tmp_path, RAM_MOVABLE)).outcome is Outcome.APPLIED
    assert id_writes(hmem_kernel, start) == []

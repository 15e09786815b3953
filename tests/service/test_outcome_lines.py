"""The journal has one line per device and pass saying how it ended (docs/cli.md "The journal").

dax0.0: rule "pmem-devdax" (/etc/daxd/policy.yaml:2): in sync
dax1.0: rule "hmem-movable" (/etc/daxd/policy.yaml:5): applied (32 steps, 0.4 s)
dax2.0: rule "cxl-memmap" (...): refused (8 steps, 0.1 s): memmap_on_memory: true cannot ...
dax3.0: no rule matches, left alone
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from pathlib import Path

import pytest

from tests.fakekernel import FakeKernel, GiB
from tests.service.daemon_harness import harness, start, stop

POLICY = """\
rules:
  - name: pmem-devdax
    match: {provider: pmem, device: dax0.0}
    mode: devdax
  - name: hmem-movable
    match: {provider: hmem}
    mode: system-ram
  - name: cxl-memmap
    match: {provider: cxl}
    mode: system-ram
    memmap_on_memory: true
  - name: hands-off
    match: {device: dax4.0}
    mode: ignore
"""
OUTCOME = re.compile(
    r'^(dax\d+\.\d+): (?:rule "([^"]+)" \((\S+:\d+)\): )?'
    r"(in sync|applied|refused|failed|stopped|drifted|gone|left alone|no rule matches"
    r"|the rule says ignore)"
)


def outcome_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "daxd" and r.levelno == logging.INFO and OUTCOME.match(r.getMessage())
    ]


def machine(base: Path) -> FakeKernel:
    kernel = FakeKernel(base)
    kernel.add_pmem_device()  # dax0.0: devdax, as its rule wants
    kernel.add_hmem_device(size=GiB)  # dax1.0: kmem, online in Normal; the rule wants Movable
    kernel.add_cxl_device(size=GiB)  # dax2.0: memmap_on_memory reads 1, not in effect (N)
    kernel.add_pmem_device()  # dax3.0: no rule
    kernel.add_pmem_device()  # dax4.0: ignore
    return kernel


def test_each_pass_says_how_each_device_ended(
    fake_kernel_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = machine(fake_kernel_base)
    caplog.set_level(logging.INFO, "daxd")
    policy = tmp_path / "policy.yaml"
    with harness(kernel, tmp_path, POLICY) as h:

        async def scenario() -> tuple[list[str], list[str], list[str]]:
            task = await start(h)
            coldplug = outcome_lines(caplog)
            caplog.clear()
            await h.daemon.reconcile()
            again = outcome_lines(caplog)
            caplog.clear()
            block = kernel.blocks_of("dax1.0")[0].index
            kernel.sysfs.write(f"devices/system/memory/memory{block}/state", "offline", 5)
            kernel.fail(f"devices/system/memory/memory{block}/state", errno.EBUSY)
            await h.daemon.apply(["dax1.0"])
            failed = outcome_lines(caplog)
            await stop(h, task)
            return coldplug, again, failed

        coldplug, again, failed = asyncio.run(scenario())

    took = r"\(\d+ steps?, \d+\.\d s\)"
    assert len(coldplug) == 5, coldplug  # one per device
    assert coldplug[0] == f'dax0.0: rule "pmem-devdax" ({policy}:2): in sync'
    assert re.fullmatch(
        rf'dax1\.0: rule "hmem-movable" \({policy}:5\): applied {took}', coldplug[1]
    )
    assert re.fullmatch(
        rf'dax2\.0: rule "cxl-memmap" \({policy}:8\): refused {took}: memmap_on_memory: true '
        r"cannot be met: the kernel was booted without memory_hotplug\.memmap_on_memory=1; .*",
        coldplug[2],
    )
    assert coldplug[3] == "dax3.0: no rule matches, left alone"
    assert (
        coldplug[4] == f'dax4.0: rule "hands-off" ({policy}:12): the rule says ignore, left alone'
    )
    # Nothing to do the second time: still one line each.
    assert [ln.split(": ", 1)[0] for ln in again] == [
        "dax0.0",
        "dax1.0",
        "dax2.0",
        "dax3.0",
        "dax4.0",
    ]
    assert again[1] == f'dax1.0: rule "hmem-movable" ({policy}:5): in sync'
    assert again[2].startswith(f'dax2.0: rule "cxl-memmap" ({policy}:8): refused: memmap_on_memory')
    # A failure: the error, how many writes were made.
    (line,) = failed
    assert re.fullmatch(
        rf'dax1\.0: rule "hmem-movable" \({policy}:5\): failed {took}: writing .* EBUSY.*', line
    )
    assert all("\n" not in ln for ln in coldplug + again + failed)


def test_a_gone_device_and_a_drifted_one(
    fake_kernel_base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeKernel(fake_kernel_base)
    kernel.add_hmem_device(size=GiB)
    caplog.set_level(logging.INFO, "daxd")
    with harness(kernel, tmp_path, POLICY) as h:
        h.daemon.config.drift_grace = 30.0

        async def scenario() -> None:
            task = await start(h)
            caplog.clear()
            block = kernel.blocks_of("dax0.0")[0].index
            kernel.sysfs.write(f"devices/system/memory/memory{block}/state", "offline", 5)
            await h.until(lambda: any("drifted" in ln for ln in outcome_lines(caplog)))
            kernel.remove_device("dax0.0")
            await h.until(lambda: "dax0.0: gone" in outcome_lines(caplog))
            await stop(h, task)

        asyncio.run(scenario())
    drifted = next(ln for ln in outcome_lines(caplog) if "drifted" in ln)
    assert drifted.startswith('dax0.0: rule "hmem-movable" (')
    assert (
        ": drifted: changed outside daxd; restoring the policy once nothing has changed" in drifted
    )

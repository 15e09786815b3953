"""daxd does not undo a change while someone is still making it (daxctl racing daxd).

Found in the QEMU lab (tests/vm/test_scenario_drift.py): ``daxctl reconfigure-device -m devdax``
offlines every block of a kmem device, then unbinds kmem. daxd saw the blocks go offline,
counted that as drift it may undo (onlining only adds memory) and onlined two of them again;
daxctl's unbind then "succeeded" with memory online, and the kernel kept the range until reboot
("cannot be hotremoved until the next reboot"): neither kmem nor device_dax could bind again.
Restoring drift now waits until the device has been left alone for ``drift_grace`` seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from daxd.service.status import DeviceState
from tests.fakekernel import FakeKernel
from tests.service.daemon_harness import harness, start, stop


def online(kernel: FakeKernel) -> set[bool]:
    return {b.online for b in kernel.blocks_of("dax0.0")}


RAM = """\
rules:
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
"""


def test_operator_taking_a_device_back_is_not_undone_half_way(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(pmem_kernel, tmp_path, RAM) as h:
        h.daemon.config.drift_grace = 0.5

        async def scenario() -> None:
            task = await start(h)
            try:
                assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
                # daxctl reconfigure-device -m devdax dax0.0: offline each block (tens of ms
                # apart under emulation, longer than daxd's settle time), unbind kmem, bind
                # device_dax.
                for block in pmem_kernel.blocks_of("dax0.0"):
                    path = f"devices/system/memory/memory{block.index}/state"
                    pmem_kernel.sysfs.write(path, "offline")
                    await asyncio.sleep(0.05)
                pmem_kernel.sysfs.write("bus/dax/drivers/kmem/unbind", "dax0.0")
                pmem_kernel.sysfs.write("bus/dax/drivers/device_dax/new_id", "dax0.0")
                assert pmem_kernel.leaks == []
                # Left alone afterwards: binding only adds, so daxd puts the policy back.
                await h.until(lambda: online(pmem_kernel) == {True})
                await h.settled()
                assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
                assert pmem_kernel.leaks == []
            finally:
                await stop(h, task)

        asyncio.run(scenario())


def test_hand_offlined_block_comes_back_after_the_grace(
    pmem_kernel: FakeKernel, tmp_path: Path
) -> None:
    with harness(pmem_kernel, tmp_path, RAM) as h:
        h.daemon.config.drift_grace = 0.3

        async def scenario() -> None:
            task = await start(h)
            try:
                block = pmem_kernel.blocks_of("dax0.0")[1].index
                path = f"devices/system/memory/memory{block}/state"
                loop = asyncio.get_running_loop()
                pmem_kernel.sysfs.write(path, "offline")
                offlined = loop.time()
                await h.until(lambda: pmem_kernel.sysfs.read(path) == "online", timeout=5)
                assert loop.time() - offlined >= 0.3
                await h.settled()
                assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
            finally:
                await stop(h, task)

        asyncio.run(scenario())


def test_no_restore_while_a_block_is_going_offline(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    """Offlining a big block can take longer than the grace, without a uevent meanwhile."""
    with harness(pmem_kernel, tmp_path, RAM) as h:
        h.daemon.config.drift_grace = 0.2

        async def scenario() -> None:
            task = await start(h)
            try:
                blocks = [b.index for b in pmem_kernel.blocks_of("dax0.0")]
                pmem_kernel.sysfs.write(f"devices/system/memory/memory{blocks[0]}/state", "offline")
                pmem_kernel.memory.begin_offline(blocks[1])  # someone else, still at it
                await asyncio.sleep(1.5)  # well past the grace
                assert not pmem_kernel.memory.blocks[blocks[0]].online  # left alone
                pmem_kernel.memory.end_offline(blocks[1], done=False)  # they gave up
                await h.until(lambda: online(pmem_kernel) == {True}, timeout=5)
                await h.settled()
                assert h.publisher.devices["dax0.0"].state is DeviceState.APPLIED
                assert pmem_kernel.leaks == []
            finally:
                await stop(h, task)

        asyncio.run(scenario())

"""A block another process is offlining reads "going-offline", as on the real kernel.

Seen in the QEMU lab (tests/vm/test_scenario_restart.py): while offline_pages() retries a page it
cannot migrate, the block's ``state`` reads ``going-offline`` and ``valid_zones`` lists the
candidate zones (``Movable Normal`` for a block of ZONE_MOVABLE), not the zone. daxd reads such a
block as neither online nor offline, and never unbinds kmem while one is there.
"""

from __future__ import annotations

from pathlib import Path

from daxd.apply.executor import apply_device
from daxd.kernel.scan import read_state
from daxd.policy.load import load_policy
from tests.fakekernel import FakeKernel

DRV = "bus/dax/drivers"
MEM = "devices/system/memory"


def movable_kmem(base: Path) -> FakeKernel:
    kernel = FakeKernel(base)
    kernel.add_pmem_device()
    kernel.sysfs.write(f"{DRV}/device_dax/unbind", "dax0.0")
    kernel.sysfs.write(f"{DRV}/kmem/new_id", "dax0.0")
    for b in kernel.blocks_of("dax0.0"):
        kernel.sysfs.write(f"{MEM}/memory{b.index}/state", "offline")
        kernel.sysfs.write(f"{MEM}/memory{b.index}/state", "online_movable")
    return kernel


def test_going_offline_block_renders_like_the_kernel(fake_kernel_base: Path) -> None:
    kernel = movable_kmem(fake_kernel_base)
    block = kernel.blocks_of("dax0.0")[-1].index
    kernel.memory.begin_offline(block)
    assert kernel.sysfs.read(f"{MEM}/memory{block}/state") == "going-offline"
    assert kernel.sysfs.read(f"{MEM}/memory{block}/valid_zones") == "Movable Normal"
    assert kernel.sysfs.read(f"{MEM}/memory{block}/online") == "1"
    seen = {b.index: b for b in read_state(kernel.sysfs).blocks["dax0.0"]}[block]
    assert seen.state == "going-offline"
    assert not seen.online
    assert seen.zone is None
    kernel.memory.end_offline(block, done=False)  # given up: online in its zone again
    assert kernel.sysfs.read(f"{MEM}/memory{block}/state") == "online"
    assert kernel.sysfs.read(f"{MEM}/memory{block}/valid_zones") == "Movable"
    kernel.memory.begin_offline(block)
    kernel.memory.end_offline(block, done=True)
    assert kernel.sysfs.read(f"{MEM}/memory{block}/state") == "offline"


def test_kmem_is_not_unbound_while_a_block_is_going_offline(
    fake_kernel_base: Path, tmp_path: Path
) -> None:
    kernel = movable_kmem(fake_kernel_base)
    blocks = [b.index for b in kernel.blocks_of("dax0.0")]
    for index in blocks[:-1]:
        kernel.sysfs.write(f"{MEM}/memory{index}/state", "offline")
    kernel.memory.begin_offline(blocks[-1])  # someone else, still at it
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("rules:\n  - mode: devdax\n")
    policy = load_policy(policy_file, None, strict=False)
    state = read_state(kernel.sysfs)
    result = apply_device(kernel.sysfs, policy, "dax0.0", state.hotplug)
    assert kernel.leaks == []
    assert not [r for r in result.results if r.step.action == "unbind" and r.ok]
    assert kernel.devices["dax0.0"].driver == "kmem"

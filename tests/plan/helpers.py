"""Policies written to a temporary folder, plans of fake-kernel devices, and sysfs read-backs.

Shared by tests/plan, tests/apply and tests/cli.  Read-backs go to the fake kernel's sysfs files
(never to the fake's internals), so they see what daxd or an operator would see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daxd.apply.executor import ApplyOptions, DeviceResult, apply_device
from daxd.kernel.scan import read_hotplug_settings, read_state
from daxd.plan.planner import plan_device
from daxd.plan.steps import Action, DevicePlan, Step
from daxd.policy.load import load_policy
from daxd.policy.model import Policy
from tests.fakekernel import FakeKernel

MEMORY = "devices/system/memory"

# Small policies used throughout; each is one rule matching every device.
DEVDAX = "rules:\n  - name: keep-devdax\n    mode: devdax\n"
RAM_MOVABLE = "rules:\n  - name: ram\n    mode: system-ram\n    zone: movable\n"
PMEM_RAM_MEMMAP = """\
version: 1
rules:
  - name: pmem-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    memmap_on_memory: true
    allow_pmem_data_loss: true
"""


def write_policy(folder: Path, text: str, name: str = "policy.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, text: str) -> Policy:
    """The policy ``text`` as daxd loads it from a file (drop-in folder: none)."""
    return load_policy(write_policy(folder, text), folder / "no-policy.d")


_DRIVER_ATTR = {
    Action.UNBIND: "unbind",
    Action.NEW_ID: "new_id",
    Action.REMOVE_ID: "remove_id",
    Action.BIND: "bind",
}
_ONLINE_VALUES = ("online", "online_kernel", "online_movable")


def step_problems(step: Step, device: str) -> list[str]:
    """How a step of ``device``'s plan or apply fails to say what it acts on: its driver, device
    and block fields against its action, path and value (paths spelled out here, not taken from
    daxd's layout module)."""
    want: tuple[str | None, str | None, int | None]  # driver, device, block
    values: tuple[str, ...]
    if step.action in _DRIVER_ATTR:
        if step.driver not in ("device_dax", "kmem"):
            return [f"{step}: not a driver daxd uses"]
        want = (step.driver, device, None)
        path = f"bus/dax/drivers/{step.driver}/{_DRIVER_ATTR[step.action]}"
        values = (device,)
    elif step.action in (Action.OFFLINE_BLOCK, Action.ONLINE_BLOCK):
        if step.block is None:
            return [f"{step}: no block"]
        want = (None, None, step.block)
        path = f"devices/system/memory/memory{step.block}/state"
        values = ("offline",) if step.action is Action.OFFLINE_BLOCK else _ONLINE_VALUES
    elif step.action is Action.SET_MEMMAP:
        want = (None, device, None)
        path = f"bus/dax/devices/{device}/memmap_on_memory"
        values = ("0", "1")
    else:  # auto_online_blocks: kernel-wide
        want = (None, None, None)
        path = "devices/system/memory/auto_online_blocks"
        values = ("offline", *_ONLINE_VALUES)
    problems = []
    if (step.driver, step.device, step.block) != want:
        problems.append(f"{step}: fields are not {want}")
    if step.path != path:
        problems.append(f"{step}: path is not {path}")
    if type(step.value) is not str or step.value not in values:
        problems.append(f"{step}: value is not plain text among {values}")
    return problems


def plan_of(kernel: FakeKernel, policy: Policy, name: str = "dax0.0") -> DevicePlan:
    """The plan for one device of the fake kernel, from what daxd reads in its sysfs; every step
    must say what it acts on (step_problems)."""
    state = read_state(kernel.sysfs)
    device = state.devices[name]
    plan = plan_device(device, state.blocks_of(name), state.hotplug, policy.match(device))
    assert [p for s in plan.steps for p in step_problems(s, name)] == []
    return plan


def apply(
    kernel: FakeKernel,
    policy: Policy,
    name: str = "dax0.0",
    *,
    offline_timeout: float = 5.0,
    should_stop: Callable[[], bool] = lambda: False,
    runtime_dir: Path | None = None,
) -> DeviceResult:
    """apply_device() on the fake kernel, with its procfs and a short offline timeout."""
    opts = ApplyOptions(
        proc_root=kernel.proc_root,
        offline_timeout=offline_timeout,
        should_stop=should_stop,
        runtime_dir=runtime_dir,
    )
    hotplug = read_hotplug_settings(kernel.sysfs)
    result = apply_device(kernel.sysfs, policy, name, hotplug, opts)
    # every write made, the executor's own (bind, undo) included, says what it acts on
    assert [p for r in result.results for p in step_problems(r.step, name)] == []
    return result


@dataclass(frozen=True)
class Block:
    index: int
    state: str
    zones: str  # valid_zones as the file reads ("" when absent)


def driver(kernel: FakeKernel, name: str = "dax0.0") -> str | None:
    """The name the device's driver link points to, None when unbound (or gone)."""
    return kernel.sysfs.link_name(f"bus/dax/devices/{name}/driver")


def memmap(kernel: FakeKernel, name: str = "dax0.0") -> str | None:
    return kernel.sysfs.read(f"bus/dax/devices/{name}/memmap_on_memory")


def device_block_indices(kernel: FakeKernel, name: str = "dax0.0") -> list[int]:
    """Indices of the whole memory blocks inside the device's mapping ranges (from sysfs)."""
    sysfs = kernel.sysfs
    size_text = sysfs.read(f"{MEMORY}/block_size_bytes")
    assert size_text is not None
    block = int(size_text, 16)
    base = f"bus/dax/devices/{name}"
    out: list[int] = []
    for entry in sysfs.listdir(base):
        if not entry.startswith("mapping") or entry == "mapping":
            continue
        start = int(sysfs.read(f"{base}/{entry}/start") or "", 16)
        end = int(sysfs.read(f"{base}/{entry}/end") or "", 16)
        out.extend(range(-(-start // block), (end + 1) // block))
    return sorted(out)


def blocks(kernel: FakeKernel, name: str = "dax0.0") -> list[Block]:
    """The device's memory blocks that exist in sysfs, with their state and valid_zones."""
    out = []
    for i in device_block_indices(kernel, name):
        rel = f"{MEMORY}/memory{i}"
        if not kernel.sysfs.exists(rel):
            continue
        state = kernel.sysfs.read(f"{rel}/state") or ""
        out.append(Block(i, state, kernel.sysfs.read(f"{rel}/valid_zones") or ""))
    return out


def move_block(kernel: FakeKernel, index: int, online_type: str) -> None:
    """What an operator does by hand: offline a block and online it as ``online_type``."""
    kernel.sysfs.write(f"{MEMORY}/memory{index}/state", "offline", timeout=5)
    kernel.sysfs.write(f"{MEMORY}/memory{index}/state", online_type)


def auto_online(kernel: FakeKernel) -> str | None:
    """The kernel's auto_online_blocks, as sysfs shows it."""
    return kernel.sysfs.read(f"{MEMORY}/auto_online_blocks")


def walk_order(indices: list[int]) -> list[int]:
    """The order daxd onlines and offlines a device's blocks in (planner.zone_walk_order):
    the second, the last down to the third, the first."""
    ordered = sorted(indices)
    return ordered if len(ordered) < 3 else [ordered[1], *ordered[:1:-1], ordered[0]]

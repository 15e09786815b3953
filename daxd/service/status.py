"""What the service publishes about each device and itself (plain values, no D-Bus types)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from daxd.kernel.model import CxlIdentity, HotplugSettings


class DeviceState(StrEnum):
    APPLIED = "applied"  # matches its rule
    PENDING = "pending"  # a change is planned or under way
    FAILED = "failed"  # the last attempt failed; LastError says why
    DRIFTED = "drifted"  # changed by someone else and not (yet) restored
    UNMANAGED = "unmanaged"  # no rule matches, or the rule says ignore
    REFUSED = "refused"  # a rule matches but acting would be unsafe (e.g. pmem without consent)


@dataclass(frozen=True)
class DeviceStatus:
    name: str  # "dax0.0"
    provider: str  # pmem / hmem / cxl / unknown
    size: int
    numa_node: int  # -1 when unknown
    target_node: int  # -1 when unknown
    driver: str  # "" when unbound
    mode: str  # observed: devdax / system-ram / unbound / other (Driver names it)
    zone: str  # of the online blocks: movable / normal / mixed / none (no block online)
    # In effect: the device's memmap lives on the device itself (its memmap_on_memory attribute
    # reads 1 and memory_hotplug.memmap_on_memory is on); False when the attribute is absent.
    memmap_on_memory: bool
    blocks_online: int
    blocks_total: int
    rule: str  # matched rule name, "" when none
    desired_mode: str  # devdax / system-ram / ignore / ""
    state: DeviceState
    last_error: str  # "" when none
    last_change: int  # CLOCK_REALTIME microseconds of the last state change, 0 when never
    blocks_movable: int = 0  # online blocks in ZONE_MOVABLE
    blocks_normal: int = 0  # online blocks in a kernel zone (Normal, DMA32, ...)
    cxl: CxlIdentity | None = None  # a CXL region's device: what identifies it (Device.Cxl)


@dataclass(frozen=True)
class ManagerStatus:
    version: str
    policy_path: str
    policy_error: str  # "" when the policy in force is valid
    policy_loaded_at: int  # CLOCK_REALTIME microseconds
    summary: str  # one ASCII line, as in STATUS=
    conflicts: tuple[str, ...] = ()  # other agents that also act on dax/memory (udev rules, ...)
    hotplug: HotplugSettings | None = None  # the kernel's hotplug settings as of the last pass
    diagnostics: tuple[str, ...] = ()  # what the last full read of sysfs found odd

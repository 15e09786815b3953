"""What the service publishes about each device and itself (plain values, no D-Bus types)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
    mode: str  # observed: devdax / system-ram / unbound / other
    zone: str  # observed zone of online blocks: movable / normal / mixed / ""
    memmap_on_memory: str  # "true" / "false" / "" (attribute absent)
    blocks_online: int
    blocks_total: int
    rule: str  # matched rule name, "" when none
    desired_mode: str  # devdax / system-ram / ignore / ""
    state: DeviceState
    last_error: str  # "" when none
    last_change: int  # CLOCK_REALTIME microseconds of the last state change, 0 when never


@dataclass(frozen=True)
class ManagerStatus:
    version: str
    policy_path: str
    policy_error: str  # "" when the policy in force is valid
    policy_loaded_at: int  # CLOCK_REALTIME microseconds
    summary: str  # one ASCII line, as in STATUS=
    conflicts: tuple[str, ...] = ()  # other agents that also act on dax/memory (udev rules, ...)

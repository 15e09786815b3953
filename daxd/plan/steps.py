"""The steps a plan is made of, and the per-device plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    OFFLINE_BLOCK = "offline-block"
    ONLINE_BLOCK = "online-block"
    UNBIND = "unbind"  # write the device to <driver>/unbind
    NEW_ID = "new-id"  # kmem/new_id: binds an unbound device at once
    REMOVE_ID = "remove-id"  # kmem/remove_id: so a re-probe does not pick kmem again
    BIND = "bind"  # <driver>/bind
    SET_MEMMAP = "set-memmap-on-memory"
    # auto_online_blocks for the length of one kmem bind (see planner._kmem_bind_steps)
    SET_AUTO_ONLINE = "set-auto-online"
    RESTORE_AUTO_ONLINE = "restore-auto-online"


@dataclass(frozen=True)
class Step:
    action: Action
    path: str  # sysfs attribute, relative to the sysfs root
    value: str
    reason: str
    block: int | None = None  # memoryN for block steps

    def describe(self) -> str:
        return f"write {self.value!r} to {self.path}  # {self.reason}"


class Verdict(StrEnum):
    IN_SYNC = "in-sync"  # matches its rule: nothing to do
    CHANGE = "change"  # steps to run
    REFUSED = "refused"  # a rule matches but acting is unsafe or impossible; nothing is done
    UNMANAGED = "unmanaged"  # no rule matches
    IGNORED = "ignored"  # the rule says mode: ignore


@dataclass(frozen=True)
class Desired:
    mode: str  # devdax / system-ram
    zone: str | None = None  # movable / normal / auto (system-ram)
    memmap_on_memory: bool | None = None
    online: bool = True


@dataclass(frozen=True)
class DevicePlan:
    device: str
    verdict: Verdict
    rule: str | None = None  # the matched rule's name
    rule_location: str | None = None
    desired: Desired | None = None
    steps: tuple[Step, ...] = ()
    reason: str = ""  # why refused / in sync / unmanaged
    notes: tuple[str, ...] = field(default=())
    # More steps follow once these ran (e.g. blocks that appear only after kmem binds).
    continues: bool = False


AUTO_ONLINE_PATH = "devices/system/memory/auto_online_blocks"


def block_path(index: int, attr: str = "state") -> str:
    return f"devices/system/memory/memory{index}/{attr}"


def driver_path(driver: str, attr: str) -> str:
    return f"bus/dax/drivers/{driver}/{attr}"


def device_path(name: str, attr: str) -> str:
    return f"bus/dax/devices/{name}/{attr}"

"""The steps a plan is made of, and the per-device plan."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum

from daxd.kernel.layout import AUTO_ONLINE_PATH, block_path, device_path, driver_path
from daxd.kernel.model import OnlineType


class Action(StrEnum):
    OFFLINE_BLOCK = "offline-block"
    ONLINE_BLOCK = "online-block"
    UNBIND = "unbind"  # write the device to <driver>/unbind
    NEW_ID = "new-id"  # kmem/new_id: binds an unbound device at once
    # <driver>/remove_id: before a conversion, so a re-probe does not pick the driver left; right
    # after a new_id bound the device, so the id does not outlive the bind (planner._forget_id)
    REMOVE_ID = "remove-id"
    BIND = "bind"  # <driver>/bind
    SET_MEMMAP = "set-memmap-on-memory"
    # auto_online_blocks for the length of one kmem bind (see planner._kmem_bind_steps)
    SET_AUTO_ONLINE = "set-auto-online"
    RESTORE_AUTO_ONLINE = "restore-auto-online"


# The attribute of bus/dax/drivers/<driver>/ each driver action writes.
_DRIVER_ATTR = {
    Action.UNBIND: "unbind",
    Action.NEW_ID: "new_id",
    Action.REMOVE_ID: "remove_id",
    Action.BIND: "bind",
}
BLOCK_ACTIONS = (Action.OFFLINE_BLOCK, Action.ONLINE_BLOCK)


@dataclass(frozen=True)
class Step:
    """One sysfs write.  ``path`` is for people (log, JSON); what the step acts on is in the
    typed fields, and the executor decides by those, never by the path."""

    action: Action
    path: str  # sysfs attribute, relative to the sysfs root
    value: str  # written as is
    reason: str
    _: KW_ONLY
    driver: str | None = None  # the driver of a bus/dax/drivers/<driver>/ write
    device: str | None = None  # the dax device written to a driver, or whose attribute is set
    block: int | None = None  # N of memoryN for block steps

    def __post_init__(self) -> None:
        # plain text: a StrEnum value would show as <OnlineType...> in every repr of the value
        object.__setattr__(self, "value", str(self.value))
        missing = None
        if self.action in _DRIVER_ATTR and (self.driver is None or self.device is None):
            missing = "a driver and a device"
        elif self.action in BLOCK_ACTIONS and self.block is None:
            missing = "a block"
        elif self.action is Action.SET_MEMMAP and self.device is None:
            missing = "a device"
        if missing:
            raise ValueError(f"a {self.action} step needs {missing}")

    def describe(self) -> str:
        return f"write {self.value!r} to {self.path}  # {self.reason}"


def driver_step(action: Action, driver: str, device: str, reason: str) -> Step:
    """Write ``device`` to the driver's bind, unbind, new_id or remove_id."""
    path = driver_path(driver, _DRIVER_ATTR[action])
    return Step(action, path, device, reason, driver=driver, device=device)


def block_step(index: int, value: OnlineType, reason: str) -> Step:
    """Write ``value`` to memory<index>/state: offline, or online as that type."""
    action = Action.OFFLINE_BLOCK if value is OnlineType.OFFLINE else Action.ONLINE_BLOCK
    return Step(action, block_path(index), value, reason, block=index)


def memmap_step(device: str, value: bool, reason: str) -> Step:
    path = device_path(device, "memmap_on_memory")
    return Step(Action.SET_MEMMAP, path, "1" if value else "0", reason, device=device)


def auto_online_step(action: Action, value: str, reason: str) -> Step:
    """SET_AUTO_ONLINE or RESTORE_AUTO_ONLINE: the kernel-wide auto_online_blocks."""
    return Step(action, AUTO_ONLINE_PATH, value, reason)


class Verdict(StrEnum):
    IN_SYNC = "in-sync"  # matches its rule: nothing to do
    CHANGE = "change"  # steps to run
    # A rule matches but acting is unsafe or impossible: nothing is done. (A part the kernel
    # cannot do, memmap_on_memory, refuses only that part: a change plan then says it in its
    # reason, and the plan is refused once the rest is done.)
    REFUSED = "refused"
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
    reason: str = ""  # why refused / in sync / unmanaged; a change: what of the rule it cannot do
    notes: tuple[str, ...] = field(default=())
    # More steps follow once these ran (e.g. blocks that appear only after kmem binds).
    continues: bool = False

"""What a loaded policy is: rules (selector + action) in order, first match wins; the CXL
regions daxd creates (daxd.policy.regions); and the layouts dynamic dax regions are carved by
(daxd.policy.layouts)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from daxd.kernel.model import DRIVER_KMEM, DaxDevice
from daxd.policy.regions import CxlRegionSpec
from daxd.policy.selectors import Selector
from daxd.policy.values import FieldProblem, parse_bool, parse_choice

if TYPE_CHECKING:
    from daxd.kernel.model import DaxRegion
    from daxd.policy.layouts import Layout


class Mode(StrEnum):
    DEVDAX = "devdax"
    SYSTEM_RAM = "system-ram"
    IGNORE = "ignore"


class Zone(StrEnum):
    MOVABLE = "movable"
    NORMAL = "normal"
    AUTO = "auto"  # let the kernel choose (its online_policy)


# Words operators reach for, and what the policy calls them.
_MODE_HINTS = {
    "kmem": "; 'kmem' is the driver, the mode is 'system-ram'",
    "device_dax": "; 'device_dax' is the driver, the mode is 'devdax'",
    "ram": "; did you mean 'system-ram'?",
    "memory": "; did you mean 'system-ram'?",
}
_ZONE_HINTS = {
    "zone_movable": "; did you mean 'movable'?",
    "online_movable": "; did you mean 'movable'?",
    "kernel": "; the kernel's 'online_kernel' zone is 'normal' here",
    "online_kernel": "; did you mean 'normal'?",
}


class Actions(BaseModel):
    """What to do with a matching device; shared by the YAML rule and the loaded Rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode
    zone: Zone = Zone.MOVABLE
    memmap_on_memory: bool | None = None  # None: leave the kernel's value
    online: bool = True
    allow_pmem_data_loss: bool = False  # consent to turn pmem into system-ram

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> Mode:
        return parse_choice(value, Mode, "mode", _MODE_HINTS)

    @field_validator("zone", mode="before")
    @classmethod
    def _zone(cls, value: object) -> Zone:
        return parse_choice(value, Zone, "zone", _ZONE_HINTS)

    @field_validator("memmap_on_memory", mode="before")
    @classmethod
    def _memmap(cls, value: object) -> bool | None:
        return None if value is None else parse_bool(value, "memmap_on_memory")

    @field_validator("online", "allow_pmem_data_loss", mode="before")
    @classmethod
    def _flag(cls, value: object, info: ValidationInfo) -> bool:
        return parse_bool(value, str(info.field_name))


class WrittenActions(Actions):
    """Actions as a file writes them (a rule, a layout's device): keys given without a value,
    and keys of system-ram given for another mode, are errors. Only for what is read from a
    file: code passes every field (a devdax Rule with the default zone) without being refused."""

    # How messages name the item, and the modes it may have.
    ITEM: ClassVar[str] = "rule"
    MODES: ClassVar[str] = "devdax, system-ram or ignore"

    @field_validator(
        "mode", "zone", "memmap_on_memory", "online", "allow_pmem_data_loss", mode="before"
    )
    @classmethod
    def _present(cls, value: object, info: ValidationInfo) -> object:
        # Leaving a key out is how to get its default; an empty value is more likely a slip.
        if value is None:
            what = (
                f"give {cls.MODES}"
                if info.field_name == "mode"
                else "leave the key out for the default"
            )
            raise FieldProblem(f"{info.field_name!r} has no value; {what}")
        return value

    @field_validator("zone", "memmap_on_memory", "online", "allow_pmem_data_loss")
    @classmethod
    def _needs_system_ram(cls, value: object, info: ValidationInfo) -> object:
        # Only keys actually written get here (defaults are not validated).
        mode = info.data.get("mode")
        if mode is not None and mode != Mode.SYSTEM_RAM:
            raise FieldProblem(
                f"{info.field_name!r} only applies to mode system-ram; this {cls.ITEM}'s mode "
                f"is {mode}",
                at_key=True,
            )
        return value


class Rule(Actions):
    """A loaded rule.  Built by the loader; code and tests may construct one directly."""

    name: str  # the rule's `name:`, or "rule N" (1-based, over all files in load order)
    location: str  # "FILE:LINE" where the rule starts
    selector: Selector = Selector()

    def matches(self, device: DaxDevice) -> bool:
        return self.selector.matches(device)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()  # files loaded, in load order
    regions: tuple[CxlRegionSpec, ...] = ()  # in load order; names are unique
    layouts: tuple[Layout, ...] = ()  # in load order; names are unique

    def match(self, device: DaxDevice) -> Rule | None:
        """The first rule that matches; None leaves the device alone.

        A device of a region the policy removes (``state: absent``) gets no rule of the file but
        :func:`release_rule`: its memory goes offline so the region can be torn down.
        """
        if device.cxl is not None:
            for spec in self.regions:
                if spec.state == "absent" and spec.covers(device.cxl):
                    return release_rule(spec, device)
        for rule in self.rules:
            if rule.matches(device):
                return rule
        return None

    def layout_for(self, region: DaxRegion) -> Layout | None:
        """The first layout that matches the dax region; None: the region is not carved."""
        return next((layout for layout in self.layouts if layout.matches(region)), None)


def release_rule(spec: CxlRegionSpec, device: DaxDevice) -> Rule:
    """kmem memory offline (unbinding kmem is the teardown's, once nothing is online); a
    /dev/daxR.N stays one: converting it would gain nothing and could hit a program using it."""
    mode = Mode.SYSTEM_RAM if device.driver == DRIVER_KMEM else Mode.DEVDAX
    return Rule(
        name=f"region {spec.name} (state: absent)",
        location=spec.location,
        mode=mode,
        online=mode is not Mode.SYSTEM_RAM,
    )

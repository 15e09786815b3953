"""The ``layouts:`` section: how a dynamic dax region (hmem, CXL) is carved into devices.

A layout matches a dax region with the selector keys of rules, read against the region as one
device (daxd.kernel.model.DaxRegion.whole), and lists the region's devices in address order:
each with a size (``1G``, ``25%`` of the region, or ``rest``), an ``align`` (the page size
/dev/daxX.Y maps with) and the actions of a rule. What a layout says by itself is checked when it
is loaded (``LayoutLedger``); what depends on the region (does it fit, is the region dynamic, does
one layout alone match it) when it is planned, with :func:`fit` for the sizes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daxd.kernel.model import DaxRegion
from daxd.policy.model import Mode, WrittenActions
from daxd.policy.regions import Problem, show_bytes
from daxd.policy.selectors import Selector
from daxd.policy.units import parse_quantity
from daxd.policy.values import FieldProblem, describe, parse_name, quote

# drivers/dax/bus.c dax_align_valid() on x86-64: PAGE_SIZE, PMD_SIZE and PUD_SIZE.
ALIGNS = {"4K": 4096, "2M": 2 << 20, "1G": 1 << 30}
SMALLEST_ALIGN = min(ALIGNS.values())
_ALIGNS_TEXT = "4K, 2M or 1G"
_SHARE = re.compile(r"(?P<num>[0-9]{1,3}(?:\.[0-9]{1,6})?)\s*%")
_SIZE_EXAMPLES = "a size (1G, 512M), a share of the region (25%) or rest"
_AUTO_NAME = re.compile(r"layout [0-9]+")  # what unnamed layouts are called
_DEVICES_EXAMPLE = "devices: [{size: 1G, mode: devdax}, {size: rest, mode: system-ram}]"


class SizeKind(StrEnum):
    BYTES = "bytes"
    SHARE = "share"  # a percentage of the whole region
    REST = "rest"  # what the other devices leave


@dataclass(frozen=True)
class LayoutSize:
    kind: SizeKind
    bytes: int = 0  # BYTES
    percent: Fraction = Fraction(0)  # SHARE: 0 < percent <= 100
    text: str = ""  # as written, for messages

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.kind is SizeKind.SHARE:
            return _percent(self.percent)
        return show_bytes(self.bytes) if self.kind is SizeKind.BYTES else "rest"


def parse_size(raw: object) -> LayoutSize:
    """``size:`` of a layout's device: bytes as sizes are written elsewhere, ``N%`` or ``rest``."""
    if isinstance(raw, LayoutSize):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw <= 0:
            raise FieldProblem(f"'size' must be more than 0 bytes, got {raw}")
        return LayoutSize(SizeKind.BYTES, bytes=raw, text=str(raw))
    if not isinstance(raw, str):
        raise FieldProblem(f"'size' must be {_SIZE_EXAMPLES}; got {describe(raw)}")
    text = raw.strip()
    if text == "rest":
        return LayoutSize(SizeKind.REST, text=text)
    if text.endswith("%"):
        share = _SHARE.fullmatch(text)
        if share is None:
            raise FieldProblem(f"'size' {quote(raw)} is not a share such as 25% or 12.5%")
        percent = Fraction(share["num"])
        if not 0 < percent <= 100:
            raise FieldProblem(
                f"'size' {quote(raw)}: a share is more than 0% and at most 100% of the region"
            )
        return LayoutSize(SizeKind.SHARE, percent=percent, text=text)
    size = parse_quantity(text)
    if size is None:
        hint = "; 'rest' is written in lower case" if text.lower() == "rest" else ""
        raise FieldProblem(f"'size' must be {_SIZE_EXAMPLES}; got {quote(raw)}{hint}")
    if size == 0:
        raise FieldProblem("'size' must be more than 0; leave the device out instead")
    return LayoutSize(SizeKind.BYTES, bytes=size, text=text)


def parse_align(raw: object) -> int:
    """An align the kernel takes, as a word (2M) or any size that equals one (2MiB, 2097152)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value: int | None = raw
    elif isinstance(raw, str):
        value = ALIGNS.get(raw.strip().upper())
        if value is None:
            try:
                value = parse_quantity(raw)
            except FieldProblem:
                value = None
    else:
        value = None
    if value not in ALIGNS.values():
        raise FieldProblem(
            f"'align' must be {_ALIGNS_TEXT} (the page sizes /dev/daxX.Y maps with); got "
            f"{describe(raw)}"
        )
    assert value is not None
    return value


class LayoutDevice(WrittenActions):
    """One device of a layout, as written and as loaded: its size, its align, its actions.

    Built from a file (or with ``model_validate`` from the same plain values); like a rule, it
    refuses system-ram keys given for devdax.
    """

    ITEM: ClassVar[str] = "device"
    MODES: ClassVar[str] = "devdax or system-ram"

    size: LayoutSize
    align: int | None = None  # bytes; None: the region's
    name: str | None = None  # a label for messages

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> LayoutSize:
        if value is None:
            raise FieldProblem(f"'size' has no value; give {_SIZE_EXAMPLES}")
        return parse_size(value)

    @field_validator("align", mode="before")
    @classmethod
    def _align(cls, value: object) -> int:
        if value is None:
            raise FieldProblem("'align' has no value; leave the key out for the region's align")
        return parse_align(value)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return parse_name(value)

    @field_validator("mode")
    @classmethod
    def _carved_mode(cls, value: Mode) -> Mode:
        if value is Mode.IGNORE:
            raise FieldProblem(
                "a layout's device is devdax or system-ram, not ignore; to keep part of the "
                "region unused, leave it out of the layout (the sizes need not fill the region)"
            )
        return value

    @field_validator("allow_pmem_data_loss")
    @classmethod
    def _no_pmem(cls, value: bool) -> bool:
        raise FieldProblem(
            "'allow_pmem_data_loss' does not apply to layouts: they carve hmem and CXL regions, "
            "and pmem regions cannot be carved (they are static)",
            at_key=True,
        )


class LayoutEntry(BaseModel):
    """One item of ``layouts:`` as written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    selector: Selector = Field(default_factory=Selector, alias="match")
    devices: tuple[LayoutDevice, ...]

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        name = parse_name(value)
        if _AUTO_NAME.fullmatch(name):
            raise FieldProblem(
                f"{quote(name)} is how unnamed layouts are called; pick another name"
            )
        return name

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: object) -> object:
        return {} if value is None else value  # `match:` with nothing under it: every region

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: object) -> object:
        if value is None:
            raise FieldProblem(
                f"'devices' has no value; list the region's devices: {_DEVICES_EXAMPLE}"
            )
        if not isinstance(value, list | tuple):
            raise FieldProblem(
                f"'devices' is a list of devices, each starting with '- '; got {describe(value)}"
            )
        if not value:
            raise FieldProblem(f"'devices' is empty; a layout has at least one: {_DEVICES_EXAMPLE}")
        return value


@dataclass(frozen=True)
class Layout:
    """A loaded layout. Built by the loader; code and tests may construct one directly."""

    name: str  # `name:`, or "layout N" (1-based over all files, in load order)
    location: str  # "FILE:LINE" where the layout starts
    selector: Selector
    devices: tuple[LayoutDevice, ...]  # in address order
    device_locations: tuple[str, ...]  # "FILE:LINE" of each device entry

    def matches(self, region: DaxRegion) -> bool:
        return self.selector.matches(region.whole())


def _entry_problems(entry: LayoutEntry) -> list[Problem]:
    """What the devices of one layout say together, each problem at the item concerned."""
    problems: list[Problem] = []
    rest: int | None = None
    shares = Fraction(0)
    labels: dict[str, int] = {}
    for index, device in enumerate(entry.devices):
        at = ("devices", index)
        size = device.size
        if device.name is not None:
            if device.name in labels:
                message = (
                    f"device name {quote(device.name)} is already used by device "
                    f"{labels[device.name] + 1} of this layout"
                )
                problems.append(((*at, "name"), message))
            labels.setdefault(device.name, index)
        if size.kind is SizeKind.REST:
            if rest is None:
                rest = index
            else:
                message = f"only one device can take the rest; device {rest + 1} already does"
                problems.append(((*at, "size"), message))
        elif size.kind is SizeKind.SHARE:
            before, shares = shares, shares + size.percent
            if shares > 100 >= before:
                message = f"the shares add up to {_percent(shares)}, more than the whole region"
                problems.append(((*at, "size"), message))
        elif device.align is not None and size.bytes % device.align:
            message = f"'size' {size} is not a multiple of its align {show_bytes(device.align)}"
            problems.append(((*at, "size"), message))
        elif size.bytes % SMALLEST_ALIGN:
            message = (
                f"'size' {size} is not a multiple of {show_bytes(SMALLEST_ALIGN)}, the smallest "
                "align"
            )
            problems.append(((*at, "size"), message))
    if rest is not None and shares == 100:
        message = "the shares take the whole region (100%): nothing is left for 'rest'"
        problems.append((("devices", rest, "size"), message))
    return problems


def _percent(value: Fraction) -> str:
    return f"{float(value):g}%"


class LayoutLedger:
    """The layouts of the files loaded so far, in load order; checks each new one by itself and
    that its name is new (layouts have names of their own: a rule may have the same)."""

    def __init__(self) -> None:
        self.layouts: list[Layout] = []
        self._named: dict[str, str] = {}  # name -> where it is first used

    def add(
        self, entry: LayoutEntry, location: str, device_locations: tuple[str, ...]
    ) -> list[Problem]:
        problems = _entry_problems(entry)
        name = entry.name or f"layout {len(self.layouts) + 1}"
        if name in self._named:
            message = f"layout name {quote(name)} is already used at {self._named[name]}"
            problems.append((("name",), message))
        self._named.setdefault(name, location)
        self.layouts.append(
            Layout(
                name=name,
                location=location,
                selector=entry.selector,
                devices=entry.devices,
                device_locations=device_locations,
            )
        )
        return problems


@dataclass(frozen=True)
class Fitted:
    """One device of a layout with its size resolved against a region."""

    index: int  # in the layout, from 0
    size: int  # bytes
    align: int  # bytes: the entry's, or the region's
    entry: LayoutDevice
    location: str  # "FILE:LINE" of the entry


def fit(
    layout: Layout, region_size: int, region_align: int, block_size: int | None
) -> tuple[Fitted, ...] | str:
    """Each device's size in bytes against a region of ``region_size`` bytes, or why the layout
    does not fit it.

    A share is of the whole region; the rest is what the others leave. Both are rounded down to
    the device's align and, for system-ram, to whole memory blocks of ``block_size`` (kmem adds
    whole blocks only). An align smaller than the region's is refused: with every device a
    multiple of the region's align, each device starts at a multiple of it (the kernel itself
    would take a smaller one and leave the devices after it misaligned).
    """
    if region_align <= 0:
        raise ValueError(f"a region's align is a positive number of bytes, not {region_align}")
    aligns = [region_align if d.align is None else d.align for d in layout.devices]
    for index, (entry, align) in enumerate(zip(layout.devices, aligns, strict=True)):
        if align < region_align:
            return (
                f"{_where(layout, index)}: align {show_bytes(align)} is smaller than the region's "
                f"{show_bytes(region_align)}; a device's align is at least its region's"
            )
        if entry.size.kind is SizeKind.BYTES and entry.size.bytes % align:
            whose = "the region's" if entry.align is None else "its"
            return (
                f"{_where(layout, index)}: {entry.size} is not a multiple of {whose} align "
                f"{show_bytes(align)}"
            )
    units = [_Unit.of(d, a, block_size) for d, a in zip(layout.devices, aligns, strict=True)]
    sizes: list[int | None] = []
    for index, entry in enumerate(layout.devices):
        size = entry.size
        if size.kind is SizeKind.BYTES:
            sizes.append(size.bytes)
        elif size.kind is SizeKind.SHARE:
            share = math.floor(region_size * size.percent / 100)
            if units[index].down(share) == 0:
                return (
                    f"{_where(layout, index)}: {size} of {show_bytes(region_size)} is "
                    f"{show_bytes(share)}, less than {units[index]}"
                )
            sizes.append(units[index].down(share))
        else:
            sizes.append(None)
    used = sum(s for s in sizes if s is not None)
    if used > region_size:
        return (
            f"the layout needs {show_bytes(used)}, more than the region's {show_bytes(region_size)}"
        )
    fitted = []
    for index, entry in enumerate(layout.devices):
        size_or_rest = sizes[index]
        if size_or_rest is None:
            left = region_size - used
            size_or_rest = units[index].down(left)
            if size_or_rest == 0:
                what = f"{show_bytes(left)}, less than {units[index]}," if left else "nothing"
                return (
                    f"{_where(layout, index)}: the other devices take {show_bytes(used)} of "
                    f"{show_bytes(region_size)}, which leaves {what} for 'rest'"
                )
        fitted.append(
            Fitted(
                index=index,
                size=size_or_rest,
                align=aligns[index],
                entry=entry,
                location=layout.device_locations[index],
            )
        )
    return tuple(fitted)


@dataclass(frozen=True)
class _Unit:
    """What a share or the rest of one device is rounded down to, and how to say it."""

    size: int
    text: str

    @classmethod
    def of(cls, entry: LayoutDevice, align: int, block_size: int | None) -> _Unit:
        if entry.mode is not Mode.SYSTEM_RAM or not block_size:
            return cls(align, f"its align {show_bytes(align)}")
        unit = math.lcm(align, block_size)
        if unit == align:
            return cls(align, f"its align {show_bytes(align)}")
        if unit == block_size:
            return cls(unit, f"one {show_bytes(unit)} memory block (kmem adds whole blocks)")
        return cls(unit, f"{show_bytes(unit)} (whole memory blocks at its align)")

    def down(self, size: int) -> int:
        return size // self.size * self.size

    def __str__(self) -> str:
        return self.text


def _where(layout: Layout, index: int) -> str:
    label = layout.devices[index].name
    named = f" {quote(label)}" if label else ""
    return f"device {index + 1}{named} ({layout.device_locations[index]})"


# Keys an operator may reach for (from daxctl and the rules), and what a layout has instead.
_SHARE_HINT = "; a share of the region is a size: size: 25%"
LAYOUT_HINTS = {
    "device": "; did you mean 'devices'?",
    "partitions": "; did you mean 'devices'?",
    "size": "; each device has its 'size', under 'devices:' (to match regions by their size: "
    "match: {size: ...})",
}
LAYOUT_DEVICE_HINTS = {
    "share": _SHARE_HINT,
    "percent": _SHARE_HINT,
    "percentage": _SHARE_HINT,
    "alignment": "; did you mean 'align'?",
    "driver": "; the 'mode' picks the driver: devdax (device_dax) or system-ram (kmem)",
    "count": "; write one item under 'devices:' per device",
}

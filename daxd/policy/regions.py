"""The ``regions:`` section: CXL regions daxd creates where the firmware does not (docs/policy.md).

A region is described by what outlives a boot: its memdevs' serial numbers (or the host bridge
a memdev sits below) and the root decoder, never memN or regionR.  Values are checked as they are
validated; how the values of a region fit together, and with the other regions, is checked by
``RegionLedger`` once the file validated, so each problem is reported at the item it concerns.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from daxd.kernel.model import CxlIdentity, CxlMemdev
from daxd.policy.selectors import parse_host_bridge, parse_serial, parse_window
from daxd.policy.units import Interval, parse_quantity
from daxd.policy.values import FieldProblem, describe, did_you_mean, parse_count, parse_name, quote

State = Literal["present", "absent"]
HostBridge = int | str  # a uid (52) or a name (pci0000:34), as the host_bridge selector takes it
Window = str | Interval  # a root decoder name or pattern, or its start, as the window selector

# What a CXL HDM decoder can be programmed with (its interleave ways and granularity encodings).
ALLOWED_WAYS = (1, 2, 3, 4, 6, 8, 12, 16)
GRANULARITIES = tuple(256 << n for n in range(7))  # 256 .. 16K bytes
# A region's size is a whole number of 256 MiB per memdev (the decoders' unit).
SIZE_GRANULE = 256 << 20

_MEMDEV_NAME = re.compile(r"(/dev/cxl/)?mem[0-9]+")
_WAYS_TEXT = "1, 2, 3, 4, 6, 8, 12 or 16"
_MEMDEV_EXAMPLE = "0x1000, {serial: 0x1000} or {host_bridge: 52}"
_MEMDEVS_EXAMPLE = "memdevs: [0x1000] or memdevs: [{serial: 0x1000}, {host_bridge: 52}]"
_RENAMED = (
    "memdev names such as {} change between boots; give its serial number ('cxl list -M' shows it)"
)


def show_bytes(value: int) -> str:
    """A size as the policy writes it, in the largest unit it is a whole number of."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


class MemdevRef(BaseModel):
    """One memdev of a region: by serial number, or as the one memdev below a host bridge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serial: int | None = None
    host_bridge: HostBridge | None = None

    @model_validator(mode="before")
    @classmethod
    def _written(cls, value: object) -> object:
        if isinstance(value, MemdevRef):
            return value
        if isinstance(value, dict):
            for key in ("serial", "host_bridge"):
                if key in value and value[key] is None:
                    raise FieldProblem(f"{key!r} has no value")
            if "serial" in value and "host_bridge" in value:
                raise FieldProblem(
                    "a memdev is given by 'serial' or by 'host_bridge', not both; the serial "
                    "number alone names it"
                )
            if not value:
                raise FieldProblem(f"empty memdev; write it as {_MEMDEV_EXAMPLE}")
            return value
        if isinstance(value, str) and _MEMDEV_NAME.fullmatch(value.strip()):
            raise FieldProblem(_RENAMED.format(quote(value)))
        if isinstance(value, str | int) and not isinstance(value, bool):
            try:
                return {"serial": parse_serial(value)}
            except FieldProblem as problem:
                if isinstance(value, str) and value.strip().lower().startswith("pci"):
                    raise FieldProblem(
                        f"{problem.message}; a host bridge is written {{host_bridge: {value}}}"
                    ) from None
                raise
        raise FieldProblem(f"a memdev is written {_MEMDEV_EXAMPLE}; got {describe(value)}")

    @field_validator("serial", mode="before")
    @classmethod
    def _serial(cls, value: object) -> int | None:
        if isinstance(value, str) and _MEMDEV_NAME.fullmatch(value.strip()):
            raise FieldProblem(_RENAMED.format(quote(value)))
        return None if value is None else parse_serial(value)

    @field_validator("host_bridge", mode="before")
    @classmethod
    def _host_bridge(cls, value: object) -> HostBridge | None:
        return None if value is None else parse_host_bridge(value)

    @model_validator(mode="after")
    def _one(self) -> MemdevRef:
        # Also for code that builds one: exactly one way of naming the memdev.
        if (self.serial is None) == (self.host_bridge is None):
            raise FieldProblem("a memdev is given by exactly one of 'serial' and 'host_bridge'")
        return self

    def __str__(self) -> str:
        if self.serial is not None:
            return f"serial 0x{self.serial:x}"  # hex, as sysfs and cxl list show it
        return f"host_bridge {self.host_bridge}"


class RegionEntry(BaseModel):
    """One item of ``regions:`` as written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    memdevs: tuple[MemdevRef, ...]
    interleave_ways: int | None = None  # None: as many as memdevs
    granularity: int | None = None  # None: the kernel's choice
    size: int | None = None  # None: all free capacity
    type: str = "ram"
    window: Window | None = None  # None: daxd picks a root decoder that reaches every memdev
    state: State = "present"

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return parse_name(value)

    @field_validator("memdevs", mode="before")
    @classmethod
    def _memdevs(cls, value: object) -> object:
        if value is None:
            raise FieldProblem(
                f"'memdevs' has no value; list the region's memdevs: {_MEMDEVS_EXAMPLE}"
            )
        if not isinstance(value, list | tuple):
            raise FieldProblem(
                f"'memdevs' is a list of memdevs, e.g. {_MEMDEVS_EXAMPLE}; got {describe(value)}"
            )
        if not value:
            raise FieldProblem(
                f"'memdevs' is empty; a region needs at least one: {_MEMDEVS_EXAMPLE}"
            )
        return value

    @field_validator("interleave_ways", mode="before")
    @classmethod
    def _ways(cls, value: object) -> int:
        _given(value, "interleave_ways")
        ways = parse_count(value, "'interleave_ways'", example=" such as 1, 2 or 4")
        if ways not in ALLOWED_WAYS:
            raise FieldProblem(
                f"'interleave_ways' {ways} is not one the CXL spec allows: {_WAYS_TEXT}"
            )
        return ways

    @field_validator("granularity", mode="before")
    @classmethod
    def _granularity(cls, value: object) -> int:
        _given(value, "granularity")
        granularity = _bytes(value, "'granularity'", "256, 4K or 8K")
        if granularity not in GRANULARITIES:
            choices = ", ".join(show_bytes(g) for g in GRANULARITIES)
            raise FieldProblem(
                f"'granularity' must be a power of two from 256 to 16K bytes ({choices}); got "
                f"{describe(value)}"
            )
        return granularity

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> int | None:
        _given(value, "size")
        if value == "all":
            return None
        size = _bytes(value, "'size'", "1G, 64GiB or all")
        if size == 0:
            raise FieldProblem(
                "'size' must be more than 0; for all free capacity leave it out or write all"
            )
        return size

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: object) -> str:
        _given(value, "type")
        if value == "ram":
            return "ram"
        if value == "pmem":
            raise FieldProblem("only ram regions are supported: daxd does not create pmem regions")
        hint = did_you_mean(value, ["ram"]) if isinstance(value, str) else ""
        if isinstance(value, str) and value.lower() in ("volatile", "system-ram", "system_ram"):
            hint = "; did you mean 'ram'?"
        raise FieldProblem(
            f"'type' must be ram, the only type daxd creates; got {describe(value)}{hint}"
        )

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object) -> Window:
        _given(value, "window")
        return parse_window(value)

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: object) -> State:
        _given(value, "state")
        if value == "present":
            return "present"
        if value == "absent":
            return "absent"
        hint = did_you_mean(value, ["present", "absent"]) if isinstance(value, str) else ""
        raise FieldProblem(f"'state' must be present or absent; got {describe(value)}{hint}")


def _given(value: object, key: str) -> None:
    # Leaving a key out is how to get its default; an empty value is more likely a slip.
    if value is None:
        raise FieldProblem(f"{key!r} has no value; leave the key out for the default")


def _bytes(value: object, what: str, examples: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FieldProblem(f"{what} must not be negative, got {value}")
        return value
    quantity = parse_quantity(value) if isinstance(value, str) else None
    if quantity is None:
        raise FieldProblem(
            f"{what} must be a number of bytes such as {examples}; got {describe(value)}"
        )
    return quantity


class CxlRegionSpec(BaseModel):
    """A loaded region: what daxd creates (``state: present``) or tears down (``absent``).

    Built by the loader, which has checked that ``interleave_ways`` equals the number of memdevs,
    is one CXL allows, and that ``size`` is a whole number of 256 MiB per memdev.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    location: str  # "FILE:LINE" where the region starts
    memdevs: tuple[MemdevRef, ...]  # as written; daxd orders them by the window's target_list
    interleave_ways: int
    granularity: int | None = None  # bytes; None: the kernel's choice
    size: int | None = None  # bytes; None: all free capacity
    type: str = "ram"
    window: Window | None = None  # None: daxd picks the root decoder
    state: State = "present"

    def covers(self, cxl: CxlIdentity) -> bool:
        """Whether the kernel region a dax device belongs to is this one: the same memdevs,
        each matched once (by serial, or by the host bridge it is below)."""
        if len(cxl.memdevs) != len(self.memdevs):
            return False
        left = list(cxl.memdevs)
        for ref in self.memdevs:
            hit = next((m for m in left if _is(ref, m)), None)
            if hit is None:
                return False
            left.remove(hit)
        return True


def _is(ref: MemdevRef, md: CxlMemdev) -> bool:
    if ref.serial is not None:
        return md.serial == ref.serial
    if isinstance(ref.host_bridge, str):
        return md.host_bridge == ref.host_bridge
    return md.host_bridge_uid == ref.host_bridge


Problem = tuple[tuple[str | int, ...], str]  # where in the region's item, and what is wrong
_MemdevKey = tuple[str, int | str | None]


def _key(ref: MemdevRef) -> _MemdevKey:
    # A uid and a name are not compared: which name a uid has is only known on the machine.
    if ref.serial is not None:
        return ("serial", ref.serial)
    return ("host_bridge", ref.host_bridge)


def _ways_problems(entry: RegionEntry) -> tuple[int | None, list[Problem]]:
    """The region's interleave ways, None when they are not valid, and why not."""
    count = len(entry.memdevs)
    ways = entry.interleave_ways
    if ways is not None and ways != count:
        noun = "memdev" if count == 1 else "memdevs"
        message = (
            f"'interleave_ways' is {ways} but the region has {count} {noun}; they must be "
            "equal (leave it out to take the number of memdevs)"
        )
        return None, [(("interleave_ways",), message)]
    if count not in ALLOWED_WAYS:
        message = f"{count} memdevs cannot be interleaved: CXL allows {_WAYS_TEXT} ways"
        return None, [(("memdevs",), message)]
    return count, []


class RegionLedger:
    """The regions of the files loaded so far, in load order.  Checks each new one: how its
    values fit together, that its name is new, and that a memdev it shares with another region
    is split between them by explicit sizes."""

    def __init__(self) -> None:
        self.regions: list[CxlRegionSpec] = []
        self._named: dict[str, str] = {}  # name -> where it is first used
        self._users: dict[_MemdevKey, CxlRegionSpec] = {}  # the first present region using it

    def add(self, entry: RegionEntry, location: str) -> list[Problem]:
        problems: list[Problem] = []
        if entry.name in self._named:
            message = (
                f"region name {quote(entry.name)} is already used at {self._named[entry.name]}"
            )
            problems.append((("name",), message))
        self._named.setdefault(entry.name, location)
        ways, found = _ways_problems(entry)
        problems += found
        if ways is not None and entry.size is not None and entry.size % (SIZE_GRANULE * ways):
            unit = show_bytes(SIZE_GRANULE * ways)
            each = "its memdev" if ways == 1 else f"each of its {ways} memdevs"
            message = (
                f"'size' must be a multiple of {unit} (256M for {each}); "
                f"{show_bytes(entry.size)} is not"
            )
            problems.append((("size",), message))
        spec = CxlRegionSpec(
            name=entry.name,
            location=location,
            memdevs=entry.memdevs,
            interleave_ways=entry.interleave_ways or len(entry.memdevs),
            granularity=entry.granularity,
            size=entry.size,
            type=entry.type,
            window=entry.window,
            state=entry.state,
        )
        problems += self._memdev_problems(spec)
        self.regions.append(spec)
        return problems

    def _memdev_problems(self, spec: CxlRegionSpec) -> list[Problem]:
        problems: list[Problem] = []
        first: dict[_MemdevKey, int] = {}
        for index, ref in enumerate(spec.memdevs):
            key = _key(ref)
            if key in first:
                message = f"{ref} is listed twice in this region (first as memdev {first[key] + 1})"
                problems.append((("memdevs", index), message))
                continue
            first[key] = index
            if spec.state == "absent":
                continue  # a region to tear down wants no capacity
            other = self._users.setdefault(key, spec)
            if other is not spec and (other.size is None or spec.size is None):
                message = (
                    f"{ref} is also a memdev of region {quote(other.name)} at {other.location}; "
                    "regions share a memdev only when both give a 'size' (without one, a region "
                    "takes all the free capacity)"
                )
                problems.append((("memdevs", index), message))
        return problems


# Keys an operator may reach for (from `cxl create-region` and `cxl list`), and the policy's.
_BY_SERIAL = "; memN names change between boots: list the memdev's serial number in 'memdevs'"
REGION_HINTS = {
    "memdev": "; did you mean 'memdevs'?",
    "mem": _BY_SERIAL,
    "targets": "; did you mean 'memdevs'?",
    "serial": "; serial numbers go in 'memdevs': memdevs: [0x1000]",
    "serials": "; serial numbers go in 'memdevs': memdevs: [0x1000]",
    "host_bridge": "; a host bridge goes in 'memdevs': memdevs: [{host_bridge: 52}]",
    "ways": "; did you mean 'interleave_ways'?",
    "interleave_granularity": "; did you mean 'granularity'?",
    "decoder": "; the root decoder a region is made in is its 'window'",
    "root_decoder": "; the root decoder a region is made in is its 'window'",
    "mode": "; a region's 'type' is ram; what becomes of its dax device is up to the rules",
    "match": "; a region names its memdevs in 'memdevs', rules have 'match'",
}
_SERIAL_KEY = "; memN names change between boots: give the memdev's serial, {serial: 0x1000}"
MEMDEV_HINTS = {
    "memdev": _SERIAL_KEY,
    "mem": _SERIAL_KEY,
    "name": _SERIAL_KEY,
    "uid": "; did you mean 'host_bridge'?",
    "hb": "; did you mean 'host_bridge'?",
    "sn": "; did you mean 'serial'?",
}

"""The ``match:`` mapping of a rule: which devices the rule is for.

Every selector given must hold.  A selector takes one item or a list of items; an item written
``"!item"`` is negated.  A list matches when any of its plain items matches (or it has none) and
none of its negated items does: ``[cxl, hmem]`` is either, ``"!pmem"`` anything but pmem, and
``["!dax0.0", "!dax1.0"]`` neither of the two.

The CXL selectors (``serial``, ``host_bridge``, ``window``, ``interleave_ways``) compare with what
stays the same when the kernel numbers memdevs, regions and dax devices otherwise (another boot,
a region made again): a device that is not a CXL region's never matches a plain item of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Annotated, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from daxd.kernel.model import CxlIdentity, DaxDevice, Provider
from daxd.policy.units import ADDRESS_EXAMPLES, SIZE_EXAMPLES, Interval, parse_interval
from daxd.policy.values import FieldProblem, describe, number_hint, parse_choice, parse_count

T = TypeVar("T")


class Term(BaseModel, Generic[T]):
    """One selector item: its value, whether it is negated, and how it was written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: T
    negated: bool = False
    text: str


def holds(terms: tuple[Term[T], ...], test: Callable[[T], bool]) -> bool:
    """Any plain item matches (or there is none), and no negated item does."""
    plain = [t.value for t in terms if not t.negated]
    if plain and not any(test(v) for v in plain):
        return False
    return not any(test(t.value) for t in terms if t.negated)


def _as_items(raw: object, info: ValidationInfo) -> object:
    """One item or a list of them; a scalar is validated as a one-item list."""
    if isinstance(raw, list | tuple):
        if not raw:
            raise FieldProblem(f"empty list; remove {info.field_name!r} to match any device")
        return raw
    if raw is None:
        raise FieldProblem(f"{info.field_name!r} has no value; remove it to match any device")
    if isinstance(raw, dict):
        raise FieldProblem(f"{info.field_name!r} takes a value or a list of values, not a mapping")
    return [raw]


def _item(cls: type[Term[T]], parse: Callable[[object], T]) -> BeforeValidator:
    def validate(raw: object) -> object:
        if isinstance(raw, Term):
            return raw
        if isinstance(raw, str) and raw.startswith("!"):
            return cls(value=parse(raw[1:].strip()), negated=True, text=raw)
        return cls(value=parse(raw), negated=False, text=str(raw))

    return BeforeValidator(validate)


def _pattern(example: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        if not isinstance(raw, str) or not raw:
            raise FieldProblem(f"expected a name or pattern such as {example}, got {describe(raw)}")
        if raw.startswith("/dev/"):
            raise FieldProblem(f"write device names without /dev/, e.g. {raw[5:]!r}")
        return raw

    return parse


def _region(raw: object) -> int:
    number = raw.removeprefix("region") if isinstance(raw, str) else raw
    return parse_count(number, "a region", example=" such as 3 or region3")


def _node(raw: object) -> int:
    return parse_count(raw, "a NUMA node")


def _provider(raw: object) -> Provider:
    return parse_choice(raw, Provider, "provider")


def _uuid(raw: object) -> str:
    try:
        if isinstance(raw, str):
            return str(UUID(raw))  # canonical lower case with dashes
    except ValueError:
        pass
    raise FieldProblem(
        f"expected a namespace or CXL region uuid such as 9d2e0b1c-..., got {describe(raw)}"
    )


_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_HOST_BRIDGE = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}", re.IGNORECASE)
_WINDOW_NAME = "decoder"  # root decoders are decoder0.N; a pattern must start with the word
_WINDOW_PATTERN = re.compile(r"decoder[0-9*?\[\]!-]+(\.[0-9*?\[\]!-]+)?")


def _number(raw: object, what: str, example: str) -> int:
    """A decimal count or a hexadecimal number ("0x1000"), as sysfs and cxl list print them."""
    if isinstance(raw, str) and _HEX.fullmatch(raw.strip()):
        return int(raw.strip(), 16)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw < 0:
        raise FieldProblem(f"{what} must not be negative, got {raw}")
    try:
        return parse_count(raw, what)
    except FieldProblem:
        hint = number_hint(raw) if isinstance(raw, str) else ""
        raise FieldProblem(
            f"expected {what} such as {example}, got {describe(raw)}{hint}"
        ) from None


def parse_serial(raw: object) -> int:
    return _number(raw, "a serial number", "0x1000 or 4096")


def parse_host_bridge(raw: object) -> int | str:
    """A uid (12, or 0xc as cxl list prints it) or a name (pci0000:0c)."""
    if isinstance(raw, str) and _HOST_BRIDGE.fullmatch(raw.strip()):
        return raw.strip().lower()
    example = "12 (its uid, as in a root decoder's target_list) or pci0000:0c"
    return _number(raw, "a host bridge", example)


def parse_window(raw: object) -> str | Interval:
    """A root decoder's name or pattern (decoder0.1, "decoder0.*"), or its start address."""
    if isinstance(raw, str) and raw.strip().startswith(_WINDOW_NAME):
        pattern = raw.strip()
        if not _WINDOW_PATTERN.fullmatch(pattern):
            raise FieldProblem(
                f"a window is a root decoder such as decoder0.1 or 'decoder0.*', got "
                f"{describe(raw)}"
            )
        return pattern
    return parse_interval(raw, "a window", "decoder0.1, 'decoder0.*' or 0x110000000")


def _ways(raw: object) -> int:
    ways = parse_count(raw, "interleave ways", example=" such as 1, 2 or 4")
    if ways == 0:
        raise FieldProblem("interleave ways must be at least 1")
    return ways


def _size(raw: object) -> Interval:
    return parse_interval(raw, "a size", SIZE_EXAMPLES)


def _address(raw: object) -> Interval:
    return parse_interval(raw, "an address", ADDRESS_EXAMPLES)


# A selector value: one item or a list of them, each item validated (and located) on its own.
Many = Annotated[tuple[T, ...], BeforeValidator(_as_items)]
_Device = Annotated[Term[str], _item(Term[str], _pattern("'dax1.*'"))]
_Namespace = Annotated[Term[str], _item(Term[str], _pattern("namespace0.0"))]
_Region = Annotated[Term[int], _item(Term[int], _region)]
_Node = Annotated[Term[int], _item(Term[int], _node)]
_Provider = Annotated[Term[Provider], _item(Term[Provider], _provider)]
_Uuid = Annotated[Term[str], _item(Term[str], _uuid)]
_Size = Annotated[Term[Interval], _item(Term[Interval], _size)]
_Address = Annotated[Term[Interval], _item(Term[Interval], _address)]
_Serial = Annotated[Term[int], _item(Term[int], parse_serial)]
_HostBridge = Annotated[Term[int | str], _item(Term[int | str], parse_host_bridge)]
_Window = Annotated[Term[str | Interval], _item(Term[str | Interval], parse_window)]
_Ways = Annotated[Term[int], _item(Term[int], _ways)]


class Selector(BaseModel):
    """What a device must look like for the rule to apply; empty matches every device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Many[_Device] = ()  # fnmatch pattern on the name, e.g. dax1.*
    namespace: Many[_Namespace] = ()  # fnmatch pattern on the pmem namespace, e.g. namespace0.*
    region: Many[_Region] = ()  # 3 or region3
    provider: Many[_Provider] = ()
    size: Many[_Size] = ()
    numa_node: Many[_Node] = ()
    target_node: Many[_Node] = ()
    uuid: Many[_Uuid] = ()  # pmem namespace uuid or CXL region uuid, any case
    address: Many[_Address] = ()  # the device's start (resource or any mapping start)
    # CXL: what outlives memN / regionR / daxR.0 numbers (docs/policy.md)
    serial: Many[_Serial] = ()  # any memdev's serial number
    host_bridge: Many[_HostBridge] = ()  # any memdev's host bridge: uid or pciDDDD:BB
    window: Many[_Window] = ()  # root decoder: fnmatch pattern on its name, or its start
    interleave_ways: Many[_Ways] = ()  # the region's interleave ways

    def matches(self, device: DaxDevice) -> bool:
        starts = {device.resource, *(r.start for r in device.ranges)} - {None}
        namespace = device.namespace
        cxl = device.cxl
        uuids = {u.lower() for u in (device.uuid, cxl.uuid if cxl else None) if u}
        return (
            holds(self.device, lambda p: fnmatchcase(device.name, p))
            and holds(self.namespace, lambda p: namespace is not None and fnmatchcase(namespace, p))
            and holds(self.region, lambda r: device.region_id == r)
            and holds(self.provider, lambda p: device.provider == p)
            and holds(self.size, lambda i: device.size in i)
            and holds(self.numa_node, lambda n: device.numa_node == n)
            and holds(self.target_node, lambda n: device.target_node == n)
            and holds(self.uuid, lambda u: u in uuids)
            and holds(self.address, lambda i: any(s in i for s in starts if s is not None))
            and holds(self.serial, lambda n: cxl is not None and n in cxl.serials)
            and holds(self.host_bridge, lambda h: cxl is not None and _below(cxl, h))
            and holds(self.window, lambda w: cxl is not None and _in_window(cxl, w))
            and holds(self.interleave_ways, lambda n: cxl is not None and cxl.interleave_ways == n)
        )

    def __str__(self) -> str:
        parts = []
        for key in type(self).model_fields:
            terms: tuple[Term[object], ...] = getattr(self, key)
            if terms:
                texts = [t.text for t in terms]
                shown = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
                parts.append(f"{key}: {shown}")
        return ", ".join(parts) or "every device"


def _below(cxl: CxlIdentity, bridge: int | str) -> bool:
    """Any memdev of the region is below that host bridge (uid, or name)."""
    if isinstance(bridge, str):
        return any(m.host_bridge == bridge for m in cxl.memdevs)
    return any(m.host_bridge_uid == bridge for m in cxl.memdevs)


def _in_window(cxl: CxlIdentity, window: str | Interval) -> bool:
    if isinstance(window, str):
        return fnmatchcase(cxl.window, window)
    return cxl.window_start is not None and cxl.window_start in window


# Keys an operator may reach for under `match:`, and what the policy has instead.
SELECTOR_HINTS = {
    "memdev": "; memN names change between boots: match the memdev's 'serial' instead",
    "mem": "; memN names change between boots: match the memdev's 'serial' instead",
    "decoder": "; the root decoder a region is made in is its 'window'",
    "root_decoder": "; the root decoder a region is made in is its 'window'",
    "cxl_region": "; regionR ids change when regions are made again: use 'serial', "
    "'host_bridge' or 'window'",
    "ways": "; did you mean 'interleave_ways'?",
    "hb": "; did you mean 'host_bridge'?",
    "sn": "; did you mean 'serial'?",
}

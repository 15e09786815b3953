"""The ``match:`` mapping of a rule: which devices the rule is for.

Every selector given must hold.  A selector takes one item or a list of items; an item written
``"!item"`` is negated.  A list matches when any of its plain items matches (or it has none) and
none of its negated items does: ``[cxl, hmem]`` is either, ``"!pmem"`` anything but pmem, and
``["!dax0.0", "!dax1.0"]`` neither of the two.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Annotated, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from daxd.kernel.model import DaxDevice, Provider
from daxd.policy.units import ADDRESS_EXAMPLES, SIZE_EXAMPLES, Interval, parse_interval
from daxd.policy.values import FieldProblem, describe, parse_choice, parse_count

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
    raise FieldProblem(f"expected a namespace uuid such as 9d2e0b1c-..., got {describe(raw)}")


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
    uuid: Many[_Uuid] = ()  # namespace uuid, any case
    address: Many[_Address] = ()  # the device's start (resource or any mapping start)

    def matches(self, device: DaxDevice) -> bool:
        starts = {device.resource, *(r.start for r in device.ranges)} - {None}
        namespace = device.namespace
        uuid = device.uuid.lower() if device.uuid else None
        return (
            holds(self.device, lambda p: fnmatchcase(device.name, p))
            and holds(self.namespace, lambda p: namespace is not None and fnmatchcase(namespace, p))
            and holds(self.region, lambda r: device.region_id == r)
            and holds(self.provider, lambda p: device.provider == p)
            and holds(self.size, lambda i: device.size in i)
            and holds(self.numa_node, lambda n: device.numa_node == n)
            and holds(self.target_node, lambda n: device.target_node == n)
            and holds(self.uuid, lambda u: uuid == u)
            and holds(self.address, lambda i: any(s in i for s in starts if s is not None))
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

"""daxd's records on D-Bus: plain JSON-shaped values <-> typed ``a{sv}``, both ways, in one place.

The D-Bus API sends what the JSON documents hold (an entry of `daxd apply --json`, a step of the
plan, the hotplug settings) as dictionaries of variants, typed so that a client never has to
guess:

- ``None`` is left out (a key the kernel or the plan does not give is absent, never sent as
  another type);
- an object becomes ``a{sv}``; a list of objects ``aa{sv}``; a list of strings ``as``;
- ``True``/``False`` are ``b``; strings ``s``; floats ``d``;
- integers are typed by key, from one table: sizes and serial numbers ``t``; counts, blocks, the
  region and a CXL region's interleave, positions and host bridge uids ``u``; NUMA nodes ``i``;
  any other integer ``x``.

:func:`from_dbus` undoes it for the command's client: variants unwrapped, and every key the
JSON entry has (:data:`APPLY_ENTRY`) back in its place, ``None`` where it was left out, so that
the entry renders (text and ``--json``) exactly as the one a local apply made.

Only dbus-fast's ``Variant`` and plain values here: the command's client path imports this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Variant

from daxd.kernel.model import HotplugSettings, OnlineType

# Integer keys and their D-Bus type; any other integer is "x".
UINT64_KEYS = frozenset({"size", "block_size", "block-size", "serial"})
UINT32_KEYS = frozenset(
    {
        "region", "block", "online", "total",
        "interleave_ways", "interleave_granularity", "position", "host_bridge_uid",
    }
)  # fmt: skip
INT32_KEYS = frozenset({"numa_node", "target_node"})
# Lists that hold objects even when empty ("aa{sv}"); any other empty list is "as".
RECORD_LISTS = frozenset({"steps", "ranges", "memdevs"})

_RANGES = {
    "t": (0, 2**64 - 1),
    "u": (0, 2**32 - 1),
    "i": (-(2**31), 2**31 - 1),
    "x": (-(2**63), 2**63 - 1),
}


def int_signature(key: str) -> str:
    if key in UINT64_KEYS:
        return "t"
    if key in UINT32_KEYS:
        return "u"
    if key in INT32_KEYS:
        return "i"
    return "x"


def to_dbus(record: Mapping[str, Any]) -> dict[str, Variant]:
    """``record`` (JSON-shaped: dicts, lists, str, int, float, bool, None) as ``a{sv}``.

    Raises ValueError for what has no place in a record: an integer out of its type's range, a
    list mixing objects and strings, a list of numbers, any other Python type.
    """
    out: dict[str, Variant] = {}
    for key, value in record.items():
        if value is None:
            continue
        signature, wire = _typed(key, value)
        out[key] = Variant(signature, wire)
    return out


def _typed(key: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, int):
        signature = int_signature(key)
        low, high = _RANGES[signature]
        if not low <= value <= high:
            raise ValueError(f"{key}: {value} does not fit D-Bus type {signature!r}")
        return signature, value
    if isinstance(value, float):
        return "d", value
    if isinstance(value, str):
        return "s", value
    if isinstance(value, Mapping):
        return "a{sv}", to_dbus(value)
    if isinstance(value, list | tuple):
        if all(isinstance(item, Mapping) for item in value) and (value or key in RECORD_LISTS):
            return "aa{sv}", [to_dbus(item) for item in value]
        if all(isinstance(item, str) for item in value):
            return "as", list(value)
        raise ValueError(f"{key}: a list in a record holds only objects or only strings")
    raise ValueError(f"{key}: {type(value).__name__} has no D-Bus type in a record")


def unwrap(value: Any) -> Any:
    """Variants (nested at any depth) as plain values."""
    while isinstance(value, Variant):
        value = value.value
    if isinstance(value, dict):
        return {str(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unwrap(v) for v in value]
    return value


@dataclass(frozen=True)
class Shape:
    """The keys of one kind of JSON object, in order, and the shapes of its nested objects
    (for a list of objects: the shape of each)."""

    keys: tuple[str, ...]
    nested: Mapping[str, Shape] = field(default_factory=dict)


# The entries of daxd/apply/report.py, key for key (tests/service/test_dbus_values.py checks).
BLOCKS = Shape(("online", "total"))
RANGE = Shape(("start", "end"))
DESIRED = Shape(("mode", "zone", "memmap_on_memory", "online"))
MEMDEV = Shape(("position", "memdev", "serial", "host_bridge", "host_bridge_uid"))
CXL = Shape(
    (
        "region", "uuid", "mode", "interleave_ways", "interleave_granularity", "window",
        "window_start", "memdevs",
    ),
    {"memdevs": MEMDEV},
)  # fmt: skip
STEP = Shape(("action", "path", "value", "block", "driver", "reason"))
RESULT_STEP = Shape((*STEP.keys, "ok", "error", "errno", "rollback"))
VIEW = Shape(
    ("mode", "driver", "zone", "memmap_on_memory", "memmap_on_memory_attribute", "blocks"),
    {"blocks": BLOCKS},
)
PLAN = Shape(
    ("verdict", "rule", "rule_location", "reason", "desired", "steps", "notes"),
    {"desired": DESIRED, "steps": STEP},
)
_DEVICE_KEYS = (
    "name", "region", "provider", "size", "numa_node", "target_node", "resource", "ranges",
    "namespace", "uuid", "cxl", *VIEW.keys, "rule",
)  # fmt: skip
_APPLY_KEYS = ("outcome", "error", "plan", "steps", "final")
_APPLY_NESTED = {
    "ranges": RANGE,
    "cxl": CXL,
    "blocks": BLOCKS,
    "plan": PLAN,
    "steps": RESULT_STEP,
    "final": VIEW,
}
APPLY_ENTRY = Shape((*_DEVICE_KEYS, *_APPLY_KEYS), _APPLY_NESTED)
# A device that was not there when the apply began has only its name and the outcome.
GONE_ENTRY = Shape(("name", *_APPLY_KEYS), _APPLY_NESTED)


def from_dbus(values: Mapping[str, Any], shape: Shape | None = None) -> dict[str, Any]:
    """An ``a{sv}`` record as JSON: with ``shape``, its keys in order, ``None`` for each one left
    out, and keys it does not know (from a newer daxd) after them as they came."""
    plain = {str(k): v for k, v in values.items()}
    if shape is None:
        return {k: unwrap(v) for k, v in plain.items()}
    out: dict[str, Any] = {}
    for key in (*shape.keys, *(k for k in plain if k not in shape.keys)):
        if key not in plain:
            out[key] = None
            continue
        value = unwrap(plain[key])
        inner = shape.nested.get(key)
        if inner is not None and isinstance(value, dict):
            value = from_dbus(value, inner)
        elif inner is not None and isinstance(value, list):
            value = [from_dbus(v, inner) if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out


def apply_entry_from_dbus(values: Mapping[str, Any]) -> dict[str, Any]:
    """A record of Manager.Apply or Device.Reconcile as the entry `daxd apply --json` prints."""
    return from_dbus(values, APPLY_ENTRY if "provider" in values else GONE_ENTRY)


def apply_entries_from_dbus(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [apply_entry_from_dbus(r) for r in records]


# --- the hotplug settings (Manager.Hotplug) ------------------------------------------------


def hotplug_record(hotplug: HotplugSettings | None) -> dict[str, Any]:
    """Manager.Hotplug's keys; a value the kernel does not show is None (and so left out)."""
    if hotplug is None:
        return {}
    auto_online = hotplug.auto_online_blocks
    return {
        "block-size": hotplug.block_size,
        "auto-online-blocks": None if auto_online is None else str(auto_online),
        "memmap-on-memory": hotplug.memmap_on_memory,
        "online-policy": hotplug.online_policy,
        "hotremove": hotplug.hotremove,
    }


def hotplug_from_dbus(values: Mapping[str, Any]) -> HotplugSettings:
    """Manager.Hotplug as the settings the JSON documents' ``hotplug`` object is made of."""
    plain = from_dbus(values)
    block_size = plain.get("block-size")
    auto_online = plain.get("auto-online-blocks")
    memmap = plain.get("memmap-on-memory")
    policy = plain.get("online-policy")
    return HotplugSettings(
        block_size=block_size if isinstance(block_size, int) else None,
        auto_online_blocks=OnlineType.parse(auto_online) if isinstance(auto_online, str) else None,
        memmap_on_memory=memmap if isinstance(memmap, bool) else None,
        online_policy=policy if isinstance(policy, str) else None,
        hotremove=plain.get("hotremove") is True,
    )

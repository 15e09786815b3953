"""`daxd status`: what the running daemon reports over D-Bus, else what sysfs shows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from daxd.cli.render import cxl_text, human_size, table

DEVICE_FIELDS = (
    "Name", "Provider", "Size", "NumaNode", "TargetNode", "Driver", "Mode", "Zone",
    "MemmapOnMemory", "BlocksOnline", "BlocksTotal", "BlocksMovable", "BlocksNormal", "Rule",
    "DesiredMode", "State", "LastError", "LastChange", "Cxl",
)  # fmt: skip

# The manager's properties, the devices' and the policy regions' (each sorted by name).
Published = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


async def _fetch(timeout: float) -> Published | None:
    """What daxd publishes, or None when daxd is not on the bus."""
    from dbus_fast import Message, MessageType

    from daxd.service.bus_names import (
        BUS_NAME,
        DEVICE_INTERFACE,
        MANAGER_PATH,
        OBJECT_MANAGER_INTERFACE,
        REGION_INTERFACE,
        connect_client,
        manager_properties,
    )
    from daxd.service.dbus_values import unwrap

    try:
        bus = await asyncio.wait_for(connect_client(), timeout)
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        reply = await asyncio.wait_for(
            bus.call(
                Message(
                    destination=BUS_NAME,
                    path=MANAGER_PATH,
                    interface=OBJECT_MANAGER_INTERFACE,
                    member="GetManagedObjects",
                )
            ),
            timeout,
        )
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            return None
        manager_props = await manager_properties(bus, timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        bus.disconnect()
    if manager_props is None:
        return None
    manager = {k: unwrap(v) for k, v in manager_props.items()}
    devices: list[dict[str, Any]] = []
    regions: list[dict[str, Any]] = []
    for interfaces in reply.body[0].values():
        for interface, found in ((DEVICE_INTERFACE, devices), (REGION_INTERFACE, regions)):
            props = interfaces.get(interface)
            if props is not None:
                found.append({k: unwrap(v) for k, v in props.items()})
    devices.sort(key=lambda d: str(d.get("Name", "")))
    regions.sort(key=lambda r: str(r.get("Name", "")))
    return manager, devices, regions


def daemon_status(timeout: float = 3.0) -> Published | None:
    try:
        return asyncio.run(_fetch(timeout))
    except Exception:  # any bus trouble means: ask sysfs instead
        return None


def status_text(
    manager: dict[str, Any],
    devices: list[dict[str, Any]],
    regions: Sequence[Mapping[str, Any]] = (),
) -> str:
    lines = [f"daxd {manager.get('Version', '?')}: {manager.get('Summary', '')}"]
    lines.append(f"policy: {manager.get('PolicyPath', '?')}")
    if manager.get("PolicyError"):
        lines.append("policy rejected (previous one in force):")
        lines += ["  " + ln for ln in str(manager["PolicyError"]).splitlines()]
    hotplug = manager.get("Hotplug")
    if isinstance(hotplug, dict) and hotplug:
        lines.append("hotplug: " + hotplug_text(hotplug))
    for c in manager.get("Conflicts", []):
        lines.append(f"conflict: {c}")
    for d in manager.get("Diagnostics", []):
        lines.append(f"sysfs: {d}")
    # The policy's regions first: the devices they bring follow from them (as `daxd list`).
    lines += [region_line(r) for r in regions]
    if devices:
        rows = [
            ["DEVICE", "PROVIDER", "SIZE", "MODE", "ZONE", "ONLINE", "MOVABLE", "NORMAL",
             "MEMMAP", "RULE", "STATE"]
        ]  # fmt: skip
        for d in devices:
            memmap = d.get("MemmapOnMemory")
            rows.append(
                [
                    str(d.get("Name")),
                    str(d.get("Provider")),
                    human_size(int(d.get("Size", 0))),
                    str(d.get("Mode")),
                    str(d.get("Zone") or "-"),
                    f"{d.get('BlocksOnline')}/{d.get('BlocksTotal')}",
                    str(d.get("BlocksMovable", "-")),
                    str(d.get("BlocksNormal", "-")),
                    "-" if memmap is None else "on device" if memmap else "no",
                    str(d.get("Rule") or "-"),
                    str(d.get("State")),
                ]
            )
        lines.append(table(rows))
        for d in devices:
            if d.get("Cxl"):
                lines.append(f"{d.get('Name')}: cxl: {cxl_text(d['Cxl'])}")
        for d in devices:
            if d.get("LastError"):
                lines.append(f"{d.get('Name')}: {d.get('LastError')}")
    else:
        lines.append("no DAX devices")
    return "\n".join(lines)


def region_line(region: Mapping[str, Any]) -> str:
    """One org.daxd.Daxd1.Region in a line: ``region NAME: STATE (regionR): REASON``."""
    line = f"region {region.get('Name')}: {region.get('State')}"
    if region.get("Region"):
        line += f" ({region['Region']})"
    if region.get("Reason"):
        line += f": {region['Reason']}"
    if region.get("LastError"):
        line += f"; error: {region['LastError']}"
    return line


def hotplug_text(hotplug: dict[str, Any]) -> str:
    """Manager.Hotplug in one line: the keys the kernel shows."""
    parts = []
    if isinstance(hotplug.get("block-size"), int):
        parts.append(f"block size {human_size(hotplug['block-size'])}")
    for key in ("auto-online-blocks", "online-policy"):
        if key in hotplug:
            parts.append(f"{key} {hotplug[key]}")
    if "memmap-on-memory" in hotplug:
        parts.append(f"memmap-on-memory {'on' if hotplug['memmap-on-memory'] else 'off'}")
    if "hotremove" in hotplug:
        parts.append("hot-remove" if hotplug["hotremove"] else "no hot-remove")
    return ", ".join(parts)


def status_json(
    manager: dict[str, Any],
    devices: list[dict[str, Any]],
    regions: Sequence[Mapping[str, Any]] = (),
) -> str:
    return json.dumps(
        {"format": 1, "kind": "status", "source": "daemon", "manager": manager,
         "devices": devices, "regions": [dict(r) for r in regions]},
        indent=2,
    )  # fmt: skip

"""Where things are in sysfs: every path daxd reads or writes, relative to the sysfs root.

The one module that knows the layout (Linux 6.12): the dax bus (drivers/dax/bus.c), the legacy
dax class (dax_pmem_compat), memory blocks and the hotplug knobs (drivers/base/memory.c,
mm/memory_hotplug.c).  Attribute names inside a device or block directory are the callers'
(they are what is read); how directories are named and nested is here.
"""

from __future__ import annotations

import posixpath
import re

# --- the dax bus ---------------------------------------------------------------------------------
DAX_BUS = "bus/dax"
DAX_DEVICES = f"{DAX_BUS}/devices"
DAX_DRIVERS = f"{DAX_BUS}/drivers"
# The pre-5.1 device model (/sys/class/dax): devices only, no drivers to bind.
DAX_CLASS = "class/dax"
# bus.c names devices "dax%d.%d" (region id, device id); anything else is not a dax device.
DEVICE_NAME = re.compile(r"^dax([0-9]+)\.([0-9]+)\Z")
MAPPING_NAME = re.compile(r"^mapping([0-9]+)\Z")  # mappingN/{start,end} below a device


def device_dir(name: str) -> str:
    return f"{DAX_DEVICES}/{name}"


def legacy_device_dir(name: str) -> str:
    return f"{DAX_CLASS}/{name}"


def device_path(name: str, attr: str) -> str:
    """bus/dax/devices/<name>/<attr>"""
    return f"{DAX_DEVICES}/{name}/{attr}"


def driver_path(driver: str, attr: str) -> str:
    """bus/dax/drivers/<driver>/<attr>: bind, unbind, new_id, remove_id."""
    return f"{DAX_DRIVERS}/{driver}/{attr}"


def region_parent(devpath: str, *, legacy: bool = False) -> str:
    """The device a dax device's region hangs on, from the dax device's real path: its parent;
    in the class model the device sits one level deeper (<parent>/dax/daxX.Y, libdaxctl
    dax_region_path())."""
    parent = posixpath.dirname(devpath)
    return posixpath.dirname(parent) if legacy else parent


def region_path(parent: str, attr: str) -> str:
    """An attribute of the dax region whose device ``parent`` is (its real path)."""
    return f"{parent}/dax_region/{attr}"


# --- nvdimm (pmem) ------------------------------------------------------------------------------
def namespace_path(nd_dax: str, namespace: str, attr: str) -> str:
    """An attribute of a namespace: a sibling of the nd_dax device that claims it."""
    return posixpath.join(posixpath.dirname(nd_dax), namespace, attr)


# --- memory blocks and hotplug ------------------------------------------------------------------
MEMORY = "devices/system/memory"
BLOCK_SIZE_PATH = f"{MEMORY}/block_size_bytes"
AUTO_ONLINE_PATH = f"{MEMORY}/auto_online_blocks"
HOTPLUG_PARAMS = "module/memory_hotplug/parameters"
_BLOCK_NAME = re.compile(r"^memory([0-9]+)\Z")


def block_dir(index: int) -> str:
    return f"{MEMORY}/memory{index}"


def block_path(index: int, attr: str = "state") -> str:
    """devices/system/memory/memory<index>/<attr>"""
    return f"{MEMORY}/memory{index}/{attr}"


def block_index(entry: str) -> int | None:
    """N of a ``memoryN`` entry of MEMORY; None for the other entries (block_size_bytes, ...)."""
    m = _BLOCK_NAME.match(entry)
    return int(m.group(1)) if m else None


def hotplug_param(name: str) -> str:
    """A memory_hotplug module parameter: online_policy, memmap_on_memory."""
    return f"{HOTPLUG_PARAMS}/{name}"

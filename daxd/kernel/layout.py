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


def region_dir(parent: str) -> str:
    """The dax region's attribute group on its device ``parent`` (a real path)."""
    return f"{parent}/dax_region"


def region_path(parent: str, attr: str) -> str:
    """An attribute of the dax region whose device ``parent`` is (its real path)."""
    return f"{region_dir(parent)}/{attr}"


# --- nvdimm (pmem) ------------------------------------------------------------------------------
def namespace_path(nd_dax: str, namespace: str, attr: str) -> str:
    """An attribute of a namespace: a sibling of the nd_dax device that claims it."""
    return posixpath.join(posixpath.dirname(nd_dax), namespace, attr)


# --- cxl (drivers/cxl/core: port.c, region.c, memdev.c) -----------------------------------------
# A CXL RAM region's dax device (drivers/dax/cxl.c):
#   devices/platform/ACPI0017:00/root0/decoder0.N/regionR/dax_regionR/daxR.0
# with the root decoder decoder0.N (one per CXL window) as the region's parent. The region's
# targetK attributes name endpoint decoders (decoderE.D), children of the endpoint port
# endpointE, whose ``uport`` link leads to the memdev below its PCI host bridge:
#   devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem1
CXL_DEVICES = "bus/cxl/devices"
CXL_REGION_NAME = re.compile(r"^region([0-9]+)\Z")
CXL_DAX_REGION_NAME = re.compile(r"^dax_region([0-9]+)\Z")
CXL_DECODER_NAME = re.compile(r"^decoder[0-9]+\.[0-9]+\Z")
CXL_TARGET_NAME = re.compile(r"^target([0-9]+)\Z")
CXL_MEMDEV_NAME = re.compile(r"^mem[0-9]+\Z")
HOST_BRIDGE_NAME = re.compile(r"^pci[0-9a-f]{4}:[0-9a-f]{2}\Z")


def cxl_device_dir(name: str) -> str:
    """bus/cxl/devices/<name>: a link to a memdev, port, decoder or region."""
    return f"{CXL_DEVICES}/{name}"


def host_bridge_uid_path(bridge: str) -> str:
    """The ACPI _UID of a PCI host bridge (``pci0000:0c``): what root decoders' target_list
    and root0's ``dportN`` name it by."""
    return f"devices/{bridge}/firmware_node/uid"


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

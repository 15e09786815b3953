"""What an errno from a sysfs write means for that particular file."""

from __future__ import annotations

import errno
import os

# (file name or path suffix, errno) -> what the kernel is telling us there.
_MEANINGS: dict[tuple[str, int], str] = {
    # drivers/base/bus.c bind_store(): ENODEV when there is no such device or the driver does not
    # match it; otherwise the probe's own error (drivers/base/dd.c device_driver_attach()).
    ("kmem/bind", errno.ENODEV): "no such device, or kmem has no id for it (write it to new_id)",
    ("kmem/bind", errno.EBUSY): (
        "the device is bound to another driver, or its range is still reserved by memory kmem "
        "could not hot-remove earlier (only a reboot frees it)"
    ),
    ("kmem/bind", errno.EINVAL): "the device has no target node, or no whole memory block fits",
    ("kmem/bind", errno.ENXIO): "the device has size 0 (a region seed)",
    ("new_id", errno.EINVAL): "malformed device name",
    ("remove_id", errno.EINVAL): "malformed device name",
    ("kmem/unbind", errno.ENODEV): "the device is not bound to kmem",
    ("device_dax/bind", errno.EBUSY): (
        "the device is bound to another driver (kmem?), or its range is still reserved by memory "
        "kmem could not hot-remove earlier (only a reboot frees it)"
    ),
    ("device_dax/bind", errno.ENODEV): (
        "no such device, or device_dax does not match it (devices of hmem and CXL regions need "
        "device_dax/new_id)"
    ),
    ("device_dax/bind", errno.ENXIO): "the device has size 0 (a region seed)",
    ("device_dax/unbind", errno.ENODEV): "the device is not bound to device_dax",
    ("memmap_on_memory", errno.EBUSY): "kmem is bound; the value can only change while it is not",
    ("memmap_on_memory", errno.EOPNOTSUPP): (
        "the kernel does not support it (memory_hotplug.memmap_on_memory=N, or the architecture "
        "cannot place the memmap on hot-added memory)"
    ),
    ("memmap_on_memory", errno.EINVAL): "the value is not a boolean",
    ("state", errno.EINVAL): (
        "the block is already in that state, the word is not a valid state, or the block cannot "
        "be offlined (memory holes, several zones, no CONFIG_MEMORY_HOTREMOVE)"
    ),
    ("state", errno.EBUSY): "pages in the block could not be migrated (pinned or unmovable)",
    ("state", errno.ENOMEM): "not enough free memory elsewhere to migrate the block's pages",
    ("state", errno.EPERM): "the block cannot be offlined (boot memory or not removable)",
    ("state", errno.EINTR): "interrupted before the block went offline",
    # drivers/base/core.c online_store(): kstrtobool(); the current state again is accepted.
    ("online", errno.EINVAL): (
        "the value is not a boolean, or the block cannot be offlined (memory holes, several zones)"
    ),
}


def errno_name(err: int) -> str:
    """The kernel's name: EOPNOTSUPP, not Python's ENOTSUP alias of the same number."""
    if err == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, str(err))


def explain_write_error(rel: str, value: str, err: int) -> str:
    name = errno_name(err)
    meaning = None
    for (suffix, code), text in _MEANINGS.items():
        if code == err and (rel == suffix or rel.endswith("/" + suffix)):
            meaning = text
            break
    detail = meaning or os.strerror(err)
    return f"writing {value!r} to {rel} failed with {name}: {detail}"

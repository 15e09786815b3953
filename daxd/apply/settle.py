"""Waiting for the kernel to finish adding a device's memory before planning it.

kmem hot-adds a new device's memory inside its probe: block after block appears, then (with
auto_online_blocks) goes online, and only then does udev hear ``bind DRIVER=kmem``. With
memmap_on_memory in effect that takes long (0.3 s per 128 MiB block in the CXL lab, where the
memmap is written into the emulated device), and the dax device's ``add`` event comes first. The
``driver`` link already points to kmem meanwhile (really_probe() links it before the probe). A
plan made from such a moment is stale at once: daxd would online blocks the kernel onlines a
moment later (EINVAL), or miss the blocks still to come.

So a device whose memory is still arriving waits, for as long as the kernel makes progress and at
most :data:`SETTLE_LIMIT` seconds; then daxd plans anyway and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from daxd.kernel.blocks import block_intervals
from daxd.kernel.model import DRIVER_KMEM, BlockState, DaxDevice, HotplugSettings, MemoryBlock
from daxd.kernel.scan import DeviceReading, read_device
from daxd.kernel.sysfs import Sysfs

log = logging.getLogger("daxd.apply")

SETTLE_LIMIT = 10.0  # seconds at most
SETTLE_QUIET = 2.0  # ...and no longer than this without any change in what the kernel shows
SETTLE_POLL = 0.1
# States a block rests in; any other (a "going-online", an unknown word) is on its way.
_RESTING = (BlockState.ONLINE, BlockState.OFFLINE, BlockState.GOING_OFFLINE)


def unsettled(
    device: DaxDevice,
    blocks: tuple[MemoryBlock, ...],
    hotplug: HotplugSettings,
    *,
    bind_pending: bool = False,
) -> str | None:
    """Why the kernel may still be adding this device's memory, or None when it is done.

    Only a device bound to kmem: its blocks still appearing (fewer than the whole blocks of its
    ranges), a block in a passing state, or (``bind_pending``) udev announced the device but not
    yet kmem's bind. A block another writer is taking offline (going-offline) is no kernel
    hot-add: the drift rules wait for that one.
    """
    if device.driver != DRIVER_KMEM:
        return None
    moving = [b for b in blocks if b.state not in _RESTING]
    if moving:
        return f"memory{moving[0].index} reads {moving[0].state}"
    if hotplug.block_size:
        expected = sum(b - a + 1 for a, b in block_intervals(device.ranges, hotplug.block_size))
        if len(blocks) < expected:
            return f"kmem has added {len(blocks)} of its {expected} memory blocks so far"
    if bind_pending:
        return "udev has not reported kmem's bind yet (the kernel may still be onlining blocks)"
    return None


def progress(reading: DeviceReading) -> tuple[object, ...]:
    """What changes while the kernel adds memory: the driver, the blocks and their states."""
    driver = reading.device.driver if reading.device is not None else None
    return (driver, tuple((b.index, str(b.state)) for b in reading.blocks))


@dataclass(frozen=True)
class Settled:
    reading: DeviceReading  # the last reading
    waited: float  # seconds
    left: str | None  # still unsettled when the wait ended (gave up): why


def wait_settled(
    sysfs: Sysfs,
    name: str,
    hotplug: HotplugSettings,
    reading: DeviceReading,
    *,
    bind_pending: Callable[[], bool] = lambda: False,
    stop: threading.Event | None = None,
    skip: Callable[[tuple[object, ...]], bool] = lambda _: False,
    limit: float = SETTLE_LIMIT,
    quiet: float = SETTLE_QUIET,
    poll: float = SETTLE_POLL,
) -> Settled:
    """Re-read the device until :func:`unsettled` says nothing, the kernel made no progress for
    ``quiet`` seconds, ``limit`` seconds passed, or ``stop`` is set. ``skip(progress)``: True
    for a state given up on before (no waiting again for what does not move)."""
    started = time.monotonic()

    def why(r: DeviceReading) -> str | None:
        if r.device is None:
            return None
        return unsettled(r.device, r.blocks, hotplug, bind_pending=bind_pending())

    left = why(reading)
    if left is None or skip(progress(reading)):
        return Settled(reading, 0.0, left)
    log.info("%s: waiting for the kernel to finish adding its memory: %s", name, left)
    seen, moved = progress(reading), started
    while True:
        if stop is not None:
            if stop.wait(poll):
                break
        else:
            time.sleep(poll)
        reading = read_device(sysfs, name, hotplug)
        left = why(reading)
        now = time.monotonic()
        if left is None:
            log.info("%s: the kernel is done after %.1f s", name, now - started)
            return Settled(reading, now - started, None)
        if progress(reading) != seen:
            seen, moved = progress(reading), now
        if now - started >= limit or now - moved >= quiet:
            break
    waited = time.monotonic() - started
    log.warning("%s: planning although the kernel is not done after %.1f s: %s", name, waited, left)
    return Settled(reading, waited, left)

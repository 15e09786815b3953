"""kmem taking a new device slowly, as Linux 6.12 does with memmap_on_memory in effect.

[cxl-lab] With the memmap placed on the device, the kernel is still adding and onlining blocks
(0.3 s per 128 MiB block under emulation) when the dax device's ``add`` event arrives: blocks
appear and go online one after another, and ``bind DRIVER=kmem`` comes after the blocks. The
``driver`` link points to kmem all along: really_probe() links device and driver before it calls
the probe (driver_sysfs_add()), and reports the bind once the probe returns (driver_bound()).

    add = GradualKmemAdd(kernel, kernel.add_cxl_device(bound=None), interval=0.05)
    add.start()        # (after the add uevent) the driver link; no block yet
    ...                # each sysfs read first does the steps that are due by then
    add.finish()       # the rest at once

Each step (one block added, one block onlined, the bind) is due ``interval`` seconds after the
one before. They are done when sysfs is read (``FakeSysfs.before_read``), in the reading thread,
so that no reader finds a file half-written; the uevents go to the kernel's listener as usual.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from tests.fakekernel.daxbus import KMEM, FakeDevice
from tests.fakekernel.memory import FakeBlock

if TYPE_CHECKING:
    from tests.fakekernel.kernel import FakeKernel


class GradualKmemAdd:
    def __init__(self, kernel: FakeKernel, device: FakeDevice, interval: float) -> None:
        self.kernel = kernel
        self.device = device
        self.interval = interval
        self._steps: list[tuple[str, int]] = []
        self._done = 0
        self._t0 = 0.0
        self._lock = threading.Lock()
        self.writes_before_bind: int | None = None  # len(kernel.writes) when the bind came

    @property
    def done(self) -> bool:
        return self._done == len(self._steps) and bool(self._steps)

    def start(self) -> None:
        """device_add(): the add uevent; then the probe starts: kmem linked, ranges reserved."""
        kernel, bus, d = self.kernel, self.kernel.bus, self.device
        if d.name not in bus.devices:  # else added already, unbound (add_cxl_device(bound=None))
            bus.add_device(d, None)  # the add uevent, no probe yet
        assert d.driver is None
        d.driver = KMEM
        bus.render_device(d)
        kernel.tree.link(f"bus/dax/drivers/{KMEM}/{d.name}", d.devpath)
        bs = kernel.config.block_size
        indices: list[int] = []
        for i, (s, e) in enumerate(d.ranges):  # dev_dax_kmem_probe(): whole blocks per range
            start, end = -(-s // bs) * bs, (e + 1) // bs * bs - 1
            if start < end:
                bus.reserved[(start, end)] = f"{d.name} ({KMEM})"
                d.kmem_ranges[i] = (start, end)
                indices += list(kernel.memory.block_range(start, end))
        bus._group += 1
        self._group = bus._group
        self._steps = [("add", i) for i in indices]
        if kernel.config.auto_online_blocks != "offline":
            self._steps += [("online", i) for i in indices]
        self._steps.append(("bind", -1))
        self._t0 = time.monotonic()
        kernel.sysfs.before_read = self.catch_up

    def catch_up(self) -> None:
        """Do every step due by now."""
        with self._lock:
            now = time.monotonic()
            while self._done < len(self._steps):
                if now < self._t0 + (self._done + 1) * self.interval:
                    return
                self._step(*self._steps[self._done])
                self._done += 1

    def finish(self) -> None:
        with self._lock:
            while self._done < len(self._steps):
                self._step(*self._steps[self._done])
                self._done += 1

    def _step(self, what: str, index: int) -> None:
        kernel, memory, d = self.kernel, self.kernel.memory, self.device
        node = d.region.target_node
        if what == "add":  # add_memory_resource(): one block after another with its memmap
            b = FakeBlock(index, node, group=self._group)
            memory.blocks[index] = b
            memory.render_block(b)
            kernel.events.emit("add", "memory", b.devpath)
            memory.render_node(node)
        elif what == "online":  # online_memory_block() for auto_online_blocks
            memory.online(index, kernel.config.auto_online_blocks)
        else:  # driver_bound(): the probe returned
            self.writes_before_bind = len(kernel.writes)
            kernel.sysfs.before_read = None
            kernel.events.emit("bind", "dax", d.devpath, **kernel.bus._props(d), DRIVER=KMEM)

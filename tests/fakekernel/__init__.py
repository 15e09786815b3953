"""A fake Linux 6.12 dax bus and memory-hotplug sysfs for tests.

FakeKernel(base, block_size=, boot_memory=, auto_online_blocks=, online_policy=,
memmap_on_memory=, hotremove=, movable_node=) builds base/sys and base/proc.
Builders: add_pmem_device, add_hmem_device, add_cxl_device, add_seed_device, add_legacy_device,
remove_device, recreate_device; the CXL machine: add_cxl_host_bridge, add_cxl_memdev,
add_cxl_window, destroy_cxl_region (regions are also made and torn down by the writes of
``cxl create-region``/``destroy-region``, which handle_write answers).  Knobs:
configure(**HotplugConfig fields), non_root.  Faults: fail(glob, errno, times),
block_offline_fails, block_offline_hangs, set_removable, open_device/close_device/exit_process.
Records: uevents (+ listener), writes, leaks, sigbus, untimed_blocking_writes, dynamic_ids (what
is left in the drivers' new_id).
"""

from tests.fakekernel.daxbus import DEVDAX, KMEM, FakeDevice, FakeRegion, Leak, Victim
from tests.fakekernel.events import Uevent
from tests.fakekernel.kernel import PMEM_SIZE, FakeKernel
from tests.fakekernel.memory import FakeBlock, GiB, MiB
from tests.fakekernel.sysfs import FakeSysfs

__all__ = [
    "DEVDAX",
    "KMEM",
    "PMEM_SIZE",
    "FakeBlock",
    "FakeDevice",
    "FakeKernel",
    "FakeRegion",
    "FakeSysfs",
    "GiB",
    "Leak",
    "MiB",
    "Uevent",
    "Victim",
]

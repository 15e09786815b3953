"""Smoke test of the real-kernel lab: a devdax namespace on an emulated NVDIMM, moved to kmem.

Besides checking that the lab works, it records what the real kernel shows at each step (sysfs
attributes with modes, drivers, memory blocks, /proc/iomem, udev events) and how it answers a set
of writes, in ``tests/vm/snapshots/pmem-devdax-kmem.json``, against which the unit tests' fake
kernel can be checked. When that file exists, the test compares the new run's shape with it (see
tests/vm/sysfs_fixture.py) and fails on a difference; ``DAXD_LAB_UPDATE_SNAPSHOTS=1`` rewrites it.
"""

from __future__ import annotations

import time

import pytest

from tests.vm.lab import Lab, NvdimmSpec, Scenario
from tests.vm.sysfs_fixture import collect, device, save_or_compare

pytestmark = pytest.mark.vm

SCRIPT = r"""
set -euo pipefail
DAX=/sys/bus/dax
lab_wait_booted
echo "kernel $(uname -r)"
udevadm monitor --kernel --udev --property --subsystem-match=dax \
    > "$LAB_OUT/udev-events.txt" 2>&1 &
monitor=$!
sleep 1

export LAB_STAGE=1-devdax
lab_devdax namespace0.0 > "$LAB_OUT/ndctl-create-namespace.json"
udevadm settle
test -e $DAX/devices/dax0.0
echo "dax0.0 driver: $(basename "$(readlink -f $DAX/devices/dax0.0/driver)")"
daxctl list -D > "$LAB_OUT/daxctl-list.json"
lab_snapshot $LAB_STAGE dax0.0
lab_try_write $DAX/devices/dax0.0/memmap_on_memory garbage
lab_try_write $DAX/devices/dax0.0/memmap_on_memory 1
lab_try_write $DAX/drivers/kmem/new_id dax0
lab_try_write $DAX/drivers/device_dax/unbind dax9.9
lab_try_write $DAX/drivers/kmem/bind dax0.0
lab_try_write $DAX/devices/dax0.0/size 0
lab_try_write $DAX/devices/dax0.0/align 4096

export LAB_STAGE=2-unbound
lab_try_write $DAX/drivers/device_dax/unbind dax0.0
udevadm settle
lab_snapshot $LAB_STAGE dax0.0
lab_try_write $DAX/drivers/kmem/bind dax0.0

export LAB_STAGE=3-kmem
lab_try_write $DAX/drivers/kmem/new_id dax0.0
udevadm settle
lab_snapshot $LAB_STAGE dax0.0
lab_try_write $DAX/drivers/device_dax/bind dax0.0
lab_try_write $DAX/devices/dax0.0/memmap_on_memory 1
mapfile -t blocks < <(jq -r '.devices["dax0.0"].memory_blocks | keys[]' \
                      "$LAB_OUT/$LAB_STAGE.json" | sort -V)
echo "kmem blocks: ${blocks[*]}"
test "${#blocks[@]}" -gt 0
MEM=/sys/devices/system/memory
first=${blocks[0]}

export LAB_STAGE=4-one-block-movable
lab_try_write $MEM/$first/state online
lab_try_write $MEM/$first/state garbage
lab_try_write $MEM/$first/online 2
lab_try_write $MEM/$first/state offline
lab_try_write $MEM/$first/state online_movable
lab_try_write $MEM/$first/state online_movable
lab_try_write $MEM/memory0/state offline
udevadm settle
lab_snapshot $LAB_STAGE dax0.0

export LAB_STAGE=5-all-offline
for b in "${blocks[@]}"; do lab_try_write $MEM/$b/state offline; done
udevadm settle
lab_snapshot $LAB_STAGE dax0.0

export LAB_STAGE=6-restored
lab_try_write $DAX/drivers/kmem/unbind dax0.0
lab_try_write $DAX/drivers/device_dax/bind dax0.0
lab_try_write $DAX/drivers/kmem/remove_id dax0.0
udevadm settle
lab_snapshot $LAB_STAGE dax0.0
echo "dax0.0 driver: $(basename "$(readlink -f $DAX/devices/dax0.0/driver)")"
sleep 1
kill $monitor
"""


def test_devdax_to_kmem_snapshot(lab: Lab) -> None:
    started = time.monotonic()
    result = lab.run(
        Scenario(
            name="smoke-devdax-kmem",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=1024)],
            timeout=600,
        )
    )
    result.check()
    elapsed = time.monotonic() - started

    snapshot = collect(
        result,
        qemu="pc,nvdimm=on; NVDIMM with a 1024 MiB region (backend 1026 MiB, label-size 128K) in "
        "a memory-less NUMA node of its own; TCG",
        ndctl_create_namespace=result.json("ndctl-create-namespace.json"),
        daxctl_list=result.json("daxctl-list.json"),
        udev_events=udev_events(result.file("udev-events.txt")),
    )
    devdax = device(snapshot, "1-devdax", "dax0.0")
    assert devdax["driver"] == "device_dax"
    assert str(devdax["realpath"]).endswith("/ndbus0/region0/dax0.0/dax0.0")
    assert device(snapshot, "2-unbound", "dax0.0")["driver"] is None
    kmem = device(snapshot, "3-kmem", "dax0.0")
    assert kmem["driver"] == "kmem"
    assert kmem["memory_blocks"]
    assert device(snapshot, "6-restored", "dax0.0")["driver"] == "device_dax"
    print(f"\nlab smoke: {elapsed:.0f} s in all; timings {result.timings}")
    save_or_compare(snapshot, "pmem-devdax-kmem.json", result)


def udev_events(text: str) -> list[dict[str, str]]:
    """`udevadm monitor --property` output as a list of events (KERNEL and UDEV)."""
    events: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or not lines[0].startswith(("KERNEL[", "UDEV ")):
            continue
        event = {"source": lines[0].split("[")[0].strip()}
        for line in lines[1:]:
            key, _, value = line.partition("=")
            if key not in ("SEQNUM", "USEC_INITIALIZED"):
                event[key] = value
        events.append(event)
    return events

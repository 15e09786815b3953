"""Soft-reserved memory (the "hmem" path): the kernel itself binds the dax device to kmem.

The lab emulates EFI "specific purpose" memory: an extra NUMA node whose range is turned into
E820_TYPE_SOFT_RESERVED by ``memmap=SIZE%START-1+0xefffffff`` (see HmemSpec and docs/lab.md).
dax_hmem makes a daxX.Y device of it under /sys/devices/platform/hmem.N, and since Linux 6.3 such
devices go to kmem by default. The test records the boot state and the way back to device_dax in
``tests/vm/snapshots/hmem-kmem.json``.
"""

from __future__ import annotations

import pytest

from tests.vm.lab import HmemSpec, Lab, Scenario
from tests.vm.sysfs_fixture import collect, device, save_or_compare

pytestmark = pytest.mark.vm

SCRIPT = r"""
set -euo pipefail
DAX=/sys/bus/dax
MEM=/sys/devices/system/memory
lab_wait_booted
udevadm settle
dev=$(basename "$(ls -d /sys/devices/platform/hmem.*/dax*.* | head -n 1)")
echo "hmem device: $dev"
echo "$dev" > "$LAB_OUT/device.txt"
grep -i 'soft reserved' /proc/iomem
daxctl list -D > "$LAB_OUT/daxctl-list.json"

export LAB_STAGE=1-boot
lab_snapshot $LAB_STAGE "$dev"
mapfile -t blocks < <(jq -r --arg d "$dev" '.devices[$d].memory_blocks | keys[]' \
                      "$LAB_OUT/$LAB_STAGE.json" | sort -V)
echo "blocks: ${blocks[*]}"
test "${#blocks[@]}" -gt 0

export LAB_STAGE=2-movable
for b in "${blocks[@]}"; do lab_try_write $MEM/$b/state online_movable; done
udevadm settle
lab_snapshot $LAB_STAGE "$dev"

export LAB_STAGE=3-offline
for b in "${blocks[@]}"; do lab_try_write $MEM/$b/state offline; done
udevadm settle
lab_snapshot $LAB_STAGE "$dev"

export LAB_STAGE=4-unbound
lab_try_write $DAX/drivers/kmem/unbind "$dev"
udevadm settle
lab_snapshot $LAB_STAGE "$dev"
lab_try_write $DAX/drivers/device_dax/bind "$dev"

export LAB_STAGE=5-device_dax
lab_try_write $DAX/drivers/device_dax/new_id "$dev"
udevadm settle
lab_snapshot $LAB_STAGE "$dev"
test -c "/dev/$dev"

export LAB_STAGE=6-back-to-kmem
lab_try_write $DAX/drivers/device_dax/unbind "$dev"
lab_try_write $DAX/drivers/device_dax/remove_id "$dev"
lab_try_write $DAX/drivers/kmem/bind "$dev"
udevadm settle
lab_snapshot $LAB_STAGE "$dev"

# Unbinding kmem while a block is online "succeeds" but leaks the range until reboot
# ("cannot be hotremoved until the next reboot"); nothing can bind the device afterwards.
export LAB_STAGE=7-kmem-unbind-online
lab_try_write $MEM/${blocks[0]}/state online_movable
lab_try_write $DAX/drivers/kmem/unbind "$dev"
udevadm settle
lab_try_write $DAX/drivers/kmem/bind "$dev"
lab_snapshot $LAB_STAGE "$dev"
journalctl -k -b --no-pager | grep -E "hotremoved|could not reserve" || true
"""


def test_soft_reserved_memory_goes_to_kmem(lab: Lab) -> None:
    # Blocks left offline at boot: onlined to ZONE_NORMAL (Debian's default policy) the kernel puts
    # unmovable pages in them and offlining them fails with EBUSY at random.
    result = lab.run(
        Scenario(
            name="hmem-kmem",
            script=SCRIPT,
            hmem=[HmemSpec(size_mib=512)],
            kernel_args=["memhp_default_state=offline"],
        )
    )
    result.check()
    name = result.file("device.txt").strip()
    snapshot = collect(
        result,
        qemu="pc,max-ram-below-4g=2G; 2 GiB node 0; node 1: 512 MiB at 4 GiB, soft-reserved "
        "with memmap=; memhp_default_state=offline; TCG",
        daxctl_list=result.json("daxctl-list.json"),
    )
    boot = device(snapshot, "1-boot", name)
    assert boot["driver"] == "kmem"
    assert "/platform/hmem." in str(boot["realpath"])
    blocks = boot["memory_blocks"]
    assert isinstance(blocks, dict)
    assert blocks
    assert device(snapshot, "4-unbound", name)["driver"] is None
    assert device(snapshot, "5-device_dax", name)["driver"] == "device_dax"
    assert device(snapshot, "6-back-to-kmem", name)["driver"] == "kmem"
    assert device(snapshot, "7-kmem-unbind-online", name)["driver"] is None
    save_or_compare(snapshot, "hmem-kmem.json", result)

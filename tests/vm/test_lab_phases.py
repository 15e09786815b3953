"""Two-boot scenarios: what boot 1 made (namespaces, daxd installed) is there in boot 2.

This is what a test of "daxd.service starts in a real boot with devdax namespaces present" builds
on: boot 1 installs daxd the way a user would (make install, else pip install) and creates the
namespaces; boot 2 is an ordinary boot of the same disk and NVDIMMs.
"""

from __future__ import annotations

import pytest

from tests.vm.lab import Lab, NvdimmSpec, Scenario

pytestmark = pytest.mark.vm

SETUP = r"""
set -euo pipefail
lab_devdax namespace0.0 > /dev/null
lab_devdax namespace1.0 > /dev/null
ls /sys/bus/dax/devices
python3 -c 'import daxd; print("daxd importable from", daxd.__file__)'
"""

MAIN = r"""
set -euo pipefail
lab_wait_booted
echo "devices: $(ls /sys/bus/dax/devices | tr '\n' ' ')"
for d in /sys/bus/dax/devices/*; do
    echo "$(basename "$d") driver=$(basename "$(readlink -f "$d/driver")")" \
         "target_node=$(cat "$d/target_node")"
done
python3 -c 'import daxd; print("daxd importable from", daxd.__file__)'
echo "auto_online_blocks=$(cat /sys/devices/system/memory/auto_online_blocks)"
echo "memmap_on_memory=$(cat /sys/module/memory_hotplug/parameters/memmap_on_memory)"
echo "system state: $(systemctl is-system-running)"
systemctl list-units --all --no-pager --plain 'daxdev-reconfigure@*' | grep daxdev || true
"""


def test_state_survives_into_second_boot(lab: Lab) -> None:
    result = lab.run(
        Scenario(
            name="two-boots",
            setup_script=SETUP,
            script=MAIN,
            nvdimms=[NvdimmSpec(size_mib=1024), NvdimmSpec(size_mib=512)],
            kernel_args=["memhp_default_state=offline", "memory_hotplug.memmap_on_memory=1"],
            install_daxd=True,
        )
    )
    result.check()
    assert [b.phase for b in result.boots] == ["setup", "main"]
    assert result.boots[0].install_exit_code == 0
    out = result.stdout
    assert "devices: dax0.0 dax1.0" in out
    assert "dax0.0 driver=device_dax target_node=1" in out
    assert "dax1.0 driver=device_dax target_node=2" in out
    assert "daxd importable from" in out
    assert "auto_online_blocks=offline" in out
    assert "memmap_on_memory=Y" in out

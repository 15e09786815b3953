"""A dax device of a region the policy removes (``state: absent``) gets the release rule before
any rule of the file: kmem memory offline, a /dev/dax left as it is; other devices, and regions
the policy keeps, match the file's rules as before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from daxd.kernel.model import CxlIdentity, CxlMemdev
from daxd.policy.model import Mode
from tests.policy.helpers import device, load

POLICY = """\
regions:
  - name: pair
    memdevs: [0x1000, {host_bridge: 52}]
    state: absent
  - name: kept
    memdevs: [0x2000]
rules:
  - name: all-cxl
    match: {provider: cxl}
    mode: system-ram
"""


def cxl(*memdevs: tuple[int, int]) -> CxlIdentity:
    return CxlIdentity(
        region="region2",
        uuid=None,
        mode="ram",
        interleave_ways=len(memdevs),
        interleave_granularity=8192,
        window="decoder0.2",
        window_start=0x3_1000_0000,
        memdevs=tuple(
            CxlMemdev(k, f"mem{k}", serial, f"pci0000:{uid:02x}", uid)
            for k, (serial, uid) in enumerate(memdevs)
        ),
    )


def test_devices_of_an_absent_region_are_released(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    ident = cxl((0x1001, 52), (0x1000, 12))  # either order: the region is the same
    kmem = replace(device(), cxl=ident, driver="kmem")
    rule = policy.match(kmem)
    assert rule is not None
    assert (rule.name, rule.mode, rule.online) == (
        "region pair (state: absent)",
        Mode.SYSTEM_RAM,
        False,
    )
    assert rule.location.endswith("policy.yaml:2")
    devdax = replace(device(), cxl=ident, driver="device_dax")
    rule = policy.match(devdax)
    assert rule is not None
    assert (rule.name, rule.mode) == ("region pair (state: absent)", Mode.DEVDAX)


def test_other_devices_keep_the_files_rules(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    for ident in (
        cxl((0x1000, 12)),  # one of the memdevs only: another region
        cxl((0x1000, 12), (0x1001, 53)),  # the second below another host bridge
        cxl((0x2000, 12)),  # a region the policy keeps
    ):
        rule = policy.match(replace(device(), cxl=ident, driver="kmem"))
        assert rule is not None
        assert rule.name == "all-cxl", ident

"""Odd sysfs contents become Diagnostics naming the path, never exceptions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daxd.kernel.model import KernelState, KernelZone
from daxd.kernel.scan import read_state
from tests.fakekernel import FakeKernel

DEV = "bus/dax/devices/dax0.0"


def messages(state: KernelState, path_end: str) -> list[str]:
    return [d.message for d in state.diagnostics if d.path.endswith(path_end)]


def test_junk_names_in_bus_dir_are_skipped(pmem_kernel: FakeKernel) -> None:
    for junk in ("dax0", "dax0.0.0", "..evil", "dax1.x", "Dax2.0"):
        (pmem_kernel.tree.path("bus/dax/devices") / junk).mkdir()
    state = read_state(pmem_kernel.sysfs)
    assert list(state.devices) == ["dax0.0"]
    skipped = messages(state, "bus/dax/devices")
    assert len(skipped) == 5
    assert any("'..evil'" in m for m in skipped)


def test_devices_sorted_by_region_then_id(fake_kernel: FakeKernel) -> None:
    for region in (10, 2):
        fake_kernel.add_pmem_device(region=region)
    assert list(read_state(fake_kernel.sysfs).devices) == ["dax2.0", "dax10.0"]


@pytest.mark.parametrize(
    ("attr", "content", "expected", "message"),
    [
        ("size", "", 1054867456, "empty"),  # size falls back to the ranges' sum
        ("size", "12abc", 1054867456, "not a decimal number"),
        ("align", "two megs", None, "not a decimal number"),
        ("target_node", "-x", None, "not a decimal number"),
        ("numa_node", "-1", None, None),  # NUMA_NO_NODE is no diagnostic
        ("memmap_on_memory", "maybe", None, "expected 0 or 1"),
        ("resource", "0xZZ", None, "not a hexadecimal number"),
    ],
)
def test_garbage_attribute(
    pmem_kernel: FakeKernel, attr: str, content: str, expected: object, message: str | None
) -> None:
    pmem_kernel.tree.attr(f"{pmem_kernel.devices['dax0.0'].devpath}/{attr}", content)
    state = read_state(pmem_kernel.sysfs)
    assert getattr(state.devices["dax0.0"], attr) == expected
    found = messages(state, f"{DEV}/{attr}")
    if message is None:
        assert found == []
    else:
        assert len(found) == 1
        assert message in found[0]


def test_missing_size_is_a_diagnostic(pmem_kernel: FakeKernel) -> None:
    os.remove(pmem_kernel.tree.path(f"{pmem_kernel.devices['dax0.0'].devpath}/size"))
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].size == 1054867456
    assert messages(state, f"{DEV}/size") == ["missing attribute"]


def test_truncated_mapping_is_skipped(pmem_kernel: FakeKernel) -> None:
    os.remove(pmem_kernel.tree.path(f"{pmem_kernel.devices['dax0.0'].devpath}/mapping0/end"))
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].ranges == ()
    assert messages(state, f"{DEV}/mapping0/end") == ["missing attribute"]
    assert any("differs" in m for m in messages(state, f"{DEV}/size")) is False  # no ranges: no sum


def test_reversed_mapping(pmem_kernel: FakeKernel) -> None:
    devpath = pmem_kernel.devices["dax0.0"].devpath
    pmem_kernel.tree.attr(f"{devpath}/mapping0/end", "0x1000", 0o400)
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].ranges == ()
    assert "before start" in messages(state, f"{DEV}/mapping0")[0]


def test_size_disagreeing_with_ranges(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.tree.attr(f"{pmem_kernel.devices['dax0.0'].devpath}/size", "4096")
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].size == 4096
    assert "differs from the sum" in messages(state, f"{DEV}/size")[0]


def test_non_root_cannot_read_0400_attributes(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.non_root = True
    state = read_state(pmem_kernel.sysfs)
    dev = state.devices["dax0.0"]
    assert dev.ranges == ()
    assert dev.resource is None
    assert dev.size == 1054867456  # 0444 attributes still read
    found = messages(state, f"{DEV}/mapping0/start")
    assert len(found) == 1
    assert "run daxd as root" in found[0]


def test_unreadable_bus_dir(pmem_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.listdir

    def listdir(path: object) -> list[str]:
        if str(path).endswith("bus/dax/devices"):
            raise PermissionError(13, "Permission denied")
        return real(path)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(os, "listdir", listdir)
    state = read_state(pmem_kernel.sysfs)
    assert state.devices == {}
    assert "cannot list" in messages(state, "bus/dax/devices")[0]


def test_device_link_pointing_outside_the_tree(pmem_kernel: FakeKernel, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "dax0.0"
    outside.mkdir(parents=True)
    (outside / "size").write_text("0\n")
    link = pmem_kernel.tree.path(DEV)
    link.unlink()
    link.symlink_to(outside)
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].devpath == DEV
    assert "outside the sysfs tree" in messages(state, DEV)[0]


def test_region_id_mismatch(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.tree.attr(f"{pmem_kernel.devices['dax0.0'].region.parent}/dax_region/id", "7")
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].region_id == 7
    assert "does not match dax0.0" in messages(state, "dax_region/id")[0]


def test_unexpected_namespace_name_is_not_followed(pmem_kernel: FakeKernel) -> None:
    nd_dax = pmem_kernel.devices["dax0.0"].region.parent
    pmem_kernel.tree.attr(f"{nd_dax}/namespace", "../../../etc", 0o644)
    pmem_kernel.tree.attr(f"{nd_dax}/uuid", "", 0o644)
    state = read_state(pmem_kernel.sysfs)
    assert (state.devices["dax0.0"].namespace, state.devices["dax0.0"].uuid) == (None, None)
    assert "unexpected namespace name" in messages(state, "/namespace")[0]


def test_bad_uuid(pmem_kernel: FakeKernel) -> None:
    nd_dax = pmem_kernel.devices["dax0.0"].region.parent
    pmem_kernel.tree.attr(f"{nd_dax}/uuid", "not-a-uuid", 0o644)
    pmem_kernel.tree.attr(f"{nd_dax}/../namespace0.0/uuid", "", 0o644)
    state = read_state(pmem_kernel.sysfs)
    assert state.devices["dax0.0"].uuid is None
    assert "not a uuid" in messages(state, f"{nd_dax}/uuid")[0]


def test_odd_block_contents(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.tree.attr("devices/system/memory/memory33/state", "bogus", 0o644)
    hmem_kernel.tree.attr("devices/system/memory/memory34/phys_index", "00000099")
    os.remove(hmem_kernel.tree.path("devices/system/memory/memory35/state"))
    state = read_state(hmem_kernel.sysfs)
    blocks = {b.index: b for b in state.blocks_of("dax0.0")}
    assert blocks[33].state == "bogus"  # kept as read, and not taken for a known state
    assert not blocks[33].state.known
    assert not blocks[33].online
    assert "unexpected state" in messages(state, "memory33/state")[0]
    assert blocks[34].phys_index == 0x99
    assert "expected 0x22" in messages(state, "memory34/phys_index")[0]
    assert blocks[35].state == "unknown"
    assert messages(state, "memory35/state") == ["missing attribute"]


def test_a_zone_daxd_does_not_know_is_kept_and_noted(hmem_kernel: FakeKernel) -> None:
    hmem_kernel.tree.attr("devices/system/memory/memory33/valid_zones", "Foreign")
    state = read_state(hmem_kernel.sysfs)
    blocks = {b.index: b for b in state.blocks_of("dax0.0")}
    zone = blocks[33].zone
    assert zone is not None
    assert (zone, zone.known) == ("Foreign", False)
    assert messages(state, "memory33/valid_zones") == ["unknown zone 'Foreign'"]
    assert blocks[34].zone is KernelZone.NORMAL


def test_odd_hotplug_settings(fake_kernel: FakeKernel) -> None:
    fake_kernel.tree.attr("devices/system/memory/auto_online_blocks", "sometimes", 0o644)
    fake_kernel.tree.attr("devices/system/memory/block_size_bytes", "3000000")
    fake_kernel.tree.attr("module/memory_hotplug/parameters/memmap_on_memory", "force")
    state = read_state(fake_kernel.sysfs)
    hp = state.hotplug
    assert (hp.block_size, hp.auto_online_blocks, hp.memmap_on_memory) == (None, None, True)
    assert "power of two" in messages(state, "block_size_bytes")[0]
    assert "unexpected value 'sometimes'" in messages(state, "auto_online_blocks")[0]
    assert "force" in messages(state, "memmap_on_memory")[0]


def test_no_memory_hotplug_at_all(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.tree.remove("devices/system/memory")
    state = read_state(pmem_kernel.sysfs)
    assert state.hotplug.block_size is None
    assert state.hotplug.hotremove is False
    assert state.blocks_of("dax0.0") == ()
    assert state.diagnostics == ()

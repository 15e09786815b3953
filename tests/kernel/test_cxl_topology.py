"""The CXL topology read from the cxl bus: memdevs by serial with their host bridge and endpoint
decoders, windows with their target_list, host bridges with free switch decoders, regions with
their targets; a machine without a cxl bus reads as empty."""

from __future__ import annotations

import os

from daxd.kernel.cxl_topology import read_cxl_topology
from tests.fakekernel import FakeKernel
from tests.kernel.test_cxl_identity import W0, W2, A, B, lab


def test_no_cxl_bus_is_an_empty_topology(fake_kernel: FakeKernel) -> None:
    fake_kernel.add_hmem_device(size=1 << 30)
    topo = read_cxl_topology(fake_kernel.sysfs)
    assert not topo.present
    assert (topo.memdevs, topo.windows, topo.regions, topo.diagnostics) == ((), (), (), ())


def test_memdevs_windows_and_bridges_before_any_region(fake_kernel: FakeKernel) -> None:
    topo = read_cxl_topology(lab(fake_kernel).sysfs)
    assert topo.diagnostics == ()
    assert [(m.name, m.serial, m.host_bridge, m.host_bridge_uid) for m in topo.memdevs] == [
        ("mem0", B, "pci0000:34", 52),
        ("mem1", A, "pci0000:0c", 12),
    ]
    mem1 = topo.memdev_by_serial(A)
    assert mem1 is not None
    assert mem1.used == 0
    assert [d.free for d in mem1.decoders] == [True] * 4
    assert mem1.free_decoder is not None
    assert mem1.free_decoder.name == mem1.decoders[0].name
    assert [(w.name, w.start, w.target_uids, w.interleave_ways) for w in topo.windows] == [
        ("decoder0.0", W0, (12,), 1),
        ("decoder0.1", 0x2_1000_0000, (52,), 1),
        ("decoder0.2", W2, (12, 52), 2),
    ]
    assert all(w.cap_ram for w in topo.windows)
    assert topo.windows[2].interleave_granularity == 8192
    # each window took a region id when it was registered (cxl_root_decoder_alloc())
    assert [w.next_region for w in topo.windows] == ["region0", "region1", "region2"]
    assert [(h.name, h.uid, h.free_decoders) for h in topo.host_bridges] == [
        ("pci0000:0c", 12, 1),
        ("pci0000:34", 52, 1),
    ]
    assert topo.regions == ()


def test_an_interleaved_region_and_what_it_uses(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=512 << 20, serials=[A, B], window="decoder0.2")
    topo = read_cxl_topology(fake_kernel.sysfs)
    assert topo.diagnostics == ()
    (region,) = topo.regions
    assert (region.name, region.window, region.mode, region.size, region.start) == (
        "region2",
        "decoder0.2",
        "ram",
        512 << 20,
        W2,
    )
    assert (region.interleave_ways, region.interleave_granularity) == (2, 8192)
    assert region.committed is True
    assert region.bound
    assert region.dax_devices == ("dax2.0",)
    assert [m.serial if m else None for m in topo.region_memdevs(region)] == [A, B]
    for serial in (A, B):
        md = topo.memdev_by_serial(serial)
        assert md is not None
        assert md.used == 256 << 20
        assert md.decoders[0].region == "region2"
        assert not md.decoders[0].free
        assert md.free_decoder == md.decoders[1]
    assert [h.free_decoders for h in topo.host_bridges] == [0, 0]
    assert topo.regions_in("decoder0.2") == (region,)
    assert topo.windows[2].next_region == "region3"


def test_a_region_being_assembled_has_unset_targets(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel).add_cxl_device(size=256 << 20, serials=[A], window="decoder0.0")
    path = fake_kernel.sysfs.realpath("bus/cxl/devices/region0")
    target = fake_kernel.sysfs_root / path / "target0"
    os.chmod(target, 0o644)
    target.write_text("\n")
    (fake_kernel.sysfs_root / path / "commit").write_text("0\n")
    (region,) = read_cxl_topology(fake_kernel.sysfs).regions
    assert region.targets == (None,)
    assert region.committed is False


def test_odd_contents_are_diagnostics_not_exceptions(fake_kernel: FakeKernel) -> None:
    lab(fake_kernel)
    root = fake_kernel.sysfs_root
    mem0 = root / fake_kernel.sysfs.realpath("bus/cxl/devices/mem0")
    (mem0 / "serial").write_text("sn-12\n")
    w = root / fake_kernel.sysfs.realpath("bus/cxl/devices/decoder0.2")
    (w / "target_list").write_text("12,x\n")
    topo = read_cxl_topology(fake_kernel.sysfs)
    assert topo.memdevs[0].serial is None
    assert topo.windows[2].target_uids == (12,)
    text = " ".join(str(d) for d in topo.diagnostics)
    assert "mem0/serial" in text
    assert "not a hexadecimal number" in text
    assert "not a host bridge uid" in text

"""The fake kernel answers the sysfs writes of ``cxl create-region -t ram`` and ``cxl
destroy-region`` (ndctl v81) as Linux 6.12's drivers/cxl/core/region.c, hdm.c and port.c do:
the whole sequence for a 1-way and a 2-way region, the teardown, and the errno of each wrong
write.

The machine is the lab's (tests/vm/snapshots/cxl-observed-*.json): host bridges 52 (port1) and
12 (port2); mem0 = serial 0x1001 below 52 (endpoint3), mem1 = 0x1000 below 12 (endpoint4), 256 MiB
each; decoder0.0 over 12, decoder0.1 over 52, decoder0.2 over 12,52 at 8K."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daxd.kernel.scan import read_state
from tests.fakekernel import KMEM, FakeKernel, MiB, Uevent
from tests.fakekernel.snapshot import cxl_shape, dax_shape, dax_snapshot
from tests.kernel.helpers import write_error

CXL = "bus/cxl/devices"
DRV = "bus/cxl/drivers"
A, B = 0x1000, 0x1001  # mem1 below 12, mem0 below 52
X1, X2 = "decoder4.0", "decoder3.0"  # the first endpoint decoder of mem1, of mem0


def lab(kernel: FakeKernel, ram: int | None = 256 * MiB) -> FakeKernel:
    for uid in (52, 12):
        kernel.add_cxl_host_bridge(uid)
    kernel.add_cxl_memdev(B, 52, ram_size=ram)
    kernel.add_cxl_memdev(A, 12, ram_size=ram)
    kernel.add_cxl_window([12], start=0x1_1000_0000)
    kernel.add_cxl_window([52], start=0x2_1000_0000)
    kernel.add_cxl_window([12, 52], start=0x3_1000_0000, granularity=8192)
    kernel.uevents.clear()
    return kernel


@pytest.fixture
def kernel(fake_kernel: FakeKernel) -> FakeKernel:
    return lab(fake_kernel)


def read(kernel: FakeKernel, rel: str) -> str | None:
    return kernel.sysfs.read(rel if rel.startswith("bus/") else f"{CXL}/{rel}")


def write(kernel: FakeKernel, rel: str, value: str) -> None:
    kernel.sysfs.write(rel if rel.startswith("bus/") else f"{CXL}/{rel}", value)


def error(kernel: FakeKernel, rel: str, value: str) -> int:
    return write_error(kernel.sysfs, rel if rel.startswith("bus/") else f"{CXL}/{rel}", value)


def summary(events: list[Uevent]) -> list[tuple[str, str, str]]:
    return [(e.action, e.subsystem, e.sysname) for e in events]


def exists(kernel: FakeKernel, rel: str) -> bool:
    return os.path.lexists(kernel.tree.path(rel if rel.startswith("bus/") else f"{CXL}/{rel}"))


def new_region(kernel: FakeKernel, window: str, *, nul: bool = False) -> str:
    """Step 1 of create_region(): the offered name, written back."""
    name = read(kernel, f"{window}/create_ram_region")
    assert name is not None
    write(kernel, f"{window}/create_ram_region", name + ("\0" if nul else ""))
    return f"{window}/{name}"


def configure(kernel: FakeKernel, region: str, ways: int, granularity: int, size: int) -> None:
    write(kernel, f"{region}/interleave_granularity", f"{granularity}\n")
    write(kernel, f"{region}/interleave_ways", f"{ways}\n")
    write(kernel, f"{region}/size", f"{size:#x}\n")


def dpa(kernel: FakeKernel, decoder: str, size: int) -> None:
    """create_region() per memdev: the mode if it is not ram yet, then the DPA."""
    if read(kernel, f"{decoder}/mode") != "ram":
        write(kernel, f"{decoder}/dpa_size", "0x0\n")
        write(kernel, f"{decoder}/mode", "ram\0")
    write(kernel, f"{decoder}/dpa_size", f"{size:#x}\n")


def create(
    kernel: FakeKernel, window: str, decoders: list[str], size: int, granularity: int = 256
) -> str:
    """``cxl create-region -m -t ram -d WINDOW -w N`` as ndctl writes it (with the NULs)."""
    region = new_region(kernel, window, nul=True)
    configure(kernel, region, len(decoders), granularity, size)
    for k, d in enumerate(decoders):
        dpa(kernel, d, size // len(decoders))
        write(kernel, f"{region}/target{k}", d + "\0")
    write(kernel, f"{region}/commit", "1\n")
    name = region.rsplit("/", 1)[1]
    for drv in ("cxl_dax_region", "cxl_mem", "cxl_nvdimm_bridge", "cxl_port"):  # readdir order
        assert error(kernel, f"{DRV}/{drv}/bind", name + "\0") == errno.ENODEV
    write(kernel, f"{DRV}/cxl_region/bind", name + "\0")
    return region


def offline_all(kernel: FakeKernel, name: str) -> None:
    for b in kernel.blocks_of(name):
        kernel.sysfs.write(f"devices/system/memory/memory{b.index}/state", "offline")


def destroy(kernel: FakeKernel, region: str) -> None:
    """``cxl destroy-region -f`` once the memory is offline, as ndctl writes it."""
    window, name = region.split("/")
    write(kernel, f"{region}/driver/unbind", name + "\0")
    write(kernel, f"{region}/commit", "0\n")
    ways = int(read(kernel, f"{region}/interleave_ways") or 0)
    for k in range(ways):
        decoder = read(kernel, f"{region}/target{k}")
        assert decoder
        write(kernel, f"{region}/target{k}", "\0")
        write(kernel, f"{decoder}/dpa_size", "0x0\n")
    write(kernel, f"{window}/delete_region", name + "\0")


# --- the whole sequence ------------------------------------------------------------------------
def test_a_new_region_is_unconfigured_until_written(kernel: FakeKernel) -> None:
    assert read(kernel, "decoder0.0/create_ram_region") == "region0"
    region = new_region(kernel, "decoder0.0", nul=True)
    assert region == "decoder0.0/region0"
    assert summary(kernel.uevents) == [("add", "cxl", "region0")]
    assert kernel.uevents[0].properties["DEVTYPE"] == "cxl_region"
    assert read(kernel, "decoder0.0/create_ram_region") == "region3"  # memregion_alloc()
    attrs = {a: read(kernel, f"{region}/{a}") for a in ("commit", "interleave_ways", "size")}
    assert attrs == {"commit": "0", "interleave_ways": "0", "size": "0x0"}
    assert read(kernel, f"{region}/interleave_granularity") == "0"
    assert read(kernel, f"{region}/resource") == "0xffffffffffffffff"
    assert (read(kernel, f"{region}/mode"), read(kernel, f"{region}/uuid")) == ("ram", "")
    assert not exists(kernel, f"{region}/target0")
    assert not exists(kernel, f"{region}/driver")
    assert read(kernel, f"{region}/uevent") == "DEVTYPE=cxl_region\nMODALIAS=cxl:t6"
    modes = {
        a: oct(os.stat(kernel.tree.path(f"{CXL}/{region}/{a}")).st_mode & 0o777)
        for a in ("commit", "size", "uuid", "resource")
    }
    assert modes == {"commit": "0o644", "size": "0o644", "uuid": "0o444", "resource": "0o444"}
    write(kernel, f"{region}/interleave_ways", "1")
    assert read(kernel, f"{region}/target0") == ""
    assert not exists(kernel, f"{region}/target1")


def test_one_way_region_by_ndctls_writes(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0", nul=True)
    configure(kernel, region, 1, 256, 256 * MiB)
    assert read(kernel, f"{region}/resource") == "0x110000000"  # the window's lowest gap
    dpa(kernel, X1, 256 * MiB)
    assert read(kernel, f"{X1}/mode") == "ram"
    assert read(kernel, f"{X1}/dpa_size") == "0x0000000010000000"
    assert read(kernel, f"{X1}/dpa_resource") == "0x0"
    assert read(kernel, f"{X1}/region") == ""
    write(kernel, f"{region}/target0", X1 + "\0")
    assert read(kernel, f"{region}/target0") == X1
    assert read(kernel, f"{X1}/region") == "region0"
    assert (read(kernel, f"{X1}/start"), read(kernel, f"{X1}/size")) == (
        "0x110000000",
        "0x10000000",
    )
    assert read(kernel, "decoder2.0/region") == "region0"  # host bridge 12's decoder
    assert read(kernel, "decoder2.0/size") == "0x10000000"
    assert read(kernel, "endpoint4/decoders_committed") == "0"
    assert read(kernel, f"{region}/commit") == "0"
    write(kernel, f"{region}/commit", "1\n")
    assert read(kernel, f"{region}/commit") == "1"
    assert read(kernel, "endpoint4/decoders_committed") == "1"
    assert read(kernel, "port2/decoders_committed") == "0"  # [observed] passthrough decoder
    assert kernel.devices == {}
    assert summary(kernel.uevents) == [("add", "cxl", "region0")]  # nothing until the bind
    write(kernel, f"{DRV}/cxl_region/bind", "region0\0")
    blocks = [f"memory{b.index}" for b in kernel.blocks_of("dax0.0")]
    assert len(blocks) == 2
    assert summary(kernel.uevents) == [
        ("add", "cxl", "region0"),
        ("add", "cxl", "dax_region0"),
        ("bind", "cxl", "region0"),
        ("add", "dax", "dax0.0"),
        *(("add", "memory", b) for b in blocks),
        ("add", "node", "node2"),
        *(("online", "memory", b) for b in blocks),
        ("bind", "dax", "dax0.0"),
        ("bind", "cxl", "dax_region0"),
    ]
    assert kernel.devices["dax0.0"].driver == KMEM
    assert kernel.sysfs.realpath(f"{CXL}/{region}/driver") == f"{DRV}/cxl_region"
    assert read(kernel, f"{region}/uevent") == (
        "DEVTYPE=cxl_region\nDRIVER=cxl_region\nMODALIAS=cxl:t6"
    )
    dev = read_state(kernel.sysfs).devices["dax0.0"]
    assert dev.cxl is not None
    assert (dev.cxl.region, dev.cxl.window, dev.cxl.serials) == ("region0", "decoder0.0", (A,))
    assert dev.size == 256 * MiB


def test_two_way_region_by_plain_writes(kernel: FakeKernel) -> None:
    """daxd's order (no NULs; the DPA before the size): the same region as ndctl's."""
    region = new_region(kernel, "decoder0.2")
    assert region == "decoder0.2/region2"
    write(kernel, f"{region}/interleave_granularity", "8192")
    write(kernel, f"{region}/interleave_ways", "2")
    for d in (X1, X2):
        write(kernel, f"{d}/mode", "ram")
        write(kernel, f"{d}/dpa_size", "0x10000000")
    write(kernel, f"{region}/size", "0x20000000")
    write(kernel, f"{region}/target0", X1)  # target_list 12,52: mem1 first
    assert read(kernel, "decoder2.0/size") == "0x0"  # set up once every target is there
    write(kernel, f"{region}/target1", X2)
    for hb in ("decoder1.0", "decoder2.0"):
        assert read(kernel, f"{hb}/region") == "region2"
        assert read(kernel, f"{hb}/interleave_granularity") == "16384"  # 8K x 2 root ways
        assert (read(kernel, f"{hb}/start"), read(kernel, f"{hb}/size")) == (
            "0x310000000",
            "0x20000000",
        )
    for d in (X1, X2):
        assert (read(kernel, f"{d}/interleave_ways"), read(kernel, f"{d}/size")) == (
            "2",
            "0x20000000",
        )
    write(kernel, f"{region}/commit", "1")
    write(kernel, f"{DRV}/cxl_region/bind", "region2")
    dev = kernel.devices["dax2.0"]
    assert dev.size == 512 * MiB
    assert dev.devpath == f"devices/platform/ACPI0017:00/root0/{region}/dax_region2/dax2.0"
    assert dev.driver == KMEM
    cxl = read_state(kernel.sysfs).devices["dax2.0"].cxl
    assert cxl is not None
    assert (cxl.serials, cxl.interleave_ways) == ((A, B), 2)


def test_the_writes_and_the_builder_end_in_the_same_tree(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    create(kernel, "decoder0.2", [X1, X2], 512 * MiB, 8192)
    built = lab(FakeKernel(tmp_path))
    built.add_cxl_device(size=512 * MiB, serials=[A, B], window="decoder0.2")
    names = ["dax2.0"]
    assert cxl_shape(dax_snapshot(kernel, names)["cxl"]) == cxl_shape(
        dax_snapshot(built, names)["cxl"]
    )
    assert dax_shape(dax_snapshot(kernel, names)) == dax_shape(dax_snapshot(built, names))
    assert summary(kernel.uevents) == summary(built.uevents)


def test_teardown_by_ndctls_writes(kernel: FakeKernel) -> None:
    region = create(kernel, "decoder0.2", [X1, X2], 512 * MiB, 8192)
    offline_all(kernel, "dax2.0")
    kernel.uevents.clear()
    write(kernel, f"{region}/driver/unbind", "region2\0")
    assert summary(kernel.uevents)[-5:] == [
        ("unbind", "dax", "dax2.0"),
        ("remove", "dax", "dax2.0"),
        ("unbind", "cxl", "dax_region2"),
        ("remove", "cxl", "dax_region2"),
        ("unbind", "cxl", "region2"),
    ]
    assert kernel.devices == {}
    assert kernel.leaks == []
    assert not exists(kernel, f"{CXL}/dax_region2")
    assert not exists(kernel, f"{region}/driver")
    write(kernel, f"{region}/commit", "0\n")
    assert read(kernel, f"{region}/commit") == "0"
    assert read(kernel, "endpoint3/decoders_committed") == "0"
    write(kernel, f"{region}/target0", "\0")
    assert read(kernel, f"{region}/target0") == ""
    assert read(kernel, f"{X1}/region") == ""
    assert read(kernel, "decoder2.0/region") == ""
    assert read(kernel, "decoder1.0/size") == "0x0"  # targets torn down with the first one
    write(kernel, f"{X1}/dpa_size", "0x0\n")
    write(kernel, f"{region}/target1", "\0")
    write(kernel, f"{X2}/dpa_size", "0x0\n")
    kernel.uevents.clear()
    write(kernel, "decoder0.2/delete_region", "region2\0")
    assert summary(kernel.uevents) == [("remove", "cxl", "region2")]
    assert not exists(kernel, region)
    assert not exists(kernel, f"{CXL}/region2")
    assert read(kernel, "decoder0.2/create_ram_region") == "region2"  # the id again
    for d in (X1, X2):
        assert read(kernel, f"{d}/dpa_resource") == "0xffffffffffffffff"
        assert read(kernel, f"{d}/mode") == "ram"  # cxl_dpa_free() keeps it
    again = create(kernel, "decoder0.2", [X1, X2], 512 * MiB, 8192)
    assert again == region
    assert kernel.devices["dax2.0"].size == 512 * MiB


def test_the_builders_destroy_is_the_same_teardown(kernel: FakeKernel) -> None:
    create(kernel, "decoder0.0", [X1], 256 * MiB)
    offline_all(kernel, "dax0.0")
    kernel.uevents.clear()
    kernel.destroy_cxl_region(0, force=True)
    assert summary(kernel.uevents)[-4:] == [
        ("unbind", "cxl", "dax_region0"),
        ("remove", "cxl", "dax_region0"),
        ("unbind", "cxl", "region0"),
        ("remove", "cxl", "region0"),
    ]
    assert read(kernel, f"{X1}/dpa_size") == "0x0000000000000000"
    assert read(kernel, "decoder0.0/create_ram_region") == "region0"


# --- create_ram_region -------------------------------------------------------------------------
def test_create_with_a_stale_name_is_ebusy(kernel: FakeKernel) -> None:
    name = read(kernel, "decoder0.0/create_ram_region")
    assert name == "region0"
    write(kernel, "decoder0.0/create_ram_region", name)
    assert error(kernel, "decoder0.0/create_ram_region", name) == errno.EBUSY  # now region3
    assert error(kernel, "decoder0.0/create_ram_region", "region7") == errno.EBUSY
    assert not exists(kernel, "decoder0.0/region7")


@pytest.mark.parametrize("value", ["region", "regionx", "0", "dax_region3"])
def test_create_with_no_region_number_is_einval(kernel: FakeKernel, value: str) -> None:
    assert error(kernel, "decoder0.0/create_ram_region", value) == errno.EINVAL
    assert kernel.uevents == []


# --- interleave_granularity and interleave_ways ------------------------------------------------
@pytest.mark.parametrize("value", ["100", "384", "32768", "128", "-256", "abc", "0x"])
def test_granularity_not_a_power_of_two_in_256_to_16k_is_einval(
    kernel: FakeKernel, value: str
) -> None:
    region = new_region(kernel, "decoder0.0")
    assert error(kernel, f"{region}/interleave_granularity", value) == errno.EINVAL
    assert read(kernel, f"{region}/interleave_granularity") == "0"


def test_granularity_other_than_an_interleaved_roots_is_einval(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.2")
    assert error(kernel, f"{region}/interleave_granularity", "256") == errno.EINVAL
    write(kernel, f"{region}/interleave_granularity", "0x2000")
    assert read(kernel, f"{region}/interleave_granularity") == "8192"
    one_way = new_region(kernel, "decoder0.0")  # a 1-way root takes any
    write(kernel, f"{one_way}/interleave_granularity", "4096")
    assert read(kernel, f"{one_way}/interleave_granularity") == "4096"


@pytest.mark.parametrize("value", ["0", "5", "32", "-1", "two"])
def test_ways_the_kernel_cannot_encode_are_einval(kernel: FakeKernel, value: str) -> None:
    region = new_region(kernel, "decoder0.0")
    assert error(kernel, f"{region}/interleave_ways", value) == errno.EINVAL


@pytest.mark.parametrize("value", ["1", "3", "6"])
def test_ways_not_a_power_of_two_multiple_of_the_windows_are_einval(
    kernel: FakeKernel, value: str
) -> None:
    region = new_region(kernel, "decoder0.2")
    assert error(kernel, f"{region}/interleave_ways", value) == errno.EINVAL
    write(kernel, f"{region}/interleave_ways", "4")  # 2 x 2 is fine
    assert read(kernel, f"{region}/interleave_ways") == "4"


def test_ways_and_granularity_once_the_size_is_set_are_ebusy(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    assert error(kernel, f"{region}/interleave_ways", "2") == errno.EBUSY
    assert error(kernel, f"{region}/interleave_granularity", "512") == errno.EBUSY
    write(kernel, f"{region}/size", "0")  # free_hpa(): back to IDLE
    assert read(kernel, f"{region}/resource") == "0xffffffffffffffff"
    write(kernel, f"{region}/interleave_ways", "2")
    assert read(kernel, f"{region}/target1") == ""


# --- size --------------------------------------------------------------------------------------
def test_size_before_ways_and_granularity_is_enxio(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    assert error(kernel, f"{region}/size", "0x10000000") == errno.ENXIO
    write(kernel, f"{region}/interleave_ways", "1")
    assert error(kernel, f"{region}/size", "0x10000000") == errno.ENXIO  # granularity 0 still


@pytest.mark.parametrize("size", [128 * MiB, 256 * MiB, 768 * MiB])
def test_size_not_a_multiple_of_256m_times_ways_is_einval(kernel: FakeKernel, size: int) -> None:
    region = new_region(kernel, "decoder0.2")
    write(kernel, f"{region}/interleave_granularity", "8192")
    write(kernel, f"{region}/interleave_ways", "2")
    assert error(kernel, f"{region}/size", f"{size:#x}") == errno.EINVAL
    write(kernel, f"{region}/size", f"{1024 * MiB:#x}")


def test_size_beyond_the_windows_free_space_is_erange(kernel: FakeKernel) -> None:
    first = new_region(kernel, "decoder0.0")
    configure(kernel, first, 1, 256, 3 * 1024 * MiB)  # of its 4 GiB
    second = new_region(kernel, "decoder0.0")
    write(kernel, f"{second}/interleave_granularity", "256")
    write(kernel, f"{second}/interleave_ways", "1")
    assert error(kernel, f"{second}/size", f"{2048 * MiB:#x}") == errno.ERANGE
    write(kernel, f"{second}/size", f"{1024 * MiB:#x}")
    assert read(kernel, f"{second}/resource") == "0x1d0000000"


def test_another_size_while_one_is_set_is_ebusy(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    write(kernel, f"{region}/size", "0x10000000")  # the same: nothing to do
    assert error(kernel, f"{region}/size", "0x20000000") == errno.EBUSY


def test_freeing_the_size_with_every_target_set_is_ebusy(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    dpa(kernel, X1, 256 * MiB)
    write(kernel, f"{region}/target0", X1)
    assert error(kernel, f"{region}/size", "0") == errno.EBUSY


# --- the endpoint decoders' mode and dpa_size --------------------------------------------------
@pytest.mark.parametrize("value", ["none", "foo", "mixed", ""])
def test_a_mode_other_than_ram_or_pmem_is_einval(kernel: FakeKernel, value: str) -> None:
    if value == "":
        write(kernel, f"{X1}/mode", value)  # zero-length writes never reach ->store()
        assert read(kernel, f"{X1}/mode") == "none"
        return
    assert error(kernel, f"{X1}/mode", value) == errno.EINVAL


def test_pmem_on_a_volatile_only_memdev_is_enxio(kernel: FakeKernel) -> None:
    assert error(kernel, f"{X1}/mode", "pmem") == errno.ENXIO
    assert read(kernel, f"{X1}/mode") == "none"


def test_mode_of_a_committed_decoder_is_ebusy(kernel: FakeKernel) -> None:
    create(kernel, "decoder0.0", [X1], 256 * MiB)
    assert error(kernel, f"{X1}/mode", "ram") == errno.EBUSY


def test_dpa_size_not_256m_aligned_is_einval(kernel: FakeKernel) -> None:
    write(kernel, f"{X1}/mode", "ram")
    assert error(kernel, f"{X1}/dpa_size", f"{128 * MiB:#x}") == errno.EINVAL


def test_dpa_size_without_a_mode_is_einval(kernel: FakeKernel) -> None:
    assert error(kernel, f"{X1}/dpa_size", "0x10000000") == errno.EINVAL  # "mode not set"
    write(kernel, f"{X1}/dpa_size", "0")  # nothing to free: fine


def test_dpa_size_beyond_the_memdevs_capacity_is_enospc(kernel: FakeKernel) -> None:
    assert read(kernel, "mem1/ram/size") == "0x10000000"  # ram_size_show()
    write(kernel, f"{X1}/mode", "ram")
    assert error(kernel, f"{X1}/dpa_size", "0x20000000") == errno.ENOSPC
    write(kernel, f"{X1}/dpa_size", "0x10000000")
    write(kernel, "decoder4.1/mode", "ram")
    assert error(kernel, "decoder4.1/dpa_size", "0x10000000") == errno.ENOSPC  # all taken


def test_dpa_out_of_decoder_order_is_ebusy(fake_kernel: FakeKernel) -> None:
    kernel = lab(fake_kernel, ram=1024 * MiB)
    write(kernel, "decoder4.1/mode", "ram")
    assert error(kernel, "decoder4.1/dpa_size", "0x10000000") == errno.EBUSY  # 4.0 first
    write(kernel, f"{X1}/mode", "ram")
    write(kernel, f"{X1}/dpa_size", "0x10000000")
    write(kernel, "decoder4.1/dpa_size", "0x10000000")
    assert read(kernel, "decoder4.1/dpa_resource") == "0x10000000"
    assert error(kernel, f"{X1}/dpa_size", "0") == errno.EBUSY  # freed last first
    write(kernel, "decoder4.1/dpa_size", "0")
    write(kernel, f"{X1}/dpa_size", "0")


def test_dpa_size_of_a_decoder_in_a_region_is_ebusy(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    dpa(kernel, X1, 256 * MiB)
    write(kernel, f"{region}/target0", X1)
    assert error(kernel, f"{X1}/dpa_size", "0") == errno.EBUSY


# --- targetN -----------------------------------------------------------------------------------
@pytest.fixture
def sized(kernel: FakeKernel) -> str:
    """decoder0.2/region2: 2 ways at 8K, 512 MiB, both decoders with their 256 MiB of DPA."""
    region = new_region(kernel, "decoder0.2")
    configure(kernel, region, 2, 8192, 512 * MiB)
    for d in (X1, X2):
        dpa(kernel, d, 256 * MiB)
    return region


def test_a_target_before_the_size_is_enxio(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    write(kernel, f"{region}/interleave_granularity", "256")
    write(kernel, f"{region}/interleave_ways", "1")
    dpa(kernel, X1, 256 * MiB)
    assert error(kernel, f"{region}/target0", X1) == errno.ENXIO  # "interleave config missing"


def test_a_target_no_device_has_the_name_of_is_enodev(kernel: FakeKernel, sized: str) -> None:
    assert error(kernel, f"{sized}/target0", "decoder9.0") == errno.ENODEV


@pytest.mark.parametrize("name", ["decoder0.2", "decoder2.0", "mem1", "port2"])
def test_a_target_that_is_no_endpoint_decoder_is_einval(
    kernel: FakeKernel, sized: str, name: str
) -> None:
    assert error(kernel, f"{sized}/target0", name) == errno.EINVAL


def test_a_target_below_the_wrong_host_bridge_is_enxio(kernel: FakeKernel, sized: str) -> None:
    """[lab] "failed to set target0 to mem0": target_list is 12,52."""
    assert error(kernel, f"{sized}/target0", X2) == errno.ENXIO
    assert error(kernel, f"{sized}/target1", X1) == errno.ENXIO
    assert read(kernel, f"{X2}/region") == ""
    write(kernel, f"{sized}/target0", X1)


def test_a_target_of_another_mode_is_einval(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    assert error(kernel, f"{region}/target0", X1) == errno.EINVAL  # mode none


def test_a_target_without_dpa_is_enxio(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    write(kernel, f"{X1}/mode", "ram")
    assert error(kernel, f"{region}/target0", X1) == errno.ENXIO  # "missing DPA allocation"


def test_a_target_whose_dpa_times_ways_is_not_the_size_is_einval(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.2")
    configure(kernel, region, 2, 8192, 1024 * MiB)
    dpa(kernel, X1, 256 * MiB)
    assert error(kernel, f"{region}/target0", X1) == errno.EINVAL


def test_a_taken_position_or_memdev_is_ebusy(fake_kernel: FakeKernel) -> None:
    kernel = lab(fake_kernel, ram=1024 * MiB)
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 2, 256, 512 * MiB)  # 2 ways in a 1-way window
    dpa(kernel, X1, 256 * MiB)
    dpa(kernel, "decoder4.1", 256 * MiB)
    write(kernel, f"{region}/target0", X1)
    assert error(kernel, f"{region}/target0", "decoder4.1") == errno.EBUSY  # position taken
    assert error(kernel, f"{region}/target1", "decoder4.1") == errno.EBUSY  # mem1 again


def test_a_target_past_interleave_ways_is_no_file(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    assert error(kernel, f"{region}/target1", X1) == errno.ENOENT


def test_a_target_once_all_are_set_is_ebusy(kernel: FakeKernel, sized: str) -> None:
    write(kernel, f"{sized}/target0", X1)
    write(kernel, f"{sized}/target1", X2)
    assert error(kernel, f"{sized}/target0", X1) == errno.EBUSY  # "region already active"


def test_a_second_region_on_a_host_bridge_is_ebusy(fake_kernel: FakeKernel) -> None:
    """[lab] QEMU gives a host bridge one decoder: cxl_rr_alloc_decoder() finds none free."""
    kernel = lab(fake_kernel, ram=1024 * MiB)
    create(kernel, "decoder0.0", [X1], 256 * MiB)  # host bridge 12's decoder: region0
    region = new_region(kernel, "decoder0.2")
    configure(kernel, region, 2, 8192, 512 * MiB)
    dpa(kernel, "decoder4.1", 256 * MiB)
    assert error(kernel, f"{region}/target0", "decoder4.1") == errno.EBUSY
    assert read(kernel, "decoder4.1/region") == ""
    assert read(kernel, "decoder2.0/region") == "region0"


def test_a_host_bridge_granularity_above_16k_is_einval_at_the_last_target(
    kernel: FakeKernel,
) -> None:
    """cxl_port_setup_targets(): 16K x 2 root ways is no granularity a decoder can take; the
    target stays attached (cxl_region_attach() stored it before the setup)."""
    window = kernel.add_cxl_window([12, 52], granularity=16384)
    region = new_region(kernel, window)
    configure(kernel, region, 2, 16384, 512 * MiB)
    for d in (X1, X2):
        dpa(kernel, d, 256 * MiB)
    write(kernel, f"{region}/target0", X1)
    assert error(kernel, f"{region}/target1", X2) == errno.EINVAL
    assert read(kernel, f"{region}/target1") == X2
    assert read(kernel, "decoder1.0/size") == "0x0"
    assert error(kernel, f"{region}/commit", "1") == errno.ENXIO  # never ACTIVE


def test_detaching_a_target_of_a_bound_region_takes_it_down(kernel: FakeKernel) -> None:
    region = create(kernel, "decoder0.0", [X1], 256 * MiB)
    offline_all(kernel, "dax0.0")
    kernel.uevents.clear()
    write(kernel, f"{region}/target0", "\n")
    assert summary(kernel.uevents)[-3:] == [
        ("unbind", "cxl", "dax_region0"),
        ("remove", "cxl", "dax_region0"),
        ("unbind", "cxl", "region0"),
    ]
    assert read(kernel, f"{region}/commit") == "0"
    assert read(kernel, "endpoint4/decoders_committed") == "0"
    assert read(kernel, f"{region}/target0") == ""
    write(kernel, f"{region}/target0", "\n")  # nothing there: fine


# --- commit and the cxl_region driver ----------------------------------------------------------
def test_commit_with_targets_missing_is_enxio(kernel: FakeKernel, sized: str) -> None:
    write(kernel, f"{sized}/target0", X1)
    assert error(kernel, f"{sized}/commit", "1") == errno.ENXIO
    write(kernel, f"{sized}/commit", "0")  # not committed: nothing to do
    assert read(kernel, f"{sized}/commit") == "0"


def test_commit_of_a_decoder_out_of_its_ports_order_is_ebusy(fake_kernel: FakeKernel) -> None:
    """cxl_decoder_commit(): decoder4.1 commits only after decoder4.0."""
    kernel = lab(fake_kernel, ram=1024 * MiB)
    dpa(kernel, X1, 256 * MiB)  # allocated, in no region
    region = new_region(kernel, "decoder0.0")
    configure(kernel, region, 1, 256, 256 * MiB)
    dpa(kernel, "decoder4.1", 256 * MiB)
    write(kernel, f"{region}/target0", "decoder4.1")
    assert error(kernel, f"{region}/commit", "1") == errno.EBUSY
    assert read(kernel, f"{region}/commit") == "0"
    assert read(kernel, "endpoint4/decoders_committed") == "0"


def test_commit_that_is_no_bool_is_einval(kernel: FakeKernel, sized: str) -> None:
    assert error(kernel, f"{sized}/commit", "maybe") == errno.EINVAL


def test_commit_0_of_a_bound_region_unbinds_it_first(kernel: FakeKernel) -> None:
    region = create(kernel, "decoder0.0", [X1], 256 * MiB)
    offline_all(kernel, "dax0.0")
    kernel.uevents.clear()
    write(kernel, f"{region}/commit", "0")
    assert summary(kernel.uevents)[-1] == ("unbind", "cxl", "region0")
    assert kernel.devices == {}
    assert read(kernel, "endpoint4/decoders_committed") == "0"
    assert read(kernel, f"{region}/target0") == X1  # still attached: commit 1 again works
    write(kernel, f"{region}/commit", "1")
    write(kernel, f"{DRV}/cxl_region/bind", "region0")
    assert kernel.devices["dax0.0"].driver == KMEM


def test_bind_before_commit_is_enxio(kernel: FakeKernel, sized: str) -> None:
    assert error(kernel, f"{DRV}/cxl_region/bind", "region2") == errno.ENXIO
    assert not exists(kernel, f"{sized}/dax_region2")


def test_bind_of_a_bound_region_is_ebusy(kernel: FakeKernel) -> None:
    create(kernel, "decoder0.0", [X1], 256 * MiB)
    assert error(kernel, f"{DRV}/cxl_region/bind", "region0") == errno.EBUSY


@pytest.mark.parametrize(
    ("driver", "name"),
    [("cxl_region", "region9"), ("cxl_region", "mem1"), ("cxl_port", "region0")],
)
def test_bind_of_no_such_device_or_another_drivers_is_enodev(
    kernel: FakeKernel, driver: str, name: str
) -> None:
    new_region(kernel, "decoder0.0")
    assert error(kernel, f"{DRV}/{driver}/bind", name) == errno.ENODEV


def test_unbind_of_an_unbound_region_is_enodev(kernel: FakeKernel) -> None:
    new_region(kernel, "decoder0.0")
    assert error(kernel, f"{DRV}/cxl_region/unbind", "region0") == errno.ENODEV


def test_uuid_of_a_ram_region_cannot_be_written(kernel: FakeKernel) -> None:
    region = new_region(kernel, "decoder0.0")
    value = "3e5e3c7a-1bd4-4b1c-9e4e-1d8f4c0b6a11"
    assert error(kernel, f"{region}/uuid", value) == errno.EACCES  # 0444 (cxl_region_visible())


# --- delete_region -----------------------------------------------------------------------------
def test_delete_of_no_such_region_is_enodev(kernel: FakeKernel) -> None:
    new_region(kernel, "decoder0.0")
    assert error(kernel, "decoder0.0/delete_region", "region1") == errno.ENODEV
    assert error(kernel, "decoder0.1/delete_region", "region0") == errno.ENODEV  # not its
    write(kernel, "decoder0.0/delete_region", "region0\n")
    assert not exists(kernel, "decoder0.0/region0")


def test_delete_of_a_bound_committed_region_is_not_refused(kernel: FakeKernel) -> None:
    """Only ndctl refuses, in user space: the kernel's device_del() takes it all down, and
    kmem over online memory leaks the range."""
    region = create(kernel, "decoder0.0", [X1], 256 * MiB)
    online = [b.index for b in kernel.blocks_of("dax0.0")]
    kernel.uevents.clear()
    write(kernel, "decoder0.0/delete_region", "region0")
    assert summary(kernel.uevents)[-5:] == [
        ("remove", "dax", "dax0.0"),
        ("unbind", "cxl", "dax_region0"),
        ("remove", "cxl", "dax_region0"),
        ("unbind", "cxl", "region0"),
        ("remove", "cxl", "region0"),
    ]
    (leak,) = kernel.leaks
    assert (leak.device, leak.online_blocks) == ("dax0.0", tuple(online))
    assert not exists(kernel, region)
    assert read(kernel, f"{X1}/region") == ""
    assert read(kernel, "endpoint4/decoders_committed") == "0"
    assert read(kernel, "decoder2.0/region") == ""
    write(kernel, f"{X1}/dpa_size", "0")  # free again

"""daxd/kernel/layout.py builds the paths Linux uses, and the kernel's words parse to typed values
that keep what daxd does not know."""

from __future__ import annotations

import json

import pytest

from daxd.kernel import layout
from daxd.kernel.model import BlockState, KernelZone, OnlineType, parse_zones
from daxd.kernel.scan import read_state
from tests.fakekernel import FakeKernel


def test_paths_are_the_kernels() -> None:
    assert layout.device_dir("dax1.0") == "bus/dax/devices/dax1.0"
    assert layout.legacy_device_dir("dax1.0") == "class/dax/dax1.0"
    assert layout.device_path("dax1.0", "memmap_on_memory") == (
        "bus/dax/devices/dax1.0/memmap_on_memory"
    )
    assert layout.driver_path("kmem", "new_id") == "bus/dax/drivers/kmem/new_id"
    assert layout.block_dir(40) == "devices/system/memory/memory40"
    assert layout.block_path(40) == "devices/system/memory/memory40/state"
    assert layout.block_path(40, "valid_zones") == "devices/system/memory/memory40/valid_zones"
    assert layout.AUTO_ONLINE_PATH == "devices/system/memory/auto_online_blocks"
    assert layout.BLOCK_SIZE_PATH == "devices/system/memory/block_size_bytes"
    assert layout.hotplug_param("online_policy") == (
        "module/memory_hotplug/parameters/online_policy"
    )
    assert layout.region_path("devices/platform/hmem.0", "id") == (
        "devices/platform/hmem.0/dax_region/id"
    )
    ns = layout.namespace_path("devices/ndbus0/region0/dax0.1", "namespace0.0", "uuid")
    assert ns == "devices/ndbus0/region0/namespace0.0/uuid"


@pytest.mark.parametrize(
    ("devpath", "legacy", "parent"),
    [
        ("devices/platform/hmem.0/dax0.0", False, "devices/platform/hmem.0"),
        ("devices/ndbus0/region0/dax0.0/dax/dax0.0", True, "devices/ndbus0/region0/dax0.0"),
    ],
)
def test_the_region_hangs_on_the_parent(devpath: str, legacy: bool, parent: str) -> None:
    assert layout.region_parent(devpath, legacy=legacy) == parent


@pytest.mark.parametrize(
    ("entry", "index"),
    [("memory0", 0), ("memory4096", 4096), ("memory", None), ("block_size_bytes", None),
     ("memory1x", None), ("memory1\n", None), ("power", None)],
)  # fmt: skip
def test_block_index(entry: str, index: int | None) -> None:
    assert layout.block_index(entry) == index


def test_known_words_are_the_members() -> None:
    assert BlockState("going-offline") is BlockState.GOING_OFFLINE
    assert parse_zones("Normal Movable") == (KernelZone.NORMAL, KernelZone.MOVABLE)
    assert all(z.known for z in parse_zones("DMA DMA32 Normal HighMem Movable Device none"))
    assert parse_zones("") == parse_zones(None) == ()


@pytest.mark.parametrize("word", ["Foreign", "ERROR-UNKNOWN-7", "movable", ""])
def test_an_unknown_word_is_kept_verbatim(word: str) -> None:
    for kind in (BlockState, KernelZone):
        value = kind(word)
        assert not value.known
        assert value == word
        assert (str(value), f"{value}", json.dumps(value)) == (word, word, json.dumps(word))
        assert word in repr(value)
        assert value not in list(kind)


def test_online_types_are_only_what_the_kernel_takes() -> None:
    assert OnlineType.parse("online_movable") is OnlineType.ONLINE_MOVABLE
    assert OnlineType.parse("online-movable") is None
    with pytest.raises(ValueError, match="'movable' is not a valid OnlineType"):
        OnlineType("movable")


def test_the_scanner_gives_typed_values(hmem_kernel: FakeKernel) -> None:
    state = read_state(hmem_kernel.sysfs)
    block = state.blocks_of("dax0.0")[0]
    assert block.state is BlockState.ONLINE
    assert block.valid_zones == (KernelZone.NORMAL,)
    assert block.zone is KernelZone.NORMAL
    assert state.hotplug.auto_online_blocks is OnlineType.ONLINE
    hmem_kernel.sysfs.write(layout.block_path(block.index), "offline", timeout=5)
    again = read_state(hmem_kernel.sysfs).blocks_of("dax0.0")[0]
    assert (again.state, again.valid_zones, again.zone) == (BlockState.OFFLINE, (), None)

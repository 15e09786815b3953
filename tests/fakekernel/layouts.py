"""Where each provider's dax regions live in sysfs, with the ancestors daxd looks at.

pmem: [facts] devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/dax0.0/dax0.0; the parent
nd_dax device (drivers/nvdimm/dax_devs.c, pfn_devs.c attributes) has namespace/uuid/align/mode;
drivers/dax/pmem.c names the dax device after the namespace (namespaceR.N -> daxR.N).
hmem: drivers/dax/hmem/hmem.c, dax region on the hmem.N platform device, id N.
cxl: drivers/dax/cxl.c, dax region on the cxl_dax_region device dax_regionN of CXL region regionN
(devices/platform/ACPI0017:00/root0/decoder0.W/regionN/dax_regionN; the cxl bus: cxl.py).
"""

from __future__ import annotations

from tests.fakekernel.cxl import CxlRegion
from tests.fakekernel.daxbus import FakeRegion
from tests.fakekernel.tree import Tree

NDBUS = "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0"
PLATFORM = "devices/platform"
PMD = 2 << 20


def pmem_region(
    tree: Tree,
    rid: int,
    ns_id: int,
    start: int,
    size: int,
    *,
    target_node: int,
    numa_node: int,
    align: int,
    uuid: str,
    namespace_uuid: str,
    legacy: bool = False,
) -> FakeRegion:
    region = f"{NDBUS}/region{rid}"
    nd_dax = f"{region}/dax{rid}.{ns_id}"
    ns = f"{region}/namespace{rid}.{ns_id}"
    tree.attr(f"{NDBUS}/provider", "ACPI.NFIT")
    tree.attr(f"{region}/devtype", "nd_pmem")
    tree.attr(f"{region}/numa_node", str(numa_node))
    tree.attr(f"{region}/target_node", str(target_node))
    tree.attr(f"{region}/dax_seed", f"dax{rid}.{ns_id + 1}")
    tree.attr(f"{ns}/devtype", "nd_namespace_pmem")
    tree.attr(f"{ns}/uuid", namespace_uuid, 0o644)
    tree.attr(f"{ns}/mode", "dax")
    tree.attr(f"{ns}/holder", f"dax{rid}.{ns_id}")
    tree.attr(f"{nd_dax}/devtype", "nd_dax")
    tree.attr(f"{nd_dax}/namespace", f"namespace{rid}.{ns_id}", 0o644)
    tree.attr(f"{nd_dax}/uuid", uuid, 0o644)
    tree.attr(f"{nd_dax}/align", str(align), 0o644)
    tree.attr(f"{nd_dax}/mode", "pmem", 0o644)
    tree.link(f"{nd_dax}/driver", "bus/nd/drivers/dax_pmem")
    # The region's next nd_dax seed: same name shape as a dax device, but not on the dax bus.
    tree.attr(f"{region}/dax{rid}.{ns_id + 1}/namespace", "", 0o644)
    tree.attr(f"{region}/dax{rid}.{ns_id + 1}/uuid", "", 0o644)
    return FakeRegion(
        id=rid,
        provider="pmem",
        parent=nd_dax,
        start=start,
        end=start + size - 1,
        static=True,
        kmem_type=False,
        target_node=target_node,
        numa_node=numa_node,
        align=align,
        legacy=legacy,
    )


def hmem_region(
    tree: Tree, rid: int, start: int, end: int, *, target_node: int, numa_node: int
) -> FakeRegion:
    parent = f"{PLATFORM}/hmem.{rid}"
    tree.attr(f"{parent}/modalias", "platform:hmem")
    tree.attr(f"{parent}/numa_node", str(numa_node))
    tree.link(f"{parent}/driver", "bus/platform/drivers/hmem")
    return FakeRegion(
        id=rid,
        provider="hmem",
        parent=parent,
        start=start,
        end=end,
        static=False,
        kmem_type=True,
        target_node=target_node,
        numa_node=numa_node,
        align=PMD,
    )


def cxl_region(
    region: CxlRegion, start: int, end: int, *, target_node: int, numa_node: int
) -> FakeRegion:
    """The dax region of a CXL region (tests/fakekernel/cxl.py made the region and its
    dax_regionR, which carries it)."""
    return FakeRegion(
        id=region.id,
        provider="cxl",
        parent=region.dax_region_path,
        start=start,
        end=end,
        static=False,
        kmem_type=True,
        target_node=target_node,
        numa_node=numa_node,
        align=PMD,
    )

"""Which subsystem created a DAX device, from its real sysfs path; for pmem also its namespace.

Real paths (below /sys) of a dax bus device, by the driver that created its dax region:

- pmem (drivers/dax/pmem.c, parent is the nvdimm ``nd_dax`` device, drivers/nvdimm/dax_devs.c):
  ``devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/dax0.0/dax0.0`` (observed on 6.12);
  legacy e820 pmem: ``devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0``; CXL persistent
  regions also show up below an ``ndbus``.
- hmem (drivers/dax/hmem/hmem.c, parent is the ``hmem.N`` platform device):
  ``devices/platform/hmem.0/dax0.0``.
- cxl (drivers/dax/cxl.c, parent is the ``cxl_dax_region`` device ``dax_regionN`` of CXL region
  ``regionN``): ``devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.0``.
"""

from __future__ import annotations

import posixpath
import re

from daxd.kernel.attrs import AttrReader
from daxd.kernel.layout import namespace_path
from daxd.kernel.model import Provider

_PMEM = re.compile(r"(?:^|/)ndbus[0-9]+/region[0-9]+/")
_HMEM = re.compile(r"(?:^|/)hmem\.[0-9]+/")
_CXL = re.compile(r"(?:^|/)dax_region[0-9]+/")
# The nvdimm devices between the region and the dax device: nd_dax "daxR.K" (its name is not the
# dax device's: pmem.c names the dax device after the namespace id).
_ND_DAX = re.compile(r"^dax[0-9]+\.[0-9]+\Z")
_NAMESPACE = re.compile(r"^namespace[0-9]+\.[0-9]+\Z")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)


def detect_provider(devpath: str) -> Provider:
    """The provider of a dax device from its real path below the sysfs root."""
    # pmem first: CXL *persistent* regions sit below an ndbus of the CXL nvdimm bridge.
    if _PMEM.search(devpath):
        return Provider.PMEM
    if _HMEM.search(devpath):
        return Provider.HMEM
    if _CXL.search(devpath):
        return Provider.CXL
    return Provider.UNKNOWN


def read_pmem_identity(reader: AttrReader, nd_dax: str) -> tuple[str | None, str | None]:
    """(namespace name, uuid) of a pmem dax device whose parent is ``nd_dax``, as ndctl shows them.

    The parent ``nd_dax`` device has ``namespace`` (the claimed namespace's name) and ``uuid``
    (the dax info block's uuid; ndctl's util_namespace_to_json() prints it as the namespace's
    "uuid" in devdax mode, and the label uuid as "raw_uuid").  When the nd_dax has no uuid, the
    namespace's own ``uuid`` is used; label-less (``nd_namespace_io``) namespaces have none.
    """
    if not _ND_DAX.match(posixpath.basename(nd_dax)):
        reader.note(nd_dax, "pmem dax device whose parent is not an nd_dax device")
        return None, None
    namespace = reader.text(f"{nd_dax}/namespace", required=False, allow_empty=True) or None
    if namespace is not None and not _NAMESPACE.match(namespace):
        # Never build a path from a name the kernel did not print the expected way.
        reader.note(f"{nd_dax}/namespace", f"unexpected namespace name {namespace[:40]!r}")
        namespace = None
    uuid = _uuid(reader, f"{nd_dax}/uuid")
    if uuid is None and namespace is not None:
        uuid = _uuid(reader, namespace_path(nd_dax, namespace, "uuid"))
    return namespace, uuid


def _uuid(reader: AttrReader, rel: str) -> str | None:
    value = reader.text(rel, required=False, allow_empty=True)
    if not value:
        return None
    if not _UUID.match(value):
        reader.note(rel, f"not a uuid: {value[:40]!r}")
        return None
    return value.lower()

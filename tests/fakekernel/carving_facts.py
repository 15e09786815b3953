"""The answers the fake kernel gives to the probes of tests/vm/guest/carving-probe.sh.

The script carves a 512 MiB hmem dax region (daxR.0 bound to kmem at boot, blocks offline) on a
real kernel and records each write's answer in ``carving.txt`` ("<probe>: <ok|ERRNO>") and the
values it reads back in ``carving-reads.txt``; tests/kernel/test_fake_dax_carving.py runs the
same steps on the fake. A VM test compares the script's files with these tables: a difference
is a fact the fake must learn. The answers come from reading drivers/dax/bus.c (see
tests/fakekernel/daxbus.py); only the region's file modes were seen on a real 6.12 ([lab]
hmem-kmem.json). ``FROM_SOURCE`` names those the reading was least sure of.
"""

from __future__ import annotations

from tests.fakekernel.memory import MiB

REGION_SIZE = 512 * MiB

# probe -> "ok" or the errno's name, in the script's order.
EXPECTED: dict[str, str] = {
    # daxR.0 bound to kmem over the whole region
    "create-garbage": "EINVAL",
    "create-two": "EINVAL",
    "create-huge": "ERANGE",  # kstrtoint()
    "create-no-space": "ENOSPC",
    "delete-missing": "ENXIO",
    "delete-bound": "EBUSY",
    "size-misaligned-bound": "EINVAL",  # alignment is checked before the driver
    "size-garbage": "EINVAL",
    "size-bound": "EBUSY",
    "align-garbage": "ENXIO",  # align_store(): a kstrtoul() failure is ENXIO
    "align-3m": "EINVAL",
    "align-bound": "EBUSY",
    "mapping-garbage": "EINVAL",
    "mapping-overlap": "ENOMEM",
    # released, then carved
    "offline-blocks": "ok",
    "kmem-unbind": "ok",
    "delete-id0-sized": "EBUSY",
    "size-not-multiple": "EINVAL",
    "grow-no-space": "ENOSPC",
    "shrink-half": "ok",
    "create": "ok",
    "create-again": "ok",
    "bind-empty": "ENXIO",
    "size-new": "ok",
    "delete-sized": "EBUSY",
    "align-1g": "EINVAL",
    "align-4k": "ok",
    "size-4k-step": "EINVAL",  # whole 2 MiB even with align 4K (memremap_compat_align())
    "align-2m-misfit": "ok",  # so the ranges still are
    "size-4k-back": "ok",
    "align-2m": "ok",
    "kmem-bind-new": "ok",
    "size-bound-new": "EBUSY",
    "delete-bound-new": "EBUSY",
    # holes
    "shrink-id0-quarter": "ok",
    "size-third": "ok",
    "grow-id0-around": "ok",
    "shrink-id0-back": "ok",
    "mapping-add": "ok",
    "mapping-misaligned": "ok",  # nothing added (rc left 0 since the dax_region_rwsem rework)
    "mapping-outside": "ENOMEM",
    "mapping-taken": "ENOMEM",
    # back as it was
    "size-third-zero": "ok",
    "delete-third": "ok",
    "offline-blocks-new": "ok",
    "kmem-unbind-new": "ok",
    "size-new-zero": "ok",
    "delete-new": "ok",
    "shrink-id0-zero": "ok",
    "delete-id0-empty": "EBUSY",
    "create-after-free": "ok",
    "delete-after-free": "ok",
    "grow-back": "ok",
    "kmem-bind-back": "ok",
}

_H, _Q = REGION_SIZE // 2, REGION_SIZE // 4


def _ranges(*spans: tuple[int, int]) -> str:
    return ",".join(f"0x{off:x}+0x{n:x}" for off, n in spans)


# name -> value read back (devices by their id in the region, ranges from the region's start).
EXPECTED_READS: dict[str, str] = {
    "region-size": str(REGION_SIZE),
    "seed-at-boot": "",
    "size-after-shrink": str(_H),
    "available-after-shrink": str(_H),
    "ranges-after-shrink": _ranges((0, _H)),
    "seed-before-create": "",
    "create-reads": "1",
    "seed-after-create": "1",
    "new-size": "0",
    "new-align": str(2 * MiB),
    "new-resource": "0x0",  # resource_show(): the region's start while there is no range
    "new-driver": "none",
    "new-memmap": "0",
    "mode-region-create": "644",
    "mode-region-delete": "200",
    "mode-region-seed": "444",
    "mode-region-available_size": "444",
    "mode-region-size": "444",
    "mode-region-align": "400",
    "mode-region-id": "444",
    "mode-device-size": "644",
    "mode-device-align": "644",
    "mode-device-mapping": "200",
    "mode-device-resource": "400",
    "mode-device-memmap_on_memory": "644",
    "mode-device-target_node": "444",
    "youngest-after-create-again": "2",
    "seed-after-create-again": "1",
    "ranges-new": _ranges((_H, _Q)),
    "available-after-size-new": str(_Q),
    "align-after-4k": "4096",
    "region-align-after-4k": str(2 * MiB),
    "ranges-after-4k-step": _ranges((_H, _Q)),
    "align-after-misfit": str(2 << 20),
    "ranges-after-4k-back": _ranges((_H, _Q)),  # the last range extended, not a second one
    "seed-after-bind": "",  # no new seed although daxR.2 is empty
    "youngest-after-bind": "2",
    "ranges-third": _ranges((_Q, 64 * MiB)),
    "ranges-id0-after-grow": _ranges((0, _Q), (_Q + 64 * MiB, 64 * MiB)),
    "resource-id0-after-grow": "0x0",
    "page-offset-id0-mapping1": f"{_Q // 4096:#x}",
    "ranges-id0-after-shrink-back": _ranges((0, _Q)),
    "ranges-third-after-mapping": _ranges((_Q, 64 * MiB), (_Q + 64 * MiB, 32 * MiB)),
    "ranges-third-after-misaligned": _ranges((_Q, 64 * MiB), (_Q + 64 * MiB, 32 * MiB)),
    "youngest-after-delete": "",
    "seed-after-delete": "",
    "available-empty": str(REGION_SIZE),
    "create-after-free-reads": "1",
    "seed-after-create-after-free": "1",
    "ranges-id0-back": _ranges((0, REGION_SIZE)),
    "driver-id0-back": "kmem",
}

# Unusual answers that follow from the source's text (error paths with odd codes, no merging).
FROM_SOURCE = frozenset(
    {
        "create-huge",
        "align-garbage",
        "mapping-overlap",
        "mapping-misaligned",
        "mapping-outside",
        "mapping-taken",
        "seed-after-bind",
        "ranges-after-4k-back",
        "ranges-id0-after-grow",
        "ranges-third-after-mapping",
    }
)

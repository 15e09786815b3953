"""Planning the policy's CXL regions against the topology: which exist, which to build and how,
which to tear down, and why any cannot be.

Building a region is what ``cxl create-region -t ram`` does through sysfs (drivers/cxl/core
region.c, hdm.c): take the region name the root decoder offers (``create_ram_region``), set its
interleave granularity and ways and its size, give each memdev's next free endpoint decoder
``mode`` ram and its share as ``dpa_size``, set ``targetK`` to the endpoint decoder at position
K, commit, and bind it to the ``cxl_region`` driver, whereupon the dax region and its device
appear. The window's ``target_list`` says which host bridge each position must sit below
(position K below ``target_list[K mod window ways]``): daxd orders the memdevs itself.

Tearing one down is the reverse, and only once no memory of it is online (its dax devices are
first planned as ``online: false``, daxd.policy.model.release_rule) and no program uses a
/dev/daxR.N of it: unbind the region (its dax devices
go), reset the commit, clear the targets, free the DPA, delete the region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from daxd.kernel.cxl_topology import CxlTopology, EndpointDecoder, Memdev, Region, Window
from daxd.kernel.layout import cxl_device_dir
from daxd.kernel.model import DRIVER_KMEM, KernelState
from daxd.policy.regions import SIZE_GRANULE, CxlRegionSpec, MemdevRef, show_bytes
from daxd.policy.regions import Window as WindowSelector

CXL_REGION_DRIVER = "bus/cxl/drivers/cxl_region"


class RegionVerdict(StrEnum):
    IN_SYNC = "in-sync"  # the region exists as the policy describes it (or is absent as asked)
    CREATE = "create"
    DESTROY = "destroy"
    # state: absent, but memory of it is still online: its devices are taken offline first
    RELEASE = "release"
    WAITING = "waiting"  # a memdev is not on the cxl bus (yet)
    REFUSED = "refused"  # cannot be built (or torn down) as described: reason says why


class RegionAction(StrEnum):
    CREATE = "create-region"
    SET = "set"  # a region or endpoint decoder attribute, read back after the write
    COMMIT = "commit"
    BIND = "bind-region"
    UNBIND = "unbind-region"
    RESET = "reset-commit"
    CLEAR_TARGET = "clear-target"
    FREE_DPA = "free-dpa"
    DELETE = "delete-region"


@dataclass(frozen=True)
class RegionStep:
    action: RegionAction
    path: str  # relative to the sysfs root
    value: str
    reason: str
    expect: str | None = None  # what the attribute reads after the write (None: not read back)

    def describe(self) -> str:
        return f"write {self.value!r} to {self.path}  # {self.reason}"


@dataclass(frozen=True)
class RegionPlan:
    name: str  # the policy's region name
    location: str
    verdict: RegionVerdict
    reason: str = ""
    region: str | None = None  # the kernel's regionR (existing, or the one to be created)
    window: str | None = None
    memdevs: tuple[str, ...] = ()  # "mem1 (serial 0x1000)" in interleave order
    size: int | None = None
    steps: tuple[RegionStep, ...] = ()
    devices: tuple[str, ...] = ()  # its dax devices now
    notes: tuple[str, ...] = field(default=())


def region_path(window: str, region: str, attr: str) -> str:
    return f"{cxl_device_dir(window)}/{region}/{attr}"


def decoder_path(decoder: str, attr: str) -> str:
    return f"{cxl_device_dir(decoder)}/{attr}"


# --- which memdevs ------------------------------------------------------------------------------
def _below(md: Memdev, bridge: int | str | None) -> bool:
    if isinstance(bridge, str):
        return md.host_bridge == bridge
    return md.host_bridge_uid == bridge


def _resolve(
    topo: CxlTopology, refs: Sequence[MemdevRef]
) -> tuple[list[Memdev], list[str], str | None]:
    """The memdevs named (in the order written), those missing, or why the names do not say."""
    found: list[Memdev] = []
    missing: list[str] = []
    for ref in refs:
        if ref.serial is not None:
            md = topo.memdev_by_serial(ref.serial)
            if md is None:
                missing.append(str(ref))
            else:
                found.append(md)
            continue
        below = [m for m in topo.memdevs if _below(m, ref.host_bridge) and m not in found]
        if not below:
            missing.append(f"a memdev below {ref}")
        elif len(below) > 1:
            names = ", ".join(m.label() for m in below)
            return found, missing, f"{ref} has {len(below)} memdevs ({names}); name one by serial"
        else:
            found.append(below[0])
    return found, missing, None


def _region_of(topo: CxlTopology, memdevs: Sequence[Memdev]) -> Region | None:
    """The region whose targets are exactly these memdevs, in any order."""
    want = sorted(m.name for m in memdevs)
    for region in topo.regions:
        have = topo.region_memdevs(region)
        if all(have) and sorted(m.name for m in have if m) == want:
            return region
    return None


def _window_matches(window: Window, wanted: WindowSelector | None) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return fnmatchcase(window.name, wanted)
    return window.start is not None and window.start in wanted


# --- where and how ------------------------------------------------------------------------------
def _order(window: Window, memdevs: Sequence[Memdev]) -> list[Memdev] | None:
    """The memdevs in interleave order for this window: position K below target_list[K mod W];
    None when they do not fit its host bridges."""
    w = len(window.target_uids)
    if not w or len(memdevs) % w:
        return None
    pools: dict[int | None, list[Memdev]] = {}
    for md in sorted(memdevs, key=lambda m: (m.serial or 0, m.name)):
        pools.setdefault(md.host_bridge_uid, []).append(md)
    ordered = []
    for k in range(len(memdevs)):
        pool = pools.get(window.target_uids[k % w])
        if not pool:
            return None
        ordered.append(pool.pop(0))
    return ordered


def _window_free(topo: CxlTopology, window: Window) -> int:
    """The window's largest free extent: the kernel puts a region in the lowest gap that fits
    (alloc_free_mem_region()); a larger one gets ERANGE."""
    if window.start is None or window.size is None:
        return 0
    taken = sorted(
        (r.start, r.start + r.size)
        for r in topo.regions_in(window.name)
        if r.start is not None and r.size is not None and r.start < window.start + window.size
    )
    largest, at = 0, window.start
    for begin, end in taken:
        largest = max(largest, begin - at)
        at = max(at, end)
    return max(largest, window.start + window.size - at)


def _why_not(window: Window, memdevs: Sequence[Memdev], topo: CxlTopology) -> str:
    uids = ", ".join(str(u) for u in window.target_uids) or "none"
    if not window.cap_ram:
        return f"{window.name} cannot hold RAM (cap_ram 0)"
    if _order(window, memdevs) is None:
        return f"{window.name} interleaves host bridges {uids}, which these memdevs are not below"
    return f"{window.name} has no room left ({show_bytes(_window_free(topo, window))} free)"


def _free_capacity(md: Memdev) -> int | None:
    if md.ram_size is None:
        return None
    return max(0, md.ram_size - md.used)


def plan_region(
    spec: CxlRegionSpec,
    topo: CxlTopology,
    state: KernelState,
    users: Mapping[str, str] | None = None,
    leftover: Leftover | None = None,
) -> RegionPlan:
    """What to do for one region of the policy; ``state`` says which of its dax devices have
    memory online, ``users`` which are in use (device name -> who, daxd.kernel.users),
    ``leftover`` what an interrupted build of it left."""
    if leftover is not None and spec.state == "present":
        cleanup = _leftover_steps(topo, leftover)
        if cleanup:
            cleaned = _without(topo, topo.region(leftover.region), leftover.decoders)
            rebuilt = plan_region(spec, cleaned, state, users)
            if rebuilt.verdict is RegionVerdict.CREATE:
                return _r(
                    rebuilt,
                    reason=f"{rebuilt.reason} (removing first what an interrupted build left)",
                    steps=cleanup + rebuilt.steps,
                )
    base = RegionPlan(spec.name, spec.location, RegionVerdict.REFUSED)
    if spec.type != "ram":
        return _r(base, reason=f"type {spec.type} regions are not supported; only ram")
    found, missing, ambiguous = _resolve(topo, spec.memdevs)
    if ambiguous:
        return _r(base, reason=ambiguous)
    existing = _region_of(topo, found) if not missing else None
    if spec.state == "absent":
        return _plan_absent(base, topo, existing, state, users or {})
    if missing:
        return _r(
            base,
            verdict=RegionVerdict.WAITING,
            reason=f"waiting for {', '.join(missing)}: not on the cxl bus",
        )
    labels = tuple(m.label() for m in found)
    if existing is not None:
        return _plan_existing(_r(base, memdevs=labels), spec, topo, existing, state)
    for bridge in sorted({m.host_bridge for m in found if m.host_bridge}):
        hb = topo.host_bridge(bridge)
        if hb is not None and hb.port is not None and hb.free_decoders == 0:
            through = sorted(
                {
                    r.name
                    for r in topo.regions
                    for m in topo.region_memdevs(r)
                    if m is not None and m.host_bridge == bridge
                }
            )
            holders = ", ".join(through) or "all in use"
            return _r(
                base,
                reason=f"host bridge {bridge} has no free decoder ({holders} goes through it): a "
                "host bridge decodes as many regions as it has decoders",
            )
    for md in found:
        if md.free_decoder is None:
            held = ", ".join(sorted({d.region for d in md.decoders if d.region}))
            return _r(base, reason=f"{md.label()} has no free decoder (in {held})")
    candidates = [
        w
        for w in topo.windows
        if _window_matches(w, spec.window) and w.cap_ram and len(w.target_uids) > 0
    ]
    if not candidates:
        where = f"matching {spec.window}" if spec.window is not None else "on the cxl bus"
        return _r(base, reason=f"no window (root decoder) {where} can hold RAM")
    fitting = [w for w in candidates if _order(w, found) is not None and _window_free(topo, w)]
    if not fitting:
        return _r(base, reason="; ".join(_why_not(w, found, topo) for w in candidates))
    # The narrowest window that fits: an x1 window for one memdev rather than an interleave.
    window = min(fitting, key=lambda w: (len(w.target_uids), w.name))
    ordered = _order(window, found)
    assert ordered is not None
    return _plan_create(base, spec, topo, window, ordered)


def _r(plan: RegionPlan, **changes: Any) -> RegionPlan:
    return replace(plan, **changes)


def _plan_existing(
    base: RegionPlan, spec: CxlRegionSpec, topo: CxlTopology, region: Region, state: KernelState
) -> RegionPlan:
    base = _r(
        base,
        region=region.name,
        window=region.window,
        size=region.size,
        devices=region.dax_devices,
        # in the region's interleave order, not as the policy lists them
        memdevs=tuple(m.label() if m else "?" for m in topo.region_memdevs(region)),
    )
    problems = []
    if region.interleave_ways != spec.interleave_ways:
        problems.append(f"{region.interleave_ways} ways, the policy says {spec.interleave_ways}")
    if spec.size is not None and region.size != spec.size:
        problems.append(
            f"size {show_bytes(region.size or 0)}, the policy says {show_bytes(spec.size)}"
        )
    if spec.granularity is not None and region.interleave_granularity != spec.granularity:
        problems.append(
            f"granularity {region.interleave_granularity}, the policy says {spec.granularity}"
        )
    window = topo.window(region.window)
    if window is not None and not _window_matches(window, spec.window):
        problems.append(f"it is in {region.window}, the policy says {spec.window}")
    if problems:
        return _r(
            base,
            reason=f"{region.name} on these memdevs differs: {'; '.join(problems)}; daxd does not "
            "rebuild a region with memory: tear it down (state: absent) to change it",
        )
    if region.committed and region.bound:
        return _r(base, verdict=RegionVerdict.IN_SYNC, reason=f"{region.name} exists")
    if region.committed:
        step = RegionStep(
            RegionAction.BIND, f"{CXL_REGION_DRIVER}/bind", region.name, "enable the region"
        )
        return _r(
            base,
            verdict=RegionVerdict.CREATE,
            reason=f"{region.name} is committed but not enabled",
            steps=(step,),
        )
    # Left half-built (a create cut short): nothing of it is memory yet; build it again.
    steps = teardown_steps(topo, region)
    rebuilt = plan_region(spec, _without(topo, region), state)
    if rebuilt.verdict is not RegionVerdict.CREATE:
        return rebuilt
    return _r(
        rebuilt,
        reason=f"{region.name} was left half-built (not committed): build it again",
        steps=steps + rebuilt.steps,
    )


def _without(topo: CxlTopology, region: Region | None, decoders: Sequence[str] = ()) -> CxlTopology:
    """The topology once a half-built region is deleted and the DPA of ``decoders`` freed."""
    gone = region.name if region is not None else None

    def freed(d: EndpointDecoder) -> EndpointDecoder:
        if (gone is not None and d.region == gone) or (d.region is None and d.name in decoders):
            return replace(d, region=None, dpa_size=0)
        return d

    memdevs = tuple(replace(m, decoders=tuple(map(freed, m.decoders))) for m in topo.memdevs)
    if region is None:
        return replace(topo, memdevs=memdevs)
    windows = tuple(
        replace(w, next_region=region.name) if w.name == region.window else w for w in topo.windows
    )
    regions = tuple(r for r in topo.regions if r.name != region.name)
    return replace(topo, memdevs=memdevs, windows=windows, regions=regions)


@dataclass(frozen=True)
class Leftover:
    """What an interrupted build of a policy region had made, as daxd recorded it before its
    first write (daxd.apply.cxl_regions): the region it created and the decoders it gave DPA.
    Without such a record daxd never removes a region or DPA it finds: it may be another's."""

    region: str
    window: str
    decoders: tuple[str, ...]


def _leftover_steps(topo: CxlTopology, leftover: Leftover) -> tuple[RegionStep, ...]:
    """Undo what the record names and the kernel still shows; a region it got as far as
    committing is left to the usual checks (it is in sync, or is enabled)."""
    region = topo.region(leftover.region)
    if region is not None and (region.committed or region.window != leftover.window):
        return ()
    steps = list(teardown_steps(topo, region)) if region is not None else []
    freed = {st.path for st in steps}
    for md in topo.memdevs:
        for d in md.decoders:
            path = decoder_path(d.name, "dpa_size")
            if (
                d.name in leftover.decoders
                and d.region is None
                and d.dpa_size
                and path not in freed
            ):
                steps.append(_free(d.name, f"{md.label()}: free {d.name} (left by daxd)"))
    return tuple(steps)


def _plan_create(
    base: RegionPlan,
    spec: CxlRegionSpec,
    topo: CxlTopology,
    window: Window,
    ordered: list[Memdev],
) -> RegionPlan:
    ways = len(ordered)
    labels = tuple(m.label() for m in ordered)
    base = _r(base, window=window.name, memdevs=labels)
    window_ways = len(window.target_uids)
    granularity = spec.granularity or window.interleave_granularity
    if granularity is None:
        return _r(base, reason=f"{window.name}/interleave_granularity is unreadable")
    if window_ways > 1 and granularity != window.interleave_granularity:
        # region.c interleave_granularity_store(): an interleaved window fixes it
        return _r(
            base,
            reason=f"{window.name} interleaves its host bridges every "
            f"{show_bytes(window.interleave_granularity or 0)}; a region in it cannot use "
            f"{show_bytes(granularity)}",
        )
    per_way = SIZE_GRANULE
    room = _window_free(topo, window) // (SIZE_GRANULE * ways) * (SIZE_GRANULE * ways)
    free = [_free_capacity(m) for m in ordered]
    if spec.size is not None:
        per_way = spec.size // ways
        short = [
            m.label() for m, f in zip(ordered, free, strict=True) if f is not None and f < per_way
        ]
        if short:
            return _r(
                base, reason=f"{', '.join(short)} lacks {show_bytes(per_way)} of free capacity"
            )
        size = spec.size
    else:
        if any(f is None for f in free):
            unknown = [m.name for m, f in zip(ordered, free, strict=True) if f is None]
            return _r(base, reason=f"capacity unknown ({', '.join(unknown)}/ram/size unreadable)")
        per_way = min(f for f in free if f is not None) // SIZE_GRANULE * SIZE_GRANULE
        size = per_way * ways
    if size > room:
        size_text = "all free capacity" if spec.size is None else show_bytes(size)
        return _r(
            base,
            reason=f"{window.name} has {show_bytes(room)} free, {size_text} needs "
            f"{show_bytes(size)}",
        )
    if per_way == 0 or size == 0:
        return _r(base, reason="no free capacity on " + ", ".join(labels))
    name = window.next_region
    if name is None:
        return _r(base, reason=f"{window.name}/create_ram_region offers no region name")
    steps: list[RegionStep] = [
        RegionStep(
            RegionAction.CREATE,
            decoder_path(window.name, "create_ram_region"),
            name,
            f"a RAM region in {window.name}",
        ),
        _set(window.name, name, "interleave_granularity", str(granularity)),
        _set(window.name, name, "interleave_ways", str(ways)),
        # the window's address space first: targets attach only to a sized region (ENXIO)
        _set(window.name, name, "size", f"{size:#x}"),
    ]
    for k, md in enumerate(ordered):  # as cxl create-region: each memdev's DPA, then its place
        decoder = md.free_decoder
        assert decoder is not None
        steps.append(
            RegionStep(
                RegionAction.SET,
                decoder_path(decoder.name, "mode"),
                "ram",
                f"{md.label()}: {decoder.name} decodes RAM",
                expect="ram",
            )
        )
        steps.append(
            RegionStep(
                RegionAction.SET,
                decoder_path(decoder.name, "dpa_size"),
                f"{per_way:#x}",
                f"{md.label()}: {show_bytes(per_way)} of its capacity",
                expect=f"{per_way:#x}",
            )
        )
        steps.append(
            _set(window.name, name, f"target{k}", decoder.name, why=f"position {k}: {md.label()}")
        )
    steps.append(
        RegionStep(
            RegionAction.COMMIT, region_path(window.name, name, "commit"), "1", "commit", "1"
        )
    )
    steps.append(
        RegionStep(RegionAction.BIND, f"{CXL_REGION_DRIVER}/bind", name, "enable the region")
    )
    gran_note = f", granularity {show_bytes(granularity)}" if ways > 1 else ""
    return _r(
        base,
        verdict=RegionVerdict.CREATE,
        region=name,
        size=size,
        steps=tuple(steps),
        reason=f"create {name}: {show_bytes(size)} in {window.name}, {ways} way"
        f"{'s' if ways > 1 else ''}{gran_note}",
    )


def _set(
    window: str,
    region: str,
    attr: str,
    value: str,
    *,
    expect: str | None = None,
    why: str | None = None,
) -> RegionStep:
    return RegionStep(
        RegionAction.SET,
        region_path(window, region, attr),
        value,
        why or attr.replace("_", " "),
        expect=value if expect is None else expect,
    )


def _free(decoder: str, reason: str) -> RegionStep:
    return RegionStep(
        RegionAction.FREE_DPA, decoder_path(decoder, "dpa_size"), "0", reason, expect="0"
    )


# --- teardown -----------------------------------------------------------------------------------
def _plan_absent(
    base: RegionPlan,
    topo: CxlTopology,
    region: Region | None,
    state: KernelState,
    users: Mapping[str, str],
) -> RegionPlan:
    if region is None:
        return _r(base, verdict=RegionVerdict.IN_SYNC, reason="absent, as the policy says")
    base = _r(base, region=region.name, window=region.window, size=region.size)
    mine = [d for d in state.devices.values() if d.cxl is not None and d.cxl.region == region.name]
    base = _r(base, devices=tuple(d.name for d in mine))
    online = [
        d.name
        for d in mine
        if d.driver == DRIVER_KMEM and any(b.online for b in state.blocks_of(d.name))
    ]
    busy = [f"{d.name} ({users[d.name]})" for d in mine if d.name in users]
    if busy:
        return _r(base, reason=f"in use: {', '.join(busy)}; {region.name} stays until it is not")
    if online:
        return _r(
            base,
            verdict=RegionVerdict.RELEASE,
            reason=f"memory of {', '.join(online)} is online: taken offline before {region.name} "
            "is torn down",
        )
    return _r(
        base,
        verdict=RegionVerdict.DESTROY,
        reason=f"tear down {region.name} (state: absent)",
        steps=teardown_steps(topo, region),
    )


def teardown_steps(topo: CxlTopology, region: Region) -> tuple[RegionStep, ...]:
    """``cxl destroy-region`` without --force: unbind, reset the commit, per position detach
    the endpoint decoder and free its DPA, delete."""
    w, name = region.window, region.name
    steps: list[RegionStep] = []
    if region.bound:
        steps.append(
            RegionStep(RegionAction.UNBIND, f"{CXL_REGION_DRIVER}/unbind", name, "disable")
        )
    if region.committed:
        steps.append(
            RegionStep(RegionAction.RESET, region_path(w, name, "commit"), "0", "reset", "0")
        )
    # per position, as cxl destroy-region: detach the decoder, then free its DPA
    attached: set[str] = set()
    for k, decoder in enumerate(region.targets):
        if not decoder:
            continue
        attached.add(decoder)
        steps.append(
            RegionStep(
                RegionAction.CLEAR_TARGET,
                region_path(w, name, f"target{k}"),
                "\n",
                f"detach {decoder}",
                expect="",
            )
        )
        md = topo.memdev_of_decoder(decoder)
        label = md.label() if md is not None else decoder
        steps.append(_free(decoder, f"{label}: free {decoder}"))
    for md in topo.memdevs:  # DPA held for the region by a decoder not (yet) at a position
        for d in md.decoders:
            if d.region == name and d.dpa_size and d.name not in attached:
                steps.append(_free(d.name, f"{md.label()}: free {d.name}"))
    steps.append(RegionStep(RegionAction.DELETE, decoder_path(w, "delete_region"), name, "delete"))
    return tuple(steps)

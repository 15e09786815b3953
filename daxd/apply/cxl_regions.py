"""Building and tearing down CXL regions: the plan's writes, each read back, and when one fails,
whatever the build made undone, so no region is left half-committed.

After the bind, the kernel adds the dax region and its device, and kmem binds it by itself;
:func:`apply_region` waits (bounded) for the dax device so that the device rules can take it in
the same pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daxd.apply import autoonline
from daxd.apply.settle import unsettled
from daxd.kernel.cxl_topology import read_cxl_topology
from daxd.kernel.layout import AUTO_ONLINE_PATH, DEVICE_NAME, block_path, cxl_device_dir
from daxd.kernel.model import DRIVER_KMEM, KernelState, OnlineType
from daxd.kernel.scan import read_state
from daxd.kernel.sysfs import Sysfs, SysfsError
from daxd.kernel.users import cxl_device_users
from daxd.plan.cxl_regions import (
    Leftover,
    RegionAction,
    RegionPlan,
    RegionStep,
    RegionVerdict,
    decoder_path,
    plan_region,
    teardown_steps,
)
from daxd.policy.model import Policy

log = logging.getLogger("daxd")

DAX_DEVICE_WAIT = 10.0  # s: [lab] the dax device follows the bind within a second


@dataclass(frozen=True)
class RegionStepResult:
    step: RegionStep
    ok: bool
    error: str = ""


@dataclass
class RegionResult:
    plan: RegionPlan
    ok: bool = True
    error: str = ""
    results: list[RegionStepResult] = field(default_factory=list)
    undone: list[RegionStepResult] = field(default_factory=list)  # the rollback's writes
    devices: tuple[str, ...] = ()  # the region's dax devices once built
    seconds: float = 0.0


def apply_region(
    sysfs: Sysfs,
    plan: RegionPlan,
    *,
    runtime: Path | None = None,
    auto_online: str | None = None,
    bound: Callable[[str], bool] | None = None,
    wait: float = DAX_DEVICE_WAIT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RegionResult:
    """Run a CREATE or DESTROY plan; any other verdict has nothing to write.

    ``runtime``: daxd's runtime folder, where a build is recorded before its first write and
    forgotten once it is done or undone: a daxd killed in between finds the record
    (:func:`read_leftovers`) and removes what the build had made before building again.

    ``auto_online``: the kernel's ``auto_online_blocks`` now. Unless it is ``offline``, it is
    switched to ``offline`` from the region's bind until its dax devices are bound (kmem, which
    the kernel binds by itself, adds the memory then): otherwise the kernel onlines it into
    ZONE_NORMAL, where it can take unmovable allocations within seconds and a movable rule can
    no longer have it [lab]. The device rules then online it; :func:`online_as_kernel` does
    what the kernel would have for a device no rule takes. Recorded like the executor's switch
    (daxd/apply/autoonline.py), so a daxd killed meanwhile gets it put back.

    ``bound(name)``: udev has reported the dax device's bind. The ``driver`` link is there from
    the start of kmem's probe (really_probe()), and the kernel decides whether to online the
    memory at its end, so only the bind event says the switch may go back [lab: restored at the
    link, the kernel onlined the blocks 80 ms later]. Without it (the command, no udev): once
    all the device's blocks are there, and half a second more.
    """
    result = RegionResult(plan, devices=plan.devices)
    if plan.verdict not in (RegionVerdict.CREATE, RegionVerdict.DESTROY) or not plan.steps:
        return result
    began = clock()
    built = plan.verdict is RegionVerdict.CREATE
    record = _record_path(runtime, plan.name) if built and runtime is not None else None
    if record is not None and plan.region is not None and plan.window is not None:
        decoders = [s.path.split("/")[-2] for s in plan.steps if s.path.endswith("/dpa_size")]
        _write_record(record, Leftover(plan.region, plan.window, tuple(decoders)))
    switch = built and auto_online not in (None, str(OnlineType.OFFLINE))
    switched = False
    dpa_written: list[str] = []  # endpoint decoders given DPA: freed again on a rollback
    try:
        for step in plan.steps:
            if step.action is RegionAction.BIND and switch and not switched:
                switched = _switch_off(sysfs, runtime, str(auto_online))
            error = _run(sysfs, step)
            result.results.append(RegionStepResult(step, error is None, error or ""))
            if error is not None:
                result.ok, result.error = False, error
                if built:
                    result.undone = _undo(sysfs, plan, dpa_written)
                break
            if step.action is RegionAction.SET and step.path.endswith("/dpa_size"):
                dpa_written.append(step.path)
        if result.ok and built and plan.region is not None:
            result.devices = _wait_for_devices(sysfs, plan, wait, clock, sleep, bound=bound)
            if not result.devices:
                result.ok = False
                result.error = (
                    f"{plan.region} is enabled but no dax device appeared within {wait:g} s "
                    "(is dax_cxl loaded?)"
                )
    finally:
        if switched:
            _put_back(sysfs, runtime, str(auto_online))
    if record is not None and (result.ok or all(x.ok for x in result.undone)):
        record.unlink(missing_ok=True)
    result.seconds = clock() - began
    return result


def _switch_off(sysfs: Sysfs, runtime: Path | None, original: str) -> bool:
    try:
        if runtime is not None:
            autoonline.save(runtime, original, str(OnlineType.OFFLINE))
        sysfs.write(AUTO_ONLINE_PATH, str(OnlineType.OFFLINE))
    except (OSError, SysfsError) as e:
        log.warning("cannot switch auto_online_blocks off for the region's bind: %s", e)
        if runtime is not None:
            autoonline.clear(runtime)
        return False
    return True


def _put_back(sysfs: Sysfs, runtime: Path | None, original: str) -> None:
    try:
        sysfs.write(AUTO_ONLINE_PATH, original)
    except SysfsError as e:
        log.error("cannot put auto_online_blocks back to %s: %s", original, e)
        return  # the record stays: the next daxd puts it back
    if runtime is not None:
        autoonline.clear(runtime)


def online_as_kernel(sysfs: Sysfs, device: str, auto_online: str | None) -> int:
    """Online the offline blocks of a new region's device no rule takes, as ``auto_online``
    would have had the kernel do; how many blocks."""
    word = OnlineType.parse(auto_online or "")
    if word is None or word is OnlineType.OFFLINE:
        return 0
    done = 0
    for index in sorted(_device_blocks(sysfs, device)):
        path = block_path(index)
        try:
            if sysfs.read(path) == str(OnlineType.OFFLINE):
                sysfs.write(path, str(word))
                done += 1
        except SysfsError as e:
            log.warning("%s: cannot online memory%d as the kernel would: %s", device, index, e)
    return done


def _device_blocks(sysfs: Sysfs, device: str) -> list[int]:
    return [b.index for b in read_state(sysfs).blocks_of(device)]


def _wait_for_devices(
    sysfs: Sysfs,
    plan: RegionPlan,
    wait: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    *,
    bound: Callable[[str], bool] | None,
) -> tuple[str, ...]:
    """The region's dax devices, once each has been probed (kmem has added its memory), or
    what is there at the deadline."""
    assert plan.region is not None
    rid = plan.region.removeprefix("region")
    dax_region = f"{cxl_device_dir(plan.region)}/dax_region{rid}"
    deadline = clock() + wait
    while True:
        try:
            found = tuple(e for e in sysfs.listdir(dax_region) if DEVICE_NAME.match(e))
        except SysfsError:
            found = ()
        if found and all(_probed(sysfs, f"{dax_region}/{d}", d, bound) for d in found):
            if bound is None:
                sleep(0.5)  # past the last block: add_memory's online step, see apply_region
            return found
        if clock() >= deadline:
            return found
        sleep(0.05)


def _probed(sysfs: Sysfs, path: str, name: str, bound: Callable[[str], bool] | None) -> bool:
    if not sysfs.exists(f"{path}/driver"):
        return False
    if bound is not None:
        return bound(name)
    if sysfs.link_name(f"{path}/driver") != DRIVER_KMEM:
        return True
    state = read_state(sysfs)
    device = state.devices.get(name)
    if device is None:
        return False
    return unsettled(device, state.blocks_of(name), state.hotplug) is None


# --- the record of a build in progress ---------------------------------------------------------
RECORDS = "cxl-regions"  # below the runtime folder


def _record_path(runtime: Path, name: str) -> Path:
    # Policy names are free text: the file is named by a digest of it.
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return runtime / RECORDS / f"{digest}.json"


def _write_record(path: Path, leftover: Leftover) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(leftover)))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot record the region build in %s: %s", path, e)


def forget_leftover(runtime: Path | None, name: str) -> None:
    """The region is as the policy says: a record of its build is stale."""
    if runtime is not None:
        _record_path(runtime, name).unlink(missing_ok=True)


def read_leftovers(runtime: Path | None, names: Sequence[str]) -> dict[str, Leftover]:
    """The builds of these policy regions that a daxd did not finish (by region name)."""
    out: dict[str, Leftover] = {}
    if runtime is None:
        return out
    for name in names:
        path = _record_path(runtime, name)
        try:
            raw = json.loads(path.read_text())
            out[name] = Leftover(
                str(raw["region"]), str(raw["window"]), tuple(str(d) for d in raw["decoders"])
            )
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring the unreadable record %s: %s", path, e)
    return out


def _run(sysfs: Sysfs, step: RegionStep) -> str | None:
    """The step's write and its check; an error sentence, or None when it took."""
    try:
        sysfs.write(step.path, step.value)
    except SysfsError as e:
        return str(e)
    try:
        if step.expect is not None:
            got = sysfs.read(step.path)
            if got is None or not _same(got, step.expect):
                return f"wrote {step.value!r} to {step.path}, it reads {got!r}"
        region = cxl_device_dir(step.value)  # CREATE and BIND write a region's name
        if step.action is RegionAction.CREATE and not sysfs.exists(region):
            return f"wrote {step.value} to {step.path}, but the cxl bus has no {step.value}"
        if step.action is RegionAction.BIND and not sysfs.exists(f"{region}/driver"):
            return f"wrote {step.value} to {step.path}, but the cxl_region driver did not take it"
    except SysfsError as e:
        return str(e)
    return None


def _same(got: str, expect: str) -> bool:
    """Equal as the kernel prints it: numbers in any base ("%#018llx" vs "0x..."), else text."""
    if got == expect:
        return True
    try:
        return int(got, 0) == int(expect, 0)
    except ValueError:
        return False


def _undo(sysfs: Sysfs, plan: RegionPlan, dpa_written: list[str]) -> list[RegionStepResult]:
    """Tear down what of the region was made, as the kernel now shows it; then free DPA the
    build allocated on decoders that never joined the region."""
    done: list[RegionStepResult] = []
    topo = read_cxl_topology(sysfs)
    region = topo.region(plan.region) if plan.region else None
    steps = list(teardown_steps(topo, region)) if region is not None else []
    freed = {s.path for s in steps if s.action is RegionAction.FREE_DPA}
    for path in dpa_written:
        if path not in freed and _reads_nonzero(sysfs, path):
            decoder = path.split("/")[-2]
            steps.append(
                RegionStep(
                    RegionAction.FREE_DPA,
                    decoder_path(decoder, "dpa_size"),
                    "0",
                    f"free {decoder}",
                    expect="0",
                )
            )
    for step in steps:
        error = _run(sysfs, step)
        done.append(RegionStepResult(step, error is None, error or ""))
    return done


def _reads_nonzero(sysfs: Sysfs, path: str) -> bool:
    try:
        value = sysfs.read(path)
        return value is not None and int(value, 0) != 0
    except (SysfsError, ValueError):
        return True  # unknown: try to free it


def apply_regions(
    sysfs: Sysfs,
    policy: Policy,
    state: KernelState,
    *,
    proc: Path,
    runtime: Path | None,
    bound: Callable[[str], bool] | None = None,
) -> list[tuple[RegionPlan, RegionResult | None]]:
    """Every region of the policy, planned and carried out in policy order (each build changes
    the topology for the next: decoders, window space); ``state`` as read before. A new
    region's device no rule takes gets its memory onlined as the kernel would have."""
    out: list[tuple[RegionPlan, RegionResult | None]] = []
    topo = read_cxl_topology(sysfs)
    users = cxl_device_users(proc, state)
    leftovers = read_leftovers(runtime, [s.name for s in policy.regions])
    auto_online = state.hotplug.auto_online_blocks
    for spec in policy.regions:
        plan = plan_region(spec, topo, state, users, leftovers.get(spec.name))
        if plan.verdict is RegionVerdict.IN_SYNC and spec.name in leftovers:
            forget_leftover(runtime, spec.name)
        result = None
        if plan.steps:
            result = apply_region(
                sysfs,
                plan,
                runtime=runtime,
                auto_online=str(auto_online) if auto_online is not None else None,
                bound=bound,
            )
            topo = read_cxl_topology(sysfs)
            if result.ok and plan.verdict is RegionVerdict.CREATE:
                _online_unmanaged(sysfs, policy, result.devices, auto_online)
        out.append((plan, result))
    return out


def _online_unmanaged(
    sysfs: Sysfs, policy: Policy, devices: Sequence[str], auto_online: OnlineType | None
) -> None:
    if auto_online is None or auto_online is OnlineType.OFFLINE:
        return
    state = read_state(sysfs)
    for name in devices:
        device = state.devices.get(name)
        if device is not None and policy.match(device) is None:
            online_as_kernel(sysfs, name, str(auto_online))

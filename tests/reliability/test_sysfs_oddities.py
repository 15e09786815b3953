"""Odd sysfs trees: whatever the files say, daxd reads, plans and applies without an exception,
names the path of what is odd, and writes only to paths and values it validated.

The tree of a fake kernel (pmem dax0.0, hmem dax1.0 and CXL dax2.0 with a seed dax2.1) is damaged
behind the kernel's back -- attribute contents replaced by empty, truncated, huge, binary or
unexpected text, files removed or turned into folders, unreadable, symlinks leading out of the
root or in circles, entries whose names are not daxN.M -- then read_state, plan_all and
apply_device run on it.  Every write that reaches the kernel must match a strict pattern, name
a device daxd listed, and resolve inside the sysfs root.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daxd.apply.executor import ApplyOptions, apply_device
from daxd.kernel.model import KernelState
from daxd.kernel.scan import read_state
from daxd.plan.planner import plan_all
from daxd.policy.model import Policy
from tests.fakekernel import FakeKernel, GiB, MiB
from tests.reliability.faults import FAST_TMP, policy_of

EXAMPLES = 2000 if os.environ.get("DAXD_FUZZ") == "long" else 200
POLICIES = {
    "devdax": "rules:\n  - mode: devdax\n",
    "ram": "rules:\n  - mode: system-ram\n    zone: movable\n    allow_pmem_data_loss: true\n",
    "offline": "rules:\n  - mode: system-ram\n    online: false\n    allow_pmem_data_loss: true\n",
    "memmap": "rules:\n  - mode: system-ram\n    memmap_on_memory: false\n"
    "    allow_pmem_data_loss: true\n",
}
NAME = r"dax[0-9]+\.[0-9]+"
WRITES = [
    (re.compile(r"bus/dax/drivers/(device_dax|kmem)/(bind|unbind|new_id|remove_id)"), NAME),
    (re.compile(rf"bus/dax/devices/({NAME})/memmap_on_memory"), r"[01]"),
    (
        re.compile(r"devices/system/memory/memory[0-9]+/state"),
        r"offline|online_movable|online_kernel|online",
    ),
    # switched for a kmem bind and put back (planner._kmem_bind_steps)
    (
        re.compile(r"devices/system/memory/auto_online_blocks"),
        r"offline|online_movable|online_kernel|online",
    ),
]
DEVICES = ("dax0.0", "dax1.0", "dax2.0", "dax2.1")
OUTSIDE = "outside"  # a folder next to the sysfs root, with files an attacker would plant


def machine(base: Path) -> FakeKernel:
    kernel = FakeKernel(base, boot_memory=512 * MiB, memmap_on_memory="Y")
    kernel.add_pmem_device()
    kernel.add_hmem_device(size=GiB)
    kernel.add_cxl_device(size=GiB)
    kernel.add_seed_device(2)
    outside = base / OUTSIDE
    outside.mkdir()
    (outside / "kmem").mkdir()
    (outside / "garbage").write_bytes(b"\xff\x00online\n" * 3)
    fake = outside / "dax7.0"
    fake.mkdir()
    for attr, value in [("size", "1073741824"), ("resource", "0x0"), ("target_node", "0")]:
        (fake / attr).write_text(value + "\n")
    (fake / "mapping0").mkdir()
    (fake / "mapping0" / "start").write_text("0x0\n")  # boot memory: memory0..
    (fake / "mapping0" / "end").write_text("0x3fffffff\n")
    os.symlink("../../../bus/dax/drivers/kmem", fake / "driver")
    return kernel


# --- what can be done to a tree ----------------------------------------------------------------


def device_attr(name: str, attr: str) -> str:
    return f"bus/dax/devices/{name}/{attr}"


def block_attr(index: int, attr: str) -> str:
    return f"devices/system/memory/memory{index}/{attr}"


NUMBER_ATTRS = [(d, a) for d in DEVICES for a in ("size", "align", "target_node", "numa_node")]
HEX_ATTRS = [(d, a) for d in DEVICES[:3] for a in ("resource", "mapping0/start", "mapping0/end")]
FLAG_ATTRS = [(d, "memmap_on_memory") for d in DEVICES]
BLOCKS = [40, 43, 48, 52]  # hmem's first and a middle block; cxl's
GLOBALS = [
    "devices/system/memory/block_size_bytes",
    "devices/system/memory/auto_online_blocks",
    "module/memory_hotplug/parameters/memmap_on_memory",
    "module/memory_hotplug/parameters/online_policy",
]
# Never valid as a number, a hex number, a flag, a state or a word daxd knows.
GARBAGE = ["xyz", "\x00", "\u202e", "1\n2", "../../etc/passwd", "-", "online maybe", "0xzz"]
ODD = [
    "",
    "\n",
    " ",
    "0",
    "-1",
    "1",
    "0x",
    "9" * 5000,
    "f" * 70_000,
    "online_movable",
    "going-offline",
    "Movable Normal",
    "none",
    "kmem",
    "force",
    "dax0.0",
    "1e9",
    "+7",
    "1_0",
    "٣",
]


@dataclass(frozen=True)
class Damage:
    kind: str  # write, remove, folder, unreadable, outside, loop, entry, driver
    target: str  # relative to the sysfs root
    content: bytes = b""
    garbage: bool = False  # content no reader may accept: a diagnostic must name the target

    def describe(self) -> str:
        return f"{self.kind} {self.target} {self.content[:40]!r}"


def _attr_targets() -> list[str]:
    targets = [device_attr(d, a) for d, a in NUMBER_ATTRS + HEX_ATTRS + FLAG_ATTRS]
    for i in BLOCKS:
        targets += [block_attr(i, a) for a in ("state", "valid_zones", "phys_index", "removable")]
    return targets + GLOBALS


_targets = st.sampled_from(_attr_targets())


@st.composite
def damages(draw: st.DrawFn) -> Damage:
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "odd",
                "binary",
                "truncate",
                "remove",
                "folder",
                "unreadable",
                "outside",
                "loop",
                "entry",
                "driver",
            ]
        )
    )
    if kind == "garbage":
        text = draw(st.sampled_from(GARBAGE))
        return Damage("write", draw(_targets), text.encode(), garbage=True)
    if kind == "odd":
        return Damage("write", draw(_targets), draw(st.sampled_from(ODD)).encode())
    if kind == "binary":
        return Damage("write", draw(_targets), draw(st.binary(max_size=64)))
    if kind == "truncate":
        return Damage("truncate", draw(_targets), b"", False)
    if kind in ("remove", "folder", "unreadable", "outside", "loop"):
        return Damage(kind, draw(_targets))
    if kind == "entry":
        odd_name = draw(
            st.sampled_from(
                [
                    "dax0.0\n",
                    "dax0.0 ",
                    "dax0",
                    "daxa.b",
                    "dax-1.0",
                    "dax0.0;reboot",
                    ".dax0.0",
                    "dax01.0",
                    "dax99999999999999999999.0",
                    "dax7.0",
                    "memory33",
                    "x" * 255,
                ]
            )
        )
        return Damage("entry", f"bus/dax/devices/{odd_name}")
    device = draw(st.sampled_from(DEVICES))
    return Damage("driver", device_attr(device, "driver"), draw(st.sampled_from([b"out", b"evil"])))


def inflict(kernel: FakeKernel, damage: Damage) -> None:
    root = kernel.sysfs_root
    path = root / damage.target
    outside = root.parent / OUTSIDE
    if damage.kind == "entry":
        if os.path.lexists(path):
            return
        target = outside / "dax7.0" if damage.target.endswith("dax7.0") else None
        real = target or (root / kernel.devices["dax1.0"].devpath)
        os.symlink(os.path.relpath(real, path.parent), path)
        return
    if damage.kind == "driver":
        if os.path.lexists(path):
            path.unlink()
        if damage.content == b"out":
            os.symlink(os.path.relpath(outside / "kmem", path.parent), path)  # basename: kmem
        else:
            os.symlink("../../../bus/dax/drivers/evil", path)
        return
    if not path.exists() or path.is_dir():
        return  # an attribute this kernel does not show (or damaged already)
    if damage.kind == "write":
        path.write_bytes(damage.content)
    elif damage.kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage.kind == "remove":
        path.unlink()
    elif damage.kind == "folder":
        path.unlink()
        path.mkdir()
    elif damage.kind == "unreadable":
        path.chmod(0o200)
    elif damage.kind == "outside":
        path.unlink()
        os.symlink(outside / "garbage", path)
    elif damage.kind == "loop":
        path.unlink()
        os.symlink(path.name, path)


# --- checking ------------------------------------------------------------------------------------


def check_read(kernel: FakeKernel, state: KernelState, damage: list[Damage]) -> list[str]:
    problems = []
    root = str(kernel.sysfs_root)
    for d in state.diagnostics:
        if not d.path.startswith(root):
            problems.append(f"diagnostic does not name a path in the tree: {d}")
        if not d.message:
            problems.append(f"diagnostic without a message: {d.path}")
    named = {d.path for d in state.diagnostics}
    for dmg in damage:
        must = dmg.garbage and _read_by_daxd(dmg.target, state) and dmg == _last_at(damage, dmg)
        if must and str(kernel.sysfs.path(dmg.target)) not in named:
            problems.append(f"no diagnostic names {dmg.target} ({dmg.content!r})")
    return problems


def _last_at(damage: list[Damage], dmg: Damage) -> Damage:
    """Only the last damage to a path stands; a later remove/folder/loop also hides garbage."""
    return [d for d in damage if d.target == dmg.target][-1]


def _read_by_daxd(target: str, state: KernelState) -> bool:
    """Whether daxd reads that attribute at all for this tree (so it must complain)."""
    if target.startswith("devices/system/memory/memory"):
        index = int(target.split("/")[3].removeprefix("memory"))
        listed = {b.index for blocks in state.blocks.values() for b in blocks}
        return index in listed and not target.endswith("valid_zones")
    if target.startswith("bus/dax/devices/"):
        name = target.split("/")[3]
        return name in state.devices
    return True  # the global settings are read every time


def check_writes(kernel: FakeKernel, start: int, names: set[str]) -> list[str]:
    problems = []
    root = os.path.realpath(kernel.sysfs_root)
    for path, value in kernel.writes[start:]:
        rule = next(((p, v) for p, v in WRITES if p.fullmatch(path)), None)
        if rule is None:
            problems.append(f"write to an unexpected path: {path!r}")
            continue
        if not re.fullmatch(rule[1], value):
            problems.append(f"unexpected value {value!r} for {path}")
        named = value if path.startswith("bus/dax/drivers/") else path.split("/")[3]
        if not path.startswith("devices/") and named not in names:
            problems.append(f"{path} names {named!r}, which daxd never listed")
        real = os.path.realpath(kernel.sysfs_root / path)
        if os.path.commonpath([root, real]) != root:
            problems.append(f"{path} resolves outside the sysfs tree: {real}")
    return problems


def run_everything(kernel: FakeKernel, policy: Policy) -> list[str]:
    """read_state, plan_all, then apply every listed device and the odd names."""
    problems: list[str] = []
    try:
        state = read_state(kernel.sysfs)
        plan_all(state, policy)
    except Exception as e:
        return [f"read/plan raised {type(e).__name__}: {e}"]
    start = len(kernel.writes)
    opts = ApplyOptions(proc_root=kernel.proc_root, offline_timeout=1.0)
    names = [*state.devices, "dax0.0\n", "dax7.0", "../dax0.0", "dax1.0/../dax0.0"]
    for name in names:
        try:
            apply_device(kernel.sysfs, policy, name, state.hotplug, opts)
        except Exception as e:
            problems.append(f"apply {name!r} raised {type(e).__name__}: {e}")
    problems += check_writes(kernel, start, set(state.devices))
    return problems


@pytest.fixture
def base() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="daxd-odd-", dir=FAST_TMP) as d:
        yield Path(d)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


# --- the fuzz -------------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(damage=st.lists(damages(), min_size=1, max_size=5), which=st.sampled_from(list(POLICIES)))
def test_odd_trees(damage: list[Damage], which: str) -> None:
    with tempfile.TemporaryDirectory(prefix="daxd-odd-", dir=FAST_TMP) as d:
        kernel = machine(Path(d))
        for dmg in damage:
            inflict(kernel, dmg)
        try:
            state = read_state(kernel.sysfs)
        except Exception as e:
            pytest.fail(f"read_state raised {type(e).__name__}: {e}")
        problems = check_read(kernel, state, damage)
        problems += run_everything(kernel, policy_of(POLICIES[which]))
        assert problems == [], "\n".join([*(x.describe() for x in damage), *problems])


# --- one by one, with what must be said ----------------------------------------------------------


def test_a_name_with_a_trailing_newline_is_not_a_device(base: Path) -> None:
    """``re.match(r"^dax[0-9]+\\.[0-9]+$")`` accepts "dax0.0\\n", and the kernel's sysfs_streq()
    reads that as dax0.0.  Before the fix, an entry of that name leading to an hmem device made
    daxd write "dax0.0\\n" to kmem/new_id and kmem/bind: kmem then held an id for the pmem
    device, to take it (and its data) at the next probe."""
    kernel = machine(base)
    kernel.sysfs.write("bus/dax/drivers/kmem/unbind", "dax1.0")
    kernel.sysfs.write("bus/dax/drivers/device_dax/new_id", "dax1.0")  # hmem, now devdax
    inflict(kernel, Damage("entry", "bus/dax/devices/dax0.0\n"))
    state = read_state(kernel.sysfs)
    assert "dax0.0\n" not in state.devices
    assert any("skipping unexpected entry 'dax0.0\\n'" in d.message for d in state.diagnostics)
    start = len(kernel.writes)
    policy = policy_of("rules:\n  - match: {provider: hmem}\n    mode: system-ram\n")
    assert run_everything(kernel, policy) == []
    assert kernel.devices["dax0.0"].driver == "device_dax"
    assert all(value.strip() != "dax0.0" for _, value in kernel.writes[start:])


def test_a_device_outside_the_tree_is_never_written_through(base: Path) -> None:
    """bus/dax/devices/dax7.0 leads out of the root, to a "device" that claims kmem holds boot
    memory.  daxd reads it (and says where it leads), but no write goes out of the tree.

    It does act on the blocks such a device claims (a real kernel only shows a device its own
    blocks; see docs/reliability.md): here the fake refuses to offline boot memory.
    """
    kernel = machine(base)
    inflict(kernel, Damage("entry", "bus/dax/devices/dax7.0"))
    state = read_state(kernel.sysfs)
    assert any("resolves outside the sysfs tree" in d.message for d in state.diagnostics)
    for text in POLICIES.values():
        assert run_everything(kernel, policy_of(text)) == []
    assert all(b.online for b in kernel.blocks.values() if b.boot)


def test_writes_through_a_symlink_out_of_the_tree_are_refused(base: Path) -> None:
    kernel = machine(base)
    inflict(kernel, Damage("outside", block_attr(48, "state")))
    garbage = (base / OUTSIDE / "garbage").read_bytes()
    result = apply_device(
        kernel.sysfs,
        policy_of(POLICIES["devdax"]),
        "dax2.0",
        read_state(kernel.sysfs).hotplug,
        ApplyOptions(proc_root=kernel.proc_root, offline_timeout=1.0),
    )
    assert "leads out of" in result.error
    assert (base / OUTSIDE / "garbage").read_bytes() == garbage
    assert kernel.devices["dax2.0"].driver == "kmem"
    assert all(b.online for b in kernel.blocks_of("dax2.0"))


@pytest.mark.parametrize("content", ["", "abc", "\x00\xff", "9" * 70_000, "0x0"])
@pytest.mark.parametrize("attr", ["mapping0/start", "mapping0/end", "size"])
def test_odd_ranges_plan_without_exhausting_memory(base: Path, attr: str, content: str) -> None:
    """A range that spans the whole address space must not be listed block by block."""
    kernel = machine(base)
    inflict(kernel, Damage("write", device_attr("dax0.0", attr), content.encode()))
    inflict(kernel, Damage("write", device_attr("dax0.0", "mapping0/end"), b"0xffffffffffffffff"))
    for text in POLICIES.values():
        assert run_everything(kernel, policy_of(text)) == []


@pytest.mark.parametrize("kind", ["remove", "folder", "unreadable", "outside", "loop"])
@pytest.mark.parametrize(
    "target", [*GLOBALS, device_attr("dax1.0", "size"), block_attr(40, "state")]
)
def test_broken_files_are_named(base: Path, kind: str, target: str) -> None:
    kernel = machine(base)
    inflict(kernel, Damage(kind, target))
    state = read_state(kernel.sysfs)
    named = [d for d in state.diagnostics if d.path == str(kernel.sysfs.path(target))]
    optional = target.endswith(("online_policy", "parameters/memmap_on_memory"))
    if not (kind == "remove" and optional):
        assert named, [str(d) for d in state.diagnostics]
    assert run_everything(kernel, policy_of(POLICIES["ram"])) == []


def test_the_tree_machine_is_sane(base: Path) -> None:
    kernel = machine(base)
    state = read_state(kernel.sysfs)
    assert sorted(state.devices) == sorted(DEVICES)
    assert state.diagnostics == ()
    assert set(BLOCKS) <= {b.index for bs in state.blocks.values() for b in bs}
    shutil.rmtree(base / OUTSIDE)

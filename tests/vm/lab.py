"""Scenario runner of the daxd real-kernel lab (QEMU, TCG, Debian trixie guest, systemd as PID 1).

A scenario is a bash script that runs as root inside the guest once the normal boot
(multi-user.target) is reached; its stdout, stderr, exit code, files it leaves in ``$LAB_OUT``,
``journalctl -b`` and the serial console log come back in a :class:`ScenarioResult`::

    from tests.vm.lab import Lab, NvdimmSpec, Scenario

    result = Lab.default().run(Scenario(
        name="devdax",
        nvdimms=[NvdimmSpec(size_mib=1024)],
        kernel_args=["memhp_default_state=offline"],
        script="lab_devdax namespace0.0\\nls /sys/bus/dax/devices\\n",
    ))
    result.check()                      # raises ScenarioFailed with a report on any failure
    assert "dax0.0" in result.stdout

With ``setup_script`` the scenario boots twice: boot 1 (phase ``setup``) runs the setup script
(and installs daxd when ``install_daxd``), then powers off cleanly; boot 2 (phase ``main``) boots
the same disk (a qcow2 overlay over the cached image) and the same NVDIMMs (file-backed,
``share=on``, so namespace labels persist) and runs ``script``. That is how a test sees
daxd.service start in a real boot with devdax namespaces already present.

Command line: ``python -m tests.vm.lab run SCRIPT [--nvdimm MIB ...] [--install] ...``,
``python -m tests.vm.lab demo`` and ``python -m tests.vm.lab shell`` (interactive serial console).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm import image as image_mod
from tests.vm import qemu as qemu_mod
from tests.vm.image import Image
from tests.vm.qemu import Qemu

SHARE_DIR = Path(__file__).resolve().parent / "guest" / "share"

# Lines on the serial console that mean the guest kernel is in trouble.
CRASH_RE = re.compile(
    r"(Oops: .*|Kernel panic - not syncing.*|BUG: .*|general protection fault.*"
    r"|invalid opcode: .*|kernel BUG at .*|WARNING: CPU: .*)"
)
# The ones after which a boot that has not reached the scenario yet is retried once: the
# multi-threaded TCG early-boot crash (``Oops: int3``) and friends.
RETRYABLE_RE = re.compile(r"Oops: |Kernel panic - not syncing|BUG: |general protection fault")
MARK_RE = re.compile(rb"DAXD-LAB-(BEGIN|INSTALLED|END)([^\r\n]*)")
# Boot milestones on the serial console, timed by the host.
MILESTONES = {b"Loading, please wait": "initramfs", b"Welcome to ": "systemd"}

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LabError(RuntimeError):
    """The lab could not run the scenario (boot timeout, crash, install failure, QEMU error)."""


class ScenarioFailed(AssertionError):
    """Raised by :meth:`ScenarioResult.check`; the message is a report pointing to the logs."""


@dataclass(frozen=True)
class NvdimmSpec:
    """An emulated NVDIMM (QEMU ``nvdimm`` device with a label area).

    ``size_mib`` is the size of the pmem region the guest sees (``regionN/size``); keep it a
    multiple of 16 MiB, the region's default ``align``, or ``ndctl create-namespace`` refuses it as
    misaligned. The file behind it is 2 MiB larger (QEMU keeps the label area at the end of the
    backend and rounds the rest down to the backend's 2 MiB ``align``). Each NVDIMM becomes
    ``regionN`` with a seed ``namespaceN.0`` and gets a memory-less NUMA node of its own.
    """

    size_mib: int = 1024
    label_size_kib: int = 128
    # Put the NVDIMM in a memory-less NUMA node of its own (QEMU ``-numa node`` + ``node=``), as
    # firmware does for real pmem and CXL: the dax device then has target_node N and numa_node 0.
    own_node: bool = True

    @property
    def backend_mib(self) -> int:
        return self.size_mib + 2


@dataclass(frozen=True)
class HmemSpec:
    """Soft-reserved memory ("specific purpose", EFI_MEMORY_SP) in a NUMA node of its own.

    Emulated by giving QEMU an extra NUMA node of ``size_mib`` and marking its range soft-reserved
    with ``memmap=SIZE%START-1+0xefffffff`` (E820_TYPE_SOFT_RESERVED). The kernel then registers
    an ``hmem`` platform device that dax_hmem turns into a daxX.Y device which is bound to kmem by
    default (Linux >= 6.3). See docs/lab.md.
    """

    size_mib: int = 512


@dataclass(frozen=True)
class CxlMemdev:
    """A volatile CXL type-3 memory device (QEMU ``cxl-type3``) behind a root port of its own."""

    size_mib: int = 256
    # The device serial number (``/sys/bus/cxl/devices/memN/serial``): what identifies it when
    # memN names change between boots.
    serial: int | None = None


@dataclass(frozen=True)
class CxlHostBridge:
    """A CXL host bridge (QEMU ``pxb-cxl``) and the type-3 devices below it.

    QEMU 10 gives each host bridge one HDM decoder: one region per host bridge at a time.
    """

    memdevs: Sequence[CxlMemdev] = (CxlMemdev(),)


@dataclass(frozen=True)
class CxlWindow:
    """A CXL fixed memory window (CFMWS), the guest's root decoder ``decoder0.N`` (N = its index).

    ``targets`` are indexes into :attr:`CxlTopology.host_bridges`; two targets make a 2-way
    interleave at ``granularity_kib``.
    """

    targets: Sequence[int] = (0,)
    size_mib: int = 4096
    granularity_kib: int = 8


@dataclass(frozen=True)
class CxlTopology:
    """Host bridges with volatile type-3 devices, and the windows regions can be created in.

    With a topology the guest is a ``q35,cxl=on`` machine with ``-cpu max,hypervisor=off`` (with
    the hypervisor bit Linux cannot invalidate CPU caches and every region commit fails) and a
    NUMA node for the boot RAM (otherwise the CXL memory joins node 0). Regions are created in
    the guest (``lab_cxl_create_region``), as on platforms whose firmware does not build them.
    """

    host_bridges: Sequence[CxlHostBridge] = (CxlHostBridge(),)
    windows: Sequence[CxlWindow] = (CxlWindow(),)

    @classmethod
    def simple(cls, *sizes_mib: int) -> CxlTopology:
        """One host bridge, device and window per size; serials 0x1000, 0x1001, ..."""
        return cls(
            host_bridges=tuple(
                CxlHostBridge((CxlMemdev(size, serial=0x1000 + i),))
                for i, size in enumerate(sizes_mib)
            ),
            windows=tuple(CxlWindow((i,)) for i in range(len(sizes_mib))),
        )


@dataclass
class Scenario:
    script: str
    name: str = "scenario"
    setup_script: str | None = None
    nvdimms: Sequence[NvdimmSpec] = ()
    hmem: Sequence[HmemSpec] = ()
    cxl: CxlTopology | None = None
    kernel_args: Sequence[str] = ()
    # Kernel arguments of the setup boot; None: the same as kernel_args.
    setup_kernel_args: Sequence[str] | None = None
    # Install daxd from the repository before the first script runs (boot 1 if there is a setup
    # script, so that boot 2 starts daxd.service the normal way).
    install_daxd: bool = False
    memory_mib: int = 2048
    cpus: int = 2
    # Seconds for each script inside the guest (the guest's `timeout`).
    timeout: float = 300.0
    # Seconds from starting QEMU to the scenario runner starting in the guest.
    boot_timeout: float = 300.0
    # Extra files put into the read-only share, visible in the guest as /lab/in/files/NAME.
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    journal_to_console: bool = False
    # QEMU machine type and properties ("pc", or "q35" e.g. with cxl=on) and extra QEMU arguments
    # appended as they are (for experiments such as CXL devices; see docs/lab.md).
    machine: str = "pc"
    qemu_args: Sequence[str] = ()
    # Boot from this qcow2 disk instead of the image (e.g. :meth:`Lab.installed_disk`, daxd
    # already installed): the run's overlay is made over it, so it is never written.
    base_disk: Path | None = None
    # Power off cleanly after the last script too and keep the run's disk (``run_dir/disk.qcow2``)
    # even when the run succeeds, to boot other scenarios from it (``base_disk``).
    keep_disk: bool = False


@dataclass
class BootResult:
    """One boot of the guest."""

    phase: str
    dir: Path
    attempts: int = 1
    exit_code: int | None = None
    install_exit_code: int | None = None
    failure: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    qemu_max_rss_mib: float | None = None
    kernel_problems: list[str] = field(default_factory=list)
    retried_because: list[str] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return self.dir / "out"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    def _read(self, name: str) -> str:
        path = self.out_dir / name
        return path.read_text(errors="replace") if path.is_file() else ""

    @property
    def stdout(self) -> str:
        return self._read("stdout.txt")

    @property
    def stderr(self) -> str:
        return self._read("stderr.txt")

    @property
    def journal(self) -> str:
        return self._read("journal.txt")

    @property
    def install_log(self) -> str:
        return self._read("install.log")

    @property
    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.is_file() else ""

    @property
    def files(self) -> dict[str, Path]:
        folder = self.out_dir / "files"
        if not folder.is_dir():
            return {}
        return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class ScenarioResult:
    scenario: Scenario
    run_dir: Path
    boots: list[BootResult]

    @property
    def main(self) -> BootResult:
        return self.boots[-1]

    @property
    def exit_code(self) -> int | None:
        return self.main.exit_code

    @property
    def stdout(self) -> str:
        return self.main.stdout

    @property
    def stderr(self) -> str:
        return self.main.stderr

    @property
    def output(self) -> str:
        """stdout then stderr of the main script."""
        return self.main.stdout + self.main.stderr

    @property
    def journal(self) -> str:
        return self.main.journal

    @property
    def serial_log(self) -> Path:
        return self.main.serial_log

    @property
    def files(self) -> dict[str, Path]:
        """Files the main script left in $LAB_OUT, by relative name."""
        return self.main.files

    def file(self, name: str) -> str:
        return self.files[name].read_text()

    def json(self, name: str) -> object:
        return json.loads(self.file(name))

    @property
    def ok(self) -> bool:
        return all(b.failure is None and b.exit_code == 0 for b in self.boots)

    @property
    def timings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for boot in self.boots:
            for key, value in boot.timings.items():
                out[f"{boot.phase}.{key}"] = value
        rss = [b.qemu_max_rss_mib for b in self.boots if b.qemu_max_rss_mib is not None]
        if rss:
            out["qemu_max_rss_mib"] = max(rss)
        return out

    def report(self) -> str:
        lines = [f"lab scenario {self.scenario.name!r}: run folder {self.run_dir}"]
        for boot in self.boots:
            status = boot.failure or f"exit code {boot.exit_code}"
            lines.append(f"- boot {boot.phase}: {status} (attempts {boot.attempts})")
            lines.append(f"  serial log: {boot.serial_log}")
            if boot.retried_because:
                lines.append(f"  retried after: {'; '.join(boot.retried_because)}")
            if boot.kernel_problems:
                lines.append("  kernel problems: " + "; ".join(boot.kernel_problems[:5]))
            if boot.install_exit_code not in (None, 0):
                lines.append("  install.log (tail):")
                lines.extend("    " + ln for ln in boot.install_log.splitlines()[-25:])
            if boot.failure is not None or boot.exit_code != 0:
                if boot.stdout:
                    lines.append("  stdout (tail):")
                    lines.extend("    " + ln for ln in boot.stdout.splitlines()[-25:])
                if boot.stderr:
                    lines.append("  stderr (tail):")
                    lines.extend("    " + ln for ln in boot.stderr.splitlines()[-25:])
                if boot.failure is not None:
                    lines.append("  serial console (tail):")
                    lines.extend("    " + ln for ln in boot.serial.splitlines()[-30:])
                    qemu_log = boot.dir / "qemu.log"
                    if qemu_log.is_file() and qemu_log.stat().st_size:
                        lines.append(f"  QEMU's own output ({qemu_log}):")
                        lines.extend(
                            "    " + ln
                            for ln in qemu_log.read_text(errors="replace").splitlines()[-10:]
                        )
        return "\n".join(lines)

    def check(self) -> ScenarioResult:
        """Raise ScenarioFailed (with a report) unless every boot ran its script with exit 0."""
        if not self.ok:
            raise ScenarioFailed(self.report())
        return self


def _tcg_thread() -> str:
    value = os.environ.get("DAXD_LAB_TCG_THREAD", "multi")
    if value not in ("multi", "single"):
        raise ValueError(f"DAXD_LAB_TCG_THREAD must be multi or single, not {value!r}")
    return value


class Lab:
    """Runs scenarios on one built image. Cheap to create; keeps nothing running between runs."""

    def __init__(
        self,
        image: Image,
        *,
        base: Path | None = None,
        repo: Path | None = None,
        tcg_thread: str | None = None,
        qemu: Qemu | None = None,
        keep: bool = False,
        keep_runs: int = 20,
        log: Log = _stderr_log,
    ) -> None:
        self.image = image
        self.base = base or image_mod.lab_dir()
        self._qemu = qemu
        self.repo = repo or image_mod.repo_root()
        self.tcg_thread = tcg_thread or _tcg_thread()
        self.keep = keep or os.environ.get("DAXD_LAB_KEEP") == "1"
        self.keep_runs = keep_runs
        self.log = log

    @property
    def qemu(self) -> Qemu:
        """The emulator (trixie's QEMU 10, unpacked on first use; see tests/vm/qemu.py)."""
        if self._qemu is None:
            self._qemu = qemu_mod.ensure_qemu(self.base, log=self.log)
        return self._qemu

    @classmethod
    def default(cls, **kwargs: object) -> Lab:
        """The lab on the image of the current recipe (built first if needed)."""
        return cls(image_mod.ensure_image(), **kwargs)  # type: ignore[arg-type]

    # -- a disk with daxd installed, shared by scenarios ----------------------------------------

    def installed_disk(self) -> Path:
        """A qcow2 disk (over the image) on which one boot has run ``make install``.

        Scenarios that only need daxd installed boot from it (``Scenario(base_disk=...)``) and
        save that boot's install (about a minute under TCG). It is cached in
        ``$DAXD_LAB_DIR/installed/<hash>/``, the hash covering the image and every file
        ``make install`` reads (see :func:`install_hash`); the newest two are kept.
        """
        digest = install_hash(self.repo, self.image)
        folder = self.base / "installed" / digest
        disk = folder / "disk.qcow2"
        with image_mod._locked(self.base / "installed" / f".lock-{digest}"):
            if disk.is_file():
                return disk
            result = self.run(
                Scenario(
                    name="installed-disk",
                    script=INSTALLED_DISK_SCRIPT,
                    install_daxd=True,
                    keep_disk=True,
                )
            )
            result.check()
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".disk-{os.getpid()}.qcow2"
            shutil.move(result.run_dir / "disk.qcow2", tmp)
            (folder / "install.log").write_text(result.main.install_log)
            tmp.rename(disk)  # complete or absent
            others = sorted(
                (p for p in (self.base / "installed").iterdir() if p.is_dir() and p != folder),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            for old in others[1:]:
                shutil.rmtree(old, ignore_errors=True)
            return disk

    # -- running --------------------------------------------------------------------------------

    def run(self, scenario: Scenario) -> ScenarioResult:
        run_dir = self._new_run_dir(scenario.name)
        self.log(f"lab: running {scenario.name!r} in {run_dir}")
        in_dir = run_dir / "in"
        self._prepare_share(in_dir, scenario)
        overlay = run_dir / "disk.qcow2"
        backing, backing_format = (
            (scenario.base_disk, "qcow2") if scenario.base_disk else (self.image.rootfs, "raw")
        )
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                backing_format,
                "-b",
                str(backing),
                str(overlay),
            ],
            check=True,
        )
        nvdimm_files = []
        for i, spec in enumerate(scenario.nvdimms):
            path = run_dir / f"nvdimm{i}.img"
            with path.open("wb") as fh:
                fh.truncate(spec.backend_mib * 1024 * 1024)
            nvdimm_files.append(path)

        phases = ["setup", "main"] if scenario.setup_script is not None else ["main"]
        boots: list[BootResult] = []
        for index, phase in enumerate(phases):
            boot = self._boot_with_retry(
                scenario=scenario,
                run_dir=run_dir,
                number=index + 1,
                phase=phase,
                overlay=overlay,
                nvdimm_files=nvdimm_files,
                in_dir=in_dir,
            )
            boots.append(boot)
            if boot.failure is not None or boot.exit_code != 0:
                break
        result = ScenarioResult(scenario, run_dir, boots)
        self._summarize(result)
        if result.ok and not self.keep:
            for path in [*([] if scenario.keep_disk else [overlay]), *nvdimm_files]:
                path.unlink(missing_ok=True)
        self._prune_runs()
        return result

    def _summarize(self, result: ScenarioResult) -> None:
        summary = {
            "scenario": result.scenario.name,
            "ok": result.ok,
            "tcg_thread": self.tcg_thread,
            "image": str(self.image.path),
            "timings": result.timings,
            "boots": [
                {
                    "phase": b.phase,
                    "exit_code": b.exit_code,
                    "install_exit_code": b.install_exit_code,
                    "failure": b.failure,
                    "attempts": b.attempts,
                    "retried_because": b.retried_because,
                    "kernel_problems": b.kernel_problems,
                    "timings": b.timings,
                    "qemu_max_rss_mib": b.qemu_max_rss_mib,
                }
                for b in result.boots
            ],
        }
        (result.run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        t = result.timings
        parts = [f"{k}={v:.1f}" for k, v in t.items()]
        self.log(
            f"lab: {result.scenario.name!r} {'ok' if result.ok else 'FAILED'}: " + " ".join(parts)
        )

    def _new_run_dir(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:40]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.base / "runs" / f"{stamp}-{safe}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path

    def _prune_runs(self) -> None:
        runs = sorted((self.base / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - self.keep_runs)]:
            shutil.rmtree(old, ignore_errors=True)

    def _prepare_share(self, in_dir: Path, scenario: Scenario) -> None:
        in_dir.mkdir()
        for src in SHARE_DIR.iterdir():
            if src.is_file():
                shutil.copy(src, in_dir / src.name)
        header = "#!/bin/bash\n# shellcheck disable=SC1091\n. /lab/in/lib.sh\n"
        (in_dir / "main.sh").write_text(header + scenario.script)
        phases = {"main": scenario.script}
        if scenario.setup_script is not None:
            (in_dir / "setup.sh").write_text(header + scenario.setup_script)
            phases["setup"] = scenario.setup_script
        first = "setup" if scenario.setup_script is not None else "main"
        for phase in phases:
            env = {
                "LAB_INSTALL": "1" if scenario.install_daxd and phase == first else "0",
                "LAB_SCRIPT_TIMEOUT": str(int(scenario.timeout)),
                "LAB_POWEROFF": "fast" if phase == "main" and not scenario.keep_disk else "clean",
            }
            (in_dir / f"config-{phase}.env").write_text(
                "".join(f"{k}={v}\n" for k, v in env.items())
            )
        if scenario.files:
            (in_dir / "files").mkdir()
            for name, content in scenario.files.items():
                target = in_dir / "files" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content)

    def _boot_with_retry(
        self,
        *,
        scenario: Scenario,
        run_dir: Path,
        number: int,
        phase: str,
        overlay: Path,
        nvdimm_files: list[Path],
        in_dir: Path,
    ) -> BootResult:
        reasons: list[str] = []
        for attempt in (1, 2):
            suffix = "" if attempt == 1 else "-retry"
            boot_dir = run_dir / f"boot{number}-{phase}{suffix}"
            boot = self._boot(
                scenario=scenario,
                boot_dir=boot_dir,
                phase=phase,
                overlay=overlay,
                nvdimm_files=nvdimm_files,
                in_dir=in_dir,
            )
            boot.attempts = attempt
            boot.retried_because = list(reasons)
            retry = boot.failure is not None and boot.failure.startswith("crash before scenario")
            if not retry or attempt == 2:
                return boot
            reasons.append(boot.failure or "")
            self.log(f"lab: {boot.failure}; booting again (serial log kept: {boot.serial_log})")
        raise AssertionError("unreachable")

    def kernel_cmdline(self, scenario: Scenario, phase: str) -> list[str]:
        args = [
            "root=LABEL=daxd-lab-root",
            "rw",
            "rootfstype=ext4",
            "console=ttyS0,115200",
            "loglevel=5",
            "panic=1",
            "mitigations=off",
            "net.ifnames=0",
            "systemd.firstboot=no",
            f"daxd_lab.phase={phase}",
        ]
        if scenario.journal_to_console:
            args.append("systemd.journald.forward_to_console=1")
        args.extend(hmem_kernel_args(scenario))
        if phase == "setup" and scenario.setup_kernel_args is not None:
            args.extend(scenario.setup_kernel_args)
        else:
            args.extend(scenario.kernel_args)
        return args

    def qemu_command(
        self,
        scenario: Scenario,
        *,
        cmdline: Sequence[str],
        overlay: Path,
        nvdimm_files: Sequence[Path],
        serial: str,
        shares: Sequence[tuple[str, Path, bool]],
    ) -> list[str]:
        boot_mib = scenario.memory_mib
        hmem_mib = sum(h.size_mib for h in scenario.hmem)
        total_mib = boot_mib + hmem_mib
        slots = max(1, len(scenario.nvdimms))
        cxl = scenario.cxl
        machine = "q35,cxl=on" if cxl is not None else scenario.machine
        bus = "pcie.0" if machine.startswith("q35") else "pci.0"
        # Each DIMM slot is placed 1 GiB aligned in the device memory area.
        maxmem_mib = total_mib + sum(-(-n.backend_mib // 1024) * 1024 for n in scenario.nvdimms)
        cmd = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            f"{machine},nvdimm=on" + (f",max-ram-below-4g={boot_mib}M" if hmem_mib else ""),
            "-accel",
            f"tcg,thread={self.tcg_thread}",
            "-cpu",
            # Under a hypervisor Linux cannot invalidate CPU caches, and every CXL region commit
            # fails ("Failed to synchronize CPU cache state").
            "max,hypervisor=off" if cxl is not None else "max",
            "-smp",
            str(scenario.cpus),
            "-m",
            f"{total_mib}M,slots={slots},maxmem={maxmem_mib}M"
            if scenario.nvdimms
            else f"{total_mib}M",
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            " ".join(cmdline),
            # Buses named: extra PCI hosts (e.g. pxb-cxl) must not receive the lab's devices.
            "-drive",
            f"if=none,id=disk0,file={overlay},format=qcow2,cache=unsafe",
            "-device",
            f"virtio-blk-pci,drive=disk0,bus={bus}",
            "-device",
            f"virtio-rng-pci,bus={bus}",
            "-serial",
            serial,
            "-monitor",
            "none",
        ]
        nvdimm_nodes = numa_layout(scenario)
        # A NUMA node for the boot RAM: without one, CXL memory would join node 0.
        if scenario.hmem or any(n for n in nvdimm_nodes) or cxl is not None:
            cmd += [
                "-object",
                f"memory-backend-ram,id=ram0,size={boot_mib}M",
                "-numa",
                f"node,nodeid=0,memdev=ram0,cpus=0-{scenario.cpus - 1}",
            ]
            for i, hspec in enumerate(scenario.hmem, start=1):
                cmd += [
                    "-object",
                    f"memory-backend-ram,id=ram{i},size={hspec.size_mib}M",
                    "-numa",
                    f"node,nodeid={i},memdev=ram{i}",
                ]
            for node in sorted({n for n in nvdimm_nodes if n}):
                cmd += ["-numa", f"node,nodeid={node}"]
        if cxl is not None:
            cmd += cxl_qemu_args(cxl)
        for i, (spec, path) in enumerate(zip(scenario.nvdimms, nvdimm_files, strict=True)):
            cmd += [
                "-object",
                f"memory-backend-file,id=nvmem{i},share=on,mem-path={path},"
                f"size={spec.backend_mib}M,align=2M",
                "-device",
                f"nvdimm,memdev=nvmem{i},id=nvdimm{i},label-size={spec.label_size_kib}K,"
                f"node={nvdimm_nodes[i]}",
            ]
        for i, (tag, path, readonly) in enumerate(shares):
            opts = f"local,id=fs{i},path={path},security_model=none"
            cmd += [
                "-fsdev",
                opts + (",readonly=on" if readonly else ""),
                "-device",
                f"virtio-9p-pci,fsdev=fs{i},mount_tag={tag},bus={bus}",
            ]
        cmd += list(scenario.qemu_args)
        return self.qemu.command(cmd)

    def _boot(
        self,
        *,
        scenario: Scenario,
        boot_dir: Path,
        phase: str,
        overlay: Path,
        nvdimm_files: list[Path],
        in_dir: Path,
    ) -> BootResult:
        boot_dir.mkdir(parents=True)
        out_dir = boot_dir / "out"
        out_dir.mkdir()
        result = BootResult(phase=phase, dir=boot_dir)
        shares: list[tuple[str, Path, bool]] = [
            ("lab_in", in_dir, True),
            ("lab_out", out_dir, False),
        ]
        if scenario.install_daxd:
            shares.append(("lab_repo", self.repo, True))
        cmd = self.qemu_command(
            scenario,
            cmdline=self.kernel_cmdline(scenario, phase),
            overlay=overlay,
            nvdimm_files=nvdimm_files,
            serial=f"file:{result.serial_log}",
            shares=shares,
        )
        (boot_dir / "qemu-cmdline.txt").write_text(" ".join(_shell_quote(c) for c in cmd) + "\n")
        qemu_log = (boot_dir / "qemu.log").open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=qemu_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.qemu.environ(),
        )
        install_allowance = 600.0 if scenario.install_daxd else 0.0
        deadline = started + scenario.boot_timeout
        seen: dict[str, float] = {}
        serial = b""
        rusage: resource.struct_rusage | None = None
        status: int | None = None
        try:
            with _open_when_exists(result.serial_log) as reader:
                while True:
                    pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
                    if reader is not None:
                        serial += reader.read()
                    now = time.monotonic()
                    for match in MARK_RE.finditer(serial):
                        key = match.group(1).decode()
                        if key not in seen:
                            seen[key] = now - started
                            if key == "BEGIN":
                                deadline = now + install_allowance + scenario.timeout + 120
                            elif key == "END":
                                deadline = now + 120  # clean poweroff
                    if "FIRST" not in seen and serial:
                        seen["FIRST"] = now - started
                    for needle, key in MILESTONES.items():
                        if key not in seen and needle in serial:
                            seen[key] = now - started
                    if pid != 0:
                        status, rusage = wstatus, ru
                        break
                    if "BEGIN" not in seen:
                        crash_match = RETRYABLE_RE.search(serial.decode(errors="replace"))
                        if crash_match is not None:
                            time.sleep(1.0)  # let the rest of the oops reach the log
                            if reader is not None:
                                serial += reader.read()
                            result.failure = f"crash before scenario: {_crash_line(serial)}"
                            break
                    if now > deadline:
                        where = {
                            None: "to reach the scenario runner",
                            "BEGIN": "for the scenario",
                            "INSTALLED": "for the scenario",
                            "END": "to power off",
                        }[_last_mark(seen)]
                        result.failure = (
                            f"timeout: gave up waiting {where} after {now - started:.0f} s"
                        )
                        break
                    time.sleep(0.2)
        finally:
            if status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            qemu_log.close()
        ended = time.monotonic()
        if rusage is not None:
            result.qemu_max_rss_mib = round(rusage.ru_maxrss / 1024, 1)
        result.timings = {f"{k.lower()}_s": round(v, 1) for k, v in seen.items()}
        result.timings["total_s"] = round(ended - started, 1)
        text = result.serial
        result.kernel_problems = [m.group(1).strip() for m in CRASH_RE.finditer(text)]

        exit_file = out_dir / "exit_code"
        if exit_file.is_file():
            result.exit_code = int(exit_file.read_text().strip() or "-1")
        install_file = out_dir / "install_exit_code"
        if install_file.is_file():
            result.install_exit_code = int(install_file.read_text().strip() or "-1")
        _add_guest_times(result)
        if result.failure is None:
            if "END" not in seen or result.exit_code is None:
                crash = _crash_line(serial)
                result.failure = (
                    f"QEMU exited ({proc.returncode}) before the scenario finished"
                    + (f"; kernel: {crash}" if crash else "")
                    + ("" if "BEGIN" in seen else "; the runner never started")
                )
                if "BEGIN" not in seen and crash:
                    result.failure = f"crash before scenario: {crash}"
            elif result.install_exit_code not in (None, 0):
                result.failure = f"installing daxd failed ({result.install_exit_code})"
        return result


def _add_guest_times(result: BootResult) -> None:
    path = result.out_dir / "guest-times"
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        with contextlib.suppress(ValueError):
            result.timings[f"guest_{key}"] = float(value)


def _last_mark(seen: Mapping[str, float]) -> str | None:
    for key in ("END", "INSTALLED", "BEGIN"):
        if key in seen:
            return key
    return None


def _crash_line(serial: bytes) -> str:
    match = RETRYABLE_RE.search(serial.decode(errors="replace"))
    if match is None:
        return ""
    start = serial.decode(errors="replace").rfind("\n", 0, match.start()) + 1
    line = serial.decode(errors="replace")[start:].splitlines()[0]
    return line.strip()


@contextlib.contextmanager
def _open_when_exists(path: Path) -> Iterator[_LazyReader]:
    reader = _LazyReader(path)
    try:
        yield reader
    finally:
        reader.close()


class _LazyReader:
    """Reads what QEMU appended to a file since the last call (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: int | None = None

    def read(self) -> bytes:
        if self._handle is None:
            try:
                self._handle = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return b""
        chunks = []
        while True:
            chunk = os.read(self._handle, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def cxl_qemu_args(cxl: CxlTopology) -> list[str]:
    """QEMU arguments of a CXL topology: host bridge i is ``cxl.i`` on PCI bus 12 + 40 i, with
    one root port per device; memdev j of host bridge i is ``cxl-mem-i-j``."""
    args: list[str] = []
    for i, hb in enumerate(cxl.host_bridges):
        args += ["-device", f"pxb-cxl,bus_nr={12 + 40 * i},bus=pcie.0,id=cxl.{i}"]
        for j, dev in enumerate(hb.memdevs):
            port = f"cxl-rp-{i}-{j}"
            args += [
                "-object",
                f"memory-backend-ram,id=cxl-vmem-{i}-{j},share=on,size={dev.size_mib}M",
                "-device",
                f"cxl-rp,port={j},bus=cxl.{i},id={port},chassis={i},slot={j}",
                "-device",
                f"cxl-type3,bus={port},volatile-memdev=cxl-vmem-{i}-{j},id=cxl-mem-{i}-{j}"
                + (f",sn={dev.serial}" if dev.serial is not None else ""),
            ]
    windows = []
    for w, window in enumerate(cxl.windows):
        for t, target in enumerate(window.targets):
            if not 0 <= target < len(cxl.host_bridges):
                raise ValueError(f"CXL window {w} targets host bridge {target}, which is not there")
            windows.append(f"cxl-fmw.{w}.targets.{t}=cxl.{target}")
        windows.append(f"cxl-fmw.{w}.size={window.size_mib}M")
        if len(window.targets) > 1:
            windows.append(f"cxl-fmw.{w}.interleave-granularity={window.granularity_kib}k")
    if windows:
        args += ["-M", ",".join(windows)]
    return args


def numa_layout(scenario: Scenario) -> list[int]:
    """The NUMA node of each NVDIMM: 0, or a memory-less node after the hmem nodes."""
    nodes = []
    next_node = 1 + len(scenario.hmem)
    for spec in scenario.nvdimms:
        if spec.own_node:
            nodes.append(next_node)
            next_node += 1
        else:
            nodes.append(0)
    return nodes


def hmem_layout(scenario: Scenario) -> list[tuple[int, int]]:
    """Guest-physical (start, size) ranges of the hmem nodes, in bytes.

    QEMU's pc machine lays RAM out node after node. With hmem the lab caps low memory at the boot
    RAM (``max-ram-below-4g``), so every hmem node lies above 4 GiB: away from the firmware's
    reserved area at the top of low memory, which would leave the range unaligned for dax_hmem.
    """
    mib = 1024 * 1024
    ranges: list[tuple[int, int]] = []
    start = 1 << 32
    for spec in scenario.hmem:
        ranges.append((start, spec.size_mib * mib))
        start += spec.size_mib * mib
    return ranges


def hmem_kernel_args(scenario: Scenario) -> list[str]:
    # memmap=SIZE%START-OLDTYPE+NEWTYPE: usable RAM (1) -> E820_TYPE_SOFT_RESERVED (0xefffffff).
    return [f"memmap={size:#x}%{start:#x}-1+0xefffffff" for start, size in hmem_layout(scenario)]


# What `make install` reads (the runner copies the whole repository, but the rest does not end
# up installed): a change to any of these makes Lab.installed_disk() install again.
INSTALL_INPUTS = ("Makefile", "pyproject.toml", "README.md", "daxd", "units", "udev-rules", "etc")

INSTALLED_DISK_SCRIPT = r"""
set -euo pipefail
command -v daxd
daxd --version
systemctl cat daxd.service > /dev/null
test -f /usr/lib/udev/rules.d/90-daxd.rules
test -f /usr/share/dbus-1/system.d/org.daxd.Daxd1.conf
# Bytecode compiled now is not compiled again at every daxd start of every scenario.
python3 -m compileall -q "$(python3 -c 'import daxd, os; print(os.path.dirname(daxd.__file__))')"
"""


def install_hash(repo: Path, image: Image) -> str:
    """Hash of the image and of every file :data:`INSTALL_INPUTS` names (contents and paths)."""
    digest = hashlib.sha256(image.path.name.encode())
    for name in INSTALL_INPUTS:
        top = repo / name
        paths = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in paths:
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(repo)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def run_scenario(script: str, **kwargs: object) -> ScenarioResult:
    """One-call form: ``run_scenario("ndctl list", nvdimms=[NvdimmSpec()])``."""
    return Lab.default().run(Scenario(script=script, **kwargs))  # type: ignore[arg-type]


# -- command line ---------------------------------------------------------------------------------

DEMO_SCRIPT = r"""
set -euo pipefail
step() { printf '\n==== %s\n' "$*"; }
lab_wait_booted
step "the guest: Linux $(uname -r), $(systemctl --version | head -n1), two emulated NVDIMMs"
step "daxd, installed with 'make install' at boot: $(command -v daxd), $(daxd --version)"
grep -E "^(Successfully installed|install -m)" /lab/out/install.log | sed 's/^/    /'
step "the policy: etc/daxd/examples/demo.yaml -> /etc/daxd/policy.yaml"
install -m 0644 /lab/in/files/demo.yaml /etc/daxd/policy.yaml
grep -v '^#' /etc/daxd/policy.yaml | sed '/^$/d'
daxd check /etc/daxd/policy.yaml
step "daxd.service with no DAX device yet: $(systemctl is-active daxd.service || true)"
step "two namespaces become devdax devices (ndctl create-namespace -m devdax)"
for ns in namespace0.0 namespace1.0; do
    ndctl create-namespace -f -e "$ns" -m devdax \
        | jq -c '{namespace: .dev, mode, size, device: .daxregion.devices[0].chardev}'
done
step "udev started daxd.service (90-daxd.rules); waiting until it has applied the policy"
lab_wait_until 180 lab_state_is dax0.0 applied
lab_wait_until 60 lab_state_is dax1.0 applied
systemctl status --no-pager daxd.service | sed -n '1,8p'
step "daxd list"
daxd list
step "journalctl -u daxd (what daxd did)"
journalctl -b -u daxd.service --no-pager -o short-monotonic
step "daxd status (the daemon's view, over D-Bus)"
daxd status
step "busctl tree org.daxd.Daxd1"
busctl tree --no-pager org.daxd.Daxd1
step "busctl introspect org.daxd.Daxd1 /org/daxd/Daxd1/devices/dax0_0 org.daxd.Daxd1.Device"
busctl introspect --no-pager org.daxd.Daxd1 /org/daxd/Daxd1/devices/dax0_0 org.daxd.Daxd1.Device
step "busctl get-property"
for dev in dax0_0 dax1_0; do
    for prop in Mode Zone BlocksOnline State; do
        printf '%-7s %-13s %s\n' "$dev" "$prop" "$(busctl get-property org.daxd.Daxd1 \
            /org/daxd/Daxd1/devices/$dev org.daxd.Daxd1.Device $prop)"
    done
done
printf '%-21s %s\n' "Manager Summary" "$(busctl get-property org.daxd.Daxd1 /org/daxd/Daxd1 \
    org.daxd.Daxd1.Manager Summary)"
node=$(cat /sys/bus/dax/devices/dax0.0/target_node)
step "the memory of dax0.0: its blocks, and NUMA node $node"
lab_blocks dax0.0
grep MemTotal "/sys/devices/system/node/node$node/meminfo"
step "systemd-analyze security daxd.service"
systemd-analyze security --no-pager daxd.service | tail -n 1
# What the demo promises; any difference fails it.
test "$(lab_driver dax0.0)" = kmem
lab_all_movable dax0.0
test "$(cat /sys/bus/dax/devices/dax0.0/memmap_on_memory)" = 1
test "$(lab_driver dax1.0)" = device_dax
step "demo OK: dax0.0 is movable system RAM, dax1.0 is /dev/dax1.0; powering off"
"""


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vm.lab", description="daxd real-kernel lab (QEMU)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--nvdimm",
            type=int,
            action="append",
            default=None,
            metavar="MIB",
            help="add an NVDIMM of this size (repeatable; default: one of 1024 MiB)",
        )
        p.add_argument(
            "--hmem",
            type=int,
            action="append",
            default=[],
            metavar="MIB",
            help="add soft-reserved memory in its own NUMA node (repeatable)",
        )
        p.add_argument(
            "--cxl",
            type=int,
            action="append",
            default=[],
            metavar="MIB",
            help="add a volatile CXL type-3 device of this size behind a host bridge and window of "
            "its own (repeatable; serials 0x1000, 0x1001, ...; lab_cxl_create_region in guest)",
        )
        p.add_argument("--kernel-arg", action="append", default=[], metavar="ARG")
        p.add_argument("--memory", type=int, default=2048, metavar="MIB")
        p.add_argument("--keep", action="store_true", help="keep disk and NVDIMM files")

    run = sub.add_parser("run", help="run a scenario script (a file, or - for stdin)")
    run.add_argument("script")
    run.add_argument("--setup", metavar="SCRIPT", help="setup script for a first boot")
    run.add_argument("--install", action="store_true", help="install daxd from the repo first")
    run.add_argument(
        "--installed",
        action="store_true",
        help="boot from the cached disk with daxd installed (Lab.installed_disk; built if needed)",
    )
    run.add_argument("--timeout", type=float, default=300.0)
    common(run)
    demo = sub.add_parser(
        "demo",
        help="daxd installed with make install, two NVDIMMs, etc/daxd/examples/demo.yaml",
    )
    common(demo)
    shell = sub.add_parser("shell", help="boot and attach the serial console (log in as root)")
    common(shell)
    args = parser.parse_args(argv)

    nvdimms = [NvdimmSpec(size_mib=s) for s in (args.nvdimm or [1024])]
    if args.cmd == "demo" and args.nvdimm is None:
        nvdimms = [NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)]
    hmem = [HmemSpec(size_mib=s) for s in args.hmem]
    cxl = CxlTopology.simple(*args.cxl) if args.cxl else None
    lab = Lab.default(keep=args.keep)

    if args.cmd == "shell":
        return _shell(
            lab,
            Scenario(
                script="",
                nvdimms=nvdimms,
                hmem=hmem,
                cxl=cxl,
                kernel_args=args.kernel_arg,
                memory_mib=args.memory,
            ),
        )
    if args.cmd == "run":
        script = sys.stdin.read() if args.script == "-" else Path(args.script).read_text()
        setup = Path(args.setup).read_text() if args.setup else None
        scenario = Scenario(
            script=script,
            name=Path(args.script).stem or "stdin",
            setup_script=setup,
            nvdimms=nvdimms,
            hmem=hmem,
            cxl=cxl,
            kernel_args=args.kernel_arg,
            install_daxd=args.install,
            timeout=args.timeout,
            memory_mib=args.memory,
            base_disk=lab.installed_disk() if args.installed else None,
        )
    else:
        scenario = Scenario(
            script=DEMO_SCRIPT,
            name="demo",
            nvdimms=nvdimms,
            hmem=hmem,
            kernel_args=["memory_hotplug.memmap_on_memory=1", *args.kernel_arg],
            install_daxd=True,
            memory_mib=args.memory,
            files={"demo.yaml": (lab.repo / "etc/daxd/examples/demo.yaml").read_text()},
        )
    result = lab.run(scenario)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if not result.ok:
        print(result.report(), file=sys.stderr)
    print(f"run folder: {result.run_dir}", file=sys.stderr)
    print("timings: " + json.dumps(result.timings), file=sys.stderr)
    return 0 if result.ok else 1


def _shell(lab: Lab, scenario: Scenario) -> int:
    """Boot without a scenario (daxd-lab.service stays inactive) on an interactive console."""
    run_dir = lab._new_run_dir("shell")
    overlay = run_dir / "disk.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(lab.image.rootfs),
            str(overlay),
        ],
        check=True,
    )
    files = []
    for i, spec in enumerate(scenario.nvdimms):
        path = run_dir / f"nvdimm{i}.img"
        with path.open("wb") as fh:
            fh.truncate(spec.backend_mib * 1024 * 1024)
        files.append(path)
    cmdline = [a for a in lab.kernel_cmdline(scenario, "none") if not a.startswith("daxd_lab.")]
    shares = [("lab_repo", lab.repo, True)]
    cmd = lab.qemu_command(
        scenario,
        cmdline=cmdline,
        overlay=overlay,
        nvdimm_files=files,
        serial="mon:stdio",
        shares=shares,
    )
    print(
        "lab shell: log in as root (no password); Ctrl-a x quits QEMU. The repository is the "
        "9p tag lab_repo:\n  mount -t 9p -o trans=virtio,ro lab_repo /lab/repo",
        file=sys.stderr,
    )
    try:
        return subprocess.call(cmd, env=lab.qemu.environ())
    finally:
        if not lab.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(_cli())

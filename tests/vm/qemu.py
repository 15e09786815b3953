"""The QEMU the lab runs: Debian 13's, whatever the host.

Emulated volatile CXL type-3 memory needs QEMU 10 (Debian 12's 7.2 has no ``volatile-memdev``
and Linux 6.12's cxl_pci refuses its type-3 device). So the lab always runs trixie's
``qemu-system-x86_64``: on any Debian host it is unpacked with ``mmdebstrap`` into a root of its
own (about 20 s and 260 MB, cached under ``$DAXD_LAB_DIR/qemu/<recipe hash>/``) and started
through that root's own dynamic loader, so neither a chroot nor root rights are needed to run
it. One QEMU for every scenario and every host: NVDIMM, hmem and CXL scenarios see the same
emulator on Debian 12 and 13.

``DAXD_LAB_QEMU=/path/to/qemu-system-x86_64`` runs that binary instead (it must be 10 or newer
for CXL scenarios).

Command line: ``python3 -m tests.vm.qemu ensure`` (used by tests/vm/install-deps.sh; only the
standard library is imported, so Debian's python3 runs it before the venv exists) and
``python3 -m tests.vm.qemu version``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm import image as image_mod  # standard library only, as this module

SUITE = "trixie"
PACKAGES = ("qemu-system-x86", "qemu-utils")
# Bump to unpack again when something outside SUITE/PACKAGES changes the result.
RECIPE_VERSION = 1
TRIPLET = "x86_64-linux-gnu"
MIN_CXL_VERSION = (10, 0)

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _lab_dir() -> Path:
    env = os.environ.get("DAXD_LAB_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / ".lab"


def _mirror() -> str:
    return os.environ.get("DAXD_LAB_MIRROR", "http://deb.debian.org/debian")


def recipe_hash() -> str:
    blob = json.dumps({"v": RECIPE_VERSION, "suite": SUITE, "packages": PACKAGES}).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Qemu:
    """How to start qemu-system-x86_64: the argv prefix, its environment and firmware paths."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    data_dirs: tuple[str, ...] = ()

    def command(self, args: list[str]) -> list[str]:
        firmware = [a for d in self.data_dirs for a in ("-L", d)]
        return [*self.argv, *firmware, *args]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def version(self) -> tuple[int, int]:
        out = subprocess.run(
            self.command(["--version"]),
            env=self.environ(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = re.search(r"version (\d+)\.(\d+)", out)
        if match is None:
            raise RuntimeError(f"cannot tell the QEMU version from {out!r}")
        return int(match.group(1)), int(match.group(2))


def from_root(root: Path) -> Qemu:
    """trixie's QEMU unpacked in ``root``, run by that root's dynamic loader and libraries."""
    libs = f"{root}/usr/lib/{TRIPLET}:{root}/lib/{TRIPLET}"
    return Qemu(
        argv=(
            str(root / "lib64/ld-linux-x86-64.so.2"),
            "--argv0",
            "qemu-system-x86_64",
            "--library-path",
            libs,
            str(root / "usr/bin/qemu-system-x86_64"),
        ),
        env={"QEMU_MODULE_DIR": f"{root}/usr/lib/{TRIPLET}/qemu"},
        # The emulator's own ROMs and its SeaBIOS, not the host's (which belong to another QEMU).
        data_dirs=(f"{root}/usr/share/qemu", f"{root}/usr/share/seabios"),
    )


def cached_root(base: Path | None = None) -> Path | None:
    root = (base or _lab_dir()) / "qemu" / recipe_hash() / "root"
    return root if (root / "usr/bin/qemu-system-x86_64").is_file() else None


def ensure_qemu(base: Path | None = None, *, log: Log = _stderr_log) -> Qemu:
    """The lab's QEMU: ``$DAXD_LAB_QEMU``, else trixie's (unpacked first if not cached)."""
    override = os.environ.get("DAXD_LAB_QEMU")
    if override:
        return Qemu(argv=(override,))
    base = base or _lab_dir()
    folder = base / "qemu" / recipe_hash()
    with image_mod._locked(base / "qemu" / f".lock-{recipe_hash()}"):
        root = cached_root(base)
        if root is None:
            _unpack(folder, log=log)
            root = folder / "root"
            _prune(base, keep=folder)
    return from_root(root)


def _unpack(folder: Path, *, log: Log) -> None:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("the lab unpacks its QEMU with mmdebstrap: run tests/vm/install-deps.sh")
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=auto",
        '--aptopt=APT::Install-Recommends "false"',
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(tmp / "root"),
        _mirror(),
    ]
    log(f"lab QEMU: unpacking {SUITE}'s {', '.join(PACKAGES)} with mmdebstrap (about 20 s)")
    started = time.monotonic()
    logfile = tmp / "build.log"
    with logfile.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-20:])
        shutil.rmtree(tmp / "root", ignore_errors=True)
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}), log {logfile}:\n{tail}")
    major, minor = from_root(tmp / "root").version()
    (tmp / "build.json").write_text(
        json.dumps(
            {
                "suite": SUITE,
                "packages": PACKAGES,
                "version": f"{major}.{minor}",
                "seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # complete or absent
    log(f"lab QEMU: {major}.{minor} in {time.monotonic() - started:.0f} s")


def _prune(base: Path, *, keep: Path) -> None:
    for entry in (base / "qemu").iterdir():
        if entry.is_dir() and entry != keep:
            shutil.rmtree(entry, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.vm.qemu", description=__doc__)
    parser.add_argument("cmd", choices=("ensure", "version"))
    args = parser.parse_args(argv)
    qemu = ensure_qemu()
    major, minor = qemu.version()
    if args.cmd == "ensure":
        print(f"lab QEMU {major}.{minor}: {qemu.argv[-1]}")
    else:
        print(f"{major}.{minor}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build and cache the guest image of the daxd real-kernel lab.

The guest is Debian 13 (trixie) with its 6.12 kernel, systemd as PID 1, udev, dbus-daemon, ndctl,
daxctl, cxl and the Python packages daxd imports. ``mmdebstrap`` builds the tree; a customize hook
(``guest/image/customize.sh``) configures it and packs it into an ext4 image with ``mke2fs -d``,
next to the kernel and initrd that QEMU boots directly (``-kernel``/``-initrd``).

Images are cached under ``$DAXD_LAB_DIR/images/<recipe hash>/`` (default ``<repo>/.lab``). The
recipe hash covers the suite, the package list and every file under ``guest/image/``; a change to
any of them builds a new image. A build happens in a temporary folder that is renamed into place
only when complete, so an interrupted build is never used.

Command line::

    python -m tests.vm.image build [--force]   # build unless the current recipe is cached
    python -m tests.vm.image status            # what is cached, what the recipe hash is
    python -m tests.vm.image gc                # remove images of other recipes
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_SIZE_MIB = 3072
# Bump to force a rebuild when something outside the hashed inputs changes the result.
RECIPE_VERSION = 1

PACKAGES: tuple[str, ...] = (
    # boot and init
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "kmod",
    "procps",
    "util-linux",
    # daxd's runtime dependencies (pyproject.toml), all packaged in trixie
    "python3",
    "python3-pydantic",
    "python3-yaml",
    "python3-pyudev",
    "python3-sdnotify",
    "python3-dbus-fast",
    # installing daxd the way a user would: make install / pip install
    "python3-pip",
    "python3-setuptools",
    "python3-wheel",
    "make",
    # the kernel's own tools for pmem, device DAX and CXL; busctl comes with systemd
    "ndctl",
    "daxctl",
    "cxl",
    "libglib2.0-bin",
    # the D-Bus clients monitoring tools use: dbus-send, GLib (tests/service/glib_client.py)
    "dbus-bin",
    "python3-gi",
    "gir1.2-glib-2.0",
    # small conveniences for scenario scripts
    "jq",
    "less",
)

HERE = Path(__file__).resolve().parent
GUEST_IMAGE_DIR = HERE / "guest" / "image"
# The emulator itself is not one: the lab runs trixie's (tests/vm/qemu.py).
HOST_TOOLS: tuple[str, ...] = ("qemu-img", "mmdebstrap", "mke2fs")

Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def repo_root() -> Path:
    return HERE.parents[1]


def lab_dir() -> Path:
    """Cache root: ``$DAXD_LAB_DIR``, else ``<repo>/.lab`` (git-ignored)."""
    env = os.environ.get("DAXD_LAB_DIR")
    return Path(env).resolve() if env else repo_root() / ".lab"


def missing_host_tools() -> list[str]:
    return [tool for tool in HOST_TOOLS if shutil.which(tool) is None]


def mirror() -> str:
    return os.environ.get("DAXD_LAB_MIRROR", DEFAULT_MIRROR)


def recipe() -> dict[str, object]:
    """Everything that determines the image (the mirror does not)."""
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(GUEST_IMAGE_DIR.iterdir())
        if p.is_file()
    }
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "size_mib": IMAGE_SIZE_MIB,
        "files": files,
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    """A built guest image: a folder with rootfs.raw, vmlinuz, initrd.img and build.json."""

    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs.raw"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def info(self) -> dict[str, object]:
        data: object = json.loads((self.path / "build.json").read_text())
        assert isinstance(data, dict)
        return data

    @property
    def kernel_version(self) -> str:
        return (self.path / "kernel-version").read_text().strip()

    @property
    def build_seconds(self) -> float:
        value = self.info.get("build_seconds")
        return float(value) if isinstance(value, int | float) else float("nan")

    def is_complete(self) -> bool:
        names = ("rootfs.raw", "vmlinuz", "initrd.img", "build.json", "kernel-version")
        return all((self.path / n).is_file() for n in names)


def images_dir(base: Path | None = None) -> Path:
    return (base or lab_dir()) / "images"


def cached_image(base: Path | None = None) -> Image | None:
    """The image of the current recipe, if it has been built."""
    image = Image(images_dir(base) / recipe_hash())
    return image if image.is_complete() else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_image(base: Path | None = None, *, force: bool = False, log: Log = _stderr_log) -> Image:
    """Return the image of the current recipe, building it first when needed (or when forced)."""
    base = base or lab_dir()
    digest = recipe_hash()
    final = images_dir(base) / digest
    with _locked(images_dir(base) / f".lock-{digest}"):
        image = Image(final)
        if image.is_complete() and not force:
            return image
        missing = missing_host_tools()
        if missing:
            raise RuntimeError(
                f"cannot build the lab image, missing host tools: {', '.join(missing)} "
                "(run tests/vm/install-deps.sh)"
            )
        tmp = images_dir(base) / f".tmp-{digest}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _build_into(tmp, base, digest, log=log)
            old = images_dir(base) / f".old-{digest}-{os.getpid()}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)  # atomic: the image folder appears complete or not at all
            shutil.rmtree(old, ignore_errors=True)
            _prune_images(base, keep=final, log=log)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Image(final)


def _build_into(out: Path, base: Path, digest: str, *, log: Log) -> None:
    debs = base / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    customize = GUEST_IMAGE_DIR / "customize.sh"
    essential = GUEST_IMAGE_DIR / "essential.sh"
    cmd = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=auto",
        '--aptopt=APT::Install-Recommends "false"',
        "--include=" + ",".join(PACKAGES),
        # keep the downloaded .debs between builds (outside the image)
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {q(str(debs))} /var/cache/apt/archives/",
        f'--essential-hook=sh {q(str(essential))} "$1"',
        '--customize-hook=chroot "$1" apt-get -q autoclean',
        f"--customize-hook=sync-out /var/cache/apt/archives {q(str(debs))}",
        '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
        f'--customize-hook=sh {q(str(customize))} "$1" {q(str(GUEST_IMAGE_DIR))} '
        f"{q(str(out))} {IMAGE_SIZE_MIB}",
        SUITE,
        "/dev/null",
        mirror(),
    ]
    log(f"lab image: building {SUITE} image {out.name} with mmdebstrap (about a minute)")
    started = time.monotonic()
    logfile = out / "build.log"
    with logfile.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-30:])
        kept = base / "last-failed-build.log"
        shutil.copy(logfile, kept)
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}), log in {kept}:\n{tail}")
    seconds = time.monotonic() - started
    info = {
        "recipe_hash": digest,
        "recipe": recipe(),
        "mirror": mirror(),
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel_version": (out / "kernel-version").read_text().strip(),
        "rootfs_used_mib": _used_mib(out / "rootfs.raw"),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"lab image: built in {seconds:.0f} s, kernel {info['kernel_version']}")


def _used_mib(path: Path) -> int:
    return int(path.stat().st_blocks * 512 // (1024 * 1024))


def _prune_images(base: Path, *, keep: Path, log: Log) -> None:
    """After a build: keep the new image and the newest other one (switching branches back and
    forth should not rebuild every time); remove the rest."""
    others = sorted(
        (
            p
            for p in images_dir(base).iterdir()
            if p.is_dir() and not p.name.startswith(".") and p != keep
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[1:]:
        log(f"lab image: removing old image {old.name}")
        shutil.rmtree(old, ignore_errors=True)


def gc(base: Path | None = None, *, log: Log = _stderr_log) -> None:
    """Remove images of other recipes and leftovers of interrupted builds."""
    current = recipe_hash()
    folder = images_dir(base)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == current or entry.name.startswith(".lock-"):
            continue
        log(f"lab image: removing {entry}")
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vm.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build the image of the current recipe unless cached")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    sub.add_parser("status", help="show the recipe hash and the cached image")
    sub.add_parser("gc", help="remove images of other recipes")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        image = ensure_image(force=args.force)
        print(image.path)
        print(f"kernel {image.kernel_version}, built in {image.build_seconds:.0f} s")
    elif args.cmd == "status":
        print(f"lab dir:     {lab_dir()}")
        print(f"recipe hash: {recipe_hash()}")
        cached = cached_image()
        if cached is None:
            print("image:       not built (python -m tests.vm.image build)")
        else:
            info = cached.info
            print(f"image:       {cached.path}")
            print(f"kernel:      {cached.kernel_version}")
            print(f"built:       {info.get('built_at')} in {info.get('build_seconds')} s")
        missing = missing_host_tools()
        print(f"host tools:  {'missing ' + ', '.join(missing) if missing else 'ok'}")
    elif args.cmd == "gc":
        gc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

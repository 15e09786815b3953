"""`make install` puts every piece where systemd, udev and D-Bus look for it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def make_install(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={dest}", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_into_destdir(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    done = make_install(dest)
    assert done.returncode == 0, done.stderr
    unit = (dest / "usr/lib/systemd/system/daxd.service").read_text()
    assert "ExecStart=/usr/bin/daxd run" in unit
    assert "@" not in unit.replace("@system-service", "").replace("@privileged", "").replace(
        "@resources", ""
    )
    assert (dest / "usr/lib/udev/rules.d/90-daxd.rules").is_file()
    assert (dest / "usr/share/dbus-1/system.d/org.daxd.Daxd1.conf").is_file()
    assert (dest / "usr/bin/daxd").is_file()
    assert list(dest.glob("usr/lib/python3*/*-packages/daxd/cli/main.py"))
    policy = dest / "etc/daxd/policy.yaml"
    assert policy.read_text() == (REPO / "etc/daxd/policy.yaml").read_text()

    # The operator's policy survives a reinstall.
    policy.write_text("rules: []\n")
    assert make_install(dest).returncode == 0
    assert policy.read_text() == "rules: []\n"

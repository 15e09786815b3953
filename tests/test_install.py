"""`make install` puts every piece where systemd, udev and D-Bus look for it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from daxd.service import dbus_xml
from daxd.service.dbus_objects import DOC_ANNOTATION as DOC

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
    # The interface files, as daxd/service/dbus_xml.py writes them.
    interfaces = dest / "usr/share/dbus-1/interfaces"
    assert sorted(p.name for p in interfaces.iterdir()) == [
        "org.daxd.Daxd1.Device.xml",
        "org.daxd.Daxd1.Manager.xml",
        "org.daxd.Daxd1.Region.xml",
    ]
    for name, interface in dbus_xml.interfaces().items():
        text = (interfaces / f"{name}.xml").read_text()
        assert text == dbus_xml.interface_xml(interface)
        root = ET.fromstring(text)
        assert [i.get("name") for i in root.iter("interface")] == [name]
        assert root.find(f"interface/annotation[@name='{DOC}']") is not None
    assert (dest / "usr/bin/daxd").is_file()
    assert list(dest.glob("usr/lib/python3*/*-packages/daxd/cli/main.py"))
    policy = dest / "etc/daxd/policy.yaml"
    assert policy.read_text() == (REPO / "etc/daxd/policy.yaml").read_text()

    # The operator's policy survives a reinstall.
    policy.write_text("rules: []\n")
    assert make_install(dest).returncode == 0
    assert policy.read_text() == "rules: []\n"

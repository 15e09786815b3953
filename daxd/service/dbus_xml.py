"""The interface description files of daxd's D-Bus API, from the code that exports it.

    python -m daxd.service.dbus_xml DIR

writes ``DIR/org.daxd.Daxd1.Manager.xml``, ``DIR/org.daxd.Daxd1.Device.xml`` and
``DIR/org.daxd.Daxd1.Region.xml`` (``make install`` puts them in /usr/share/dbus-1/interfaces).
Each is one ``<node>`` holding one ``<interface>``, as dbus-fast introspects it, with the
``org.gtk.GDBus.DocString`` annotations of :mod:`daxd.service.dbus_objects`: the running daemon's
``Introspect`` shows the same (the test suite compares them), and ``gdbus-codegen`` takes these
files as they are.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from dbus_fast.service import ServiceInterface

from daxd import __version__
from daxd.service.bus_names import DEVICE_INTERFACE, MANAGER_INTERFACE, REGION_INTERFACE
from daxd.service.dbus_objects import (
    DeviceInterface,
    ManagerInterface,
    RegionInterface,
    RegionValues,
)
from daxd.service.status import DeviceState, DeviceStatus, ManagerStatus

DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


def interfaces() -> dict[str, ServiceInterface]:
    """One instance of each interface daxd exports (the values do not show in the files)."""
    device = DeviceStatus(
        name="dax0.0", provider="unknown", size=0, numa_node=-1, target_node=-1, driver="",
        mode="unbound", zone="none", memmap_on_memory=False, blocks_online=0, blocks_total=0,
        rule="", desired_mode="", state=DeviceState.UNMANAGED, last_error="", last_change=0,
    )  # fmt: skip
    manager = ManagerStatus(__version__, "", "", 0, "")
    return {
        MANAGER_INTERFACE: ManagerInterface(manager, lambda: ()),
        DEVICE_INTERFACE: DeviceInterface(device),
        REGION_INTERFACE: RegionInterface(RegionValues("region")),
    }


def interface_xml(interface: ServiceInterface) -> str:
    """The interface file's text."""
    node = ET.Element("node")
    node.append(interface.introspect().to_xml())
    ET.indent(node)
    return DOCTYPE + ET.tostring(node, encoding="unicode") + "\n"


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, interface in interfaces().items():
        path = folder / f"{name}.xml"
        path.write_text(interface_xml(interface), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m daxd.service.dbus_xml DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Lab only: hold daxd where it opens a given sysfs file, so that a scenario can kill -9 it at
that point of real work instead of racing it.

PAUSE is an audit hook that the guest's python loads through a .pth file. While daxd's service
has DAXD_LAB_PAUSE_AT set, the first open of that path for writing writes /run/daxd/lab-paused
(the CXL region being built, when the path is on the cxl bus; else "paused") and sleeps. Reads
of the same path go on. INSTALL_PAUSE
defines the shell functions the scenarios use: ``lab_pause_at PATH`` and ``lab_pause_off``.
Put PAUSE into the scenario's files as ``pause.py``.
"""

from __future__ import annotations

PAUSE = """\
import os
import sys
import time

AT = os.environ.get("DAXD_LAB_PAUSE_AT")


def _what():
    if not AT.startswith("/sys/bus/cxl/"):
        return "paused"
    regions = sorted(
        e
        for e in os.listdir("/sys/bus/cxl/devices")
        if e.startswith("region") and not os.path.exists(f"/sys/bus/cxl/devices/{e}/driver")
    )
    return regions[0] if regions else "none"


def _writing(mode, flags):
    # builtins.open passes its mode; os.open (what daxd's Sysfs uses) its flags
    if isinstance(mode, str):
        return any(c in mode for c in "wa+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR))


def _hook(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes)) or os.fsdecode(args[0]) != AT:
        return
    if not _writing(args[1], args[2]):
        return  # reads of the same attribute go on
    with open("/run/daxd/lab-paused", "w") as f:
        f.write(_what())
    time.sleep(600)


if AT:
    sys.addaudithook(_hook)
"""

INSTALL_PAUSE = r"""
lab_pause_site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
# daxd's next start holds at the open of $1 (then: kill it, lab_pause_off, start it again).
lab_pause_at() {
    install -D -m 0644 /lab/in/files/pause.py "$lab_pause_site/daxd_lab_pause.py"
    echo "import daxd_lab_pause" > "$lab_pause_site/daxd_lab_pause.pth"
    mkdir -p /run/systemd/system/daxd.service.d
    printf '[Service]\nEnvironment=DAXD_LAB_PAUSE_AT=%s\n' "$1" \
        > /run/systemd/system/daxd.service.d/pause.conf
    systemctl daemon-reload
}
# Before the kill: Restart=on-failure starts daxd again by itself, 2 s after it.
lab_pause_off() {
    rm -f /run/systemd/system/daxd.service.d/pause.conf "$lab_pause_site/daxd_lab_pause.pth" \
        /run/daxd/lab-paused
    systemctl daemon-reload
}
"""

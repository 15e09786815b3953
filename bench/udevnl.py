"""Sending uevents as systemd-udevd re-broadcasts them, so that a real libudev monitor (the
daemon's pyudev UdevSource) receives them: the "libudev" netlink format of
systemd's sd-device/device-monitor.c, multicast to NETLINK_KOBJECT_UEVENT group 2 ("udev").

Only ever used inside a private network namespace (``unshare --net``): netlink uevent groups
are per namespace, so nothing else on the machine sees these events.  Needs root (libudev drops
messages whose sender is not uid 0; sending to a multicast group needs CAP_NET_ADMIN).
"""

from __future__ import annotations

import socket
import struct

NETLINK_KOBJECT_UEVENT = 15
GROUP_UDEV = 2
UDEV_MONITOR_MAGIC = 0xFEEDCAFE
HEADER_SIZE = 40  # struct monitor_netlink_header


def murmur2(data: bytes, seed: int = 0) -> int:
    """MurmurHash2, 32 bits (systemd's string_hash32(): the subsystem filter hash)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    n = len(data)
    h = (seed ^ n) & mask
    i = 0
    while n - i >= 4:
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
        i += 4
    rest = n - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def message(action: str, subsystem: str, devpath: str, seqnum: int) -> bytes:
    props = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem, "SEQNUM": str(seqnum)}
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in props.items())
    header = (
        b"libudev\0"
        + struct.pack(">I", UDEV_MONITOR_MAGIC)
        + struct.pack("=III", HEADER_SIZE, HEADER_SIZE, len(body))
        + struct.pack(">II", murmur2(subsystem.encode()), 0)  # subsystem hash, no devtype
        + struct.pack("=II", 0, 0)  # no tags
    )
    return header + body


class UdevSender:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT)
        self.sock.bind((0, 0))
        self.seqnum = 0

    def send(self, action: str, subsystem: str, devpath: str) -> None:
        self.seqnum += 1
        self.sock.sendto(message(action, subsystem, devpath, self.seqnum), (0, GROUP_UDEV))

    def memory(self, action: str, index: int) -> None:
        self.send(action, "memory", f"/devices/system/memory/memory{index}")

    def close(self) -> None:
        self.sock.close()

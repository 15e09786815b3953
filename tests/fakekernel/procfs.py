"""A procfs with processes that have /dev/daxX.Y open (fd links) or mapped (maps lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.fakekernel.tree import Tree

GiB = 1 << 30


@dataclass
class FakeProcess:
    pid: int
    comm: str
    fds: dict[int, str] = field(default_factory=dict)  # fd -> target path
    maps: list[str] = field(default_factory=list)  # mapped device names


class FakeProcfs:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.processes: dict[int, FakeProcess] = {}
        tree.dir("self")

    def open_device(self, pid: int, comm: str, devname: str, mapped: bool = False) -> None:
        """The process opens /dev/<devname> (a new fd) and, if ``mapped``, mmaps it."""
        p = self.processes.setdefault(pid, FakeProcess(pid, comm))
        p.fds[3 + len(p.fds)] = f"/dev/{devname}"
        if mapped:
            p.maps.append(devname)
        self._render(p)

    def close_device(self, pid: int, devname: str) -> None:
        """Closes the fds; mappings outlive them."""
        p = self.processes[pid]
        p.fds = {fd: t for fd, t in p.fds.items() if t != f"/dev/{devname}"}
        self._render(p)

    def exit(self, pid: int) -> None:
        self.processes.pop(pid, None)
        self.tree.remove(str(pid))

    def users(self, devname: str) -> list[tuple[int, str, bool]]:
        """(pid, comm, mapped) of processes with the device open or mapped."""
        return [
            (p.pid, p.comm, devname in p.maps)
            for p in self.processes.values()
            if devname in p.maps or f"/dev/{devname}" in p.fds.values()
        ]

    def _render(self, p: FakeProcess) -> None:
        base = str(p.pid)
        self.tree.remove(base)
        self.tree.attr(f"{base}/comm", p.comm, 0o644)
        self.tree.dir(f"{base}/fd")
        self.tree.raw(f"{base}/fd/0", "")  # stdin: a plain file is enough to be "not the device"
        for fd, target in p.fds.items():
            self.tree.path(f"{base}/fd/{fd}").symlink_to(target)
        lines = ["55d0c0a00000-55d0c0a21000 r-xp 00000000 08:01 1312 /usr/bin/app"]
        for i, devname in enumerate(p.maps):
            start = 0x7F0000000000 + i * GiB
            lines.append(f"{start:x}-{start + GiB:x} rw-s 00000000 00:06 1029 /dev/{devname}")
        self.tree.raw(f"{base}/maps", "\n".join(lines) + "\n")

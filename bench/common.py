"""What the benchmarks share: the machine, statistics, tables, fake trees and a counting sysfs."""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daxd.kernel.sysfs import Sysfs
from tests.fakekernel import FakeKernel, MiB
from tests.fakekernel.kstr import node_list
from tests.fakekernel.memory import NODES, FakeBlock, MemorySubsystem
from tests.fakekernel.sysfs import FakeSysfs

REPO = Path(__file__).absolute().parents[1]  # not resolved: a tree may link bench in
PYTHON = sys.executable
BLOCK_SIZE = 128 * MiB  # the x86-64 default (block_size_bytes 8000000)

MOVABLE_POLICY = """\
version: 1
rules:
  - name: hmem-as-movable
    match: {provider: hmem}
    mode: system-ram
    zone: movable
"""

# -- the machine and the environment ---------------------------------------------------------


def machine() -> dict[str, Any]:
    lscpu = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        lscpu = "\n".join(out.splitlines()[:10])
    return {
        "nproc": os.cpu_count(),
        "lscpu": lscpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


def pycache_dir() -> Path:
    """Where subprocesses keep daxd's bytecode (the tree may forbid writing it in place)."""
    d = Path(tempfile.gettempdir()) / "daxd-bench-pycache"
    d.mkdir(exist_ok=True)
    return d


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a daxd subprocess: bytecode cached as for an installed package.

    PYTHONDONTWRITEBYTECODE (set in some CI shells) would make every start compile daxd from
    source, which an installed package (pip, dpkg) never does; a private PYTHONPYCACHEPREFIX
    keeps the source tree clean.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONDONTWRITEBYTECODE",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "DBUS_SYSTEM_BUS_ADDRESS",
            "JOURNAL_STREAM",
            "INVOCATION_ID",
        )
    }
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONPYCACHEPREFIX"] = str(pycache_dir())
    env.update(extra)
    return env


def production_logging() -> None:
    """What `daxd run` sets up (INFO and up, formatted), written to /dev/null: in-process
    benchmarks pay for the log lines the daemon writes, as it does in production."""
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives with the run
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def scratch(prefix: str) -> Path:
    """A private folder on tmpfs when there is one (sysfs is memory-backed too)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=f"daxd-bench-{prefix}-", dir=base))


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def write_policy(folder: Path, text: str = MOVABLE_POLICY) -> Path:
    path = folder / "policy.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


# -- statistics and tables -------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def heading(text: str) -> None:
    print(f"\n## {text}\n", flush=True)


# -- sd_notify -------------------------------------------------------------------------------


class NotifyListener:
    """A NOTIFY_SOCKET, as systemd binds it; ``wait`` returns the datagram that has ``field``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def wait(self, field: str, timeout: float) -> tuple[float, str]:
        """(perf_counter at arrival, datagram) of the first new datagram holding ``field``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {field} within {timeout} s")
            self.sock.settimeout(left)
            data = self.sock.recv(65536).decode()
            now = time.perf_counter()
            self.messages.append((now, data))
            if field in data.split("\n"):
                return now, data

    def drain(self) -> list[str]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                data = self.sock.recv(65536).decode()
                self.messages.append((time.perf_counter(), data))
                out.append(data)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def status_of(datagram: str) -> str:
    for line in datagram.split("\n"):
        if line.startswith("STATUS="):
            return line[len("STATUS=") :]
    return ""


# -- a fake kernel that stays O(1) per block change -----------------------------------------


class FastMemory(MemorySubsystem):
    """The fake kernel's memory subsystem, giving the same answers in O(log n) per block change.

    MemorySubsystem recomputes node and zone facts by walking every block on each online or
    offline (fine for tests, O(blocks²) for a 16,384-block benchmark).  This keeps them as
    counters and sorted lists instead, so the time measured is daxd's, not the fake's.
    ``bulk()`` defers the per-node re-render while a device is being built.
    """

    _seen: dict[int, tuple[int, bool, str | None]]
    _spans: dict[tuple[int, str], list[int]]
    _offline: dict[int, set[int]]
    _per_node: Counter[tuple[str, int]]
    _deferred: set[int] | None

    @classmethod
    def install(cls, memory: MemorySubsystem) -> FastMemory:
        memory.__class__ = cls
        fast = memory
        assert isinstance(fast, FastMemory)
        fast._seen, fast._spans, fast._offline = {}, {}, {}
        fast._per_node = Counter()
        fast._deferred = None
        for b in fast.blocks.values():
            fast._track(b)
        return fast

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        self._deferred = set()
        try:
            yield
        finally:
            nodes, self._deferred = self._deferred, None
            for node in sorted(nodes):
                self.render_node(node)

    def _untrack(self, index: int) -> None:
        old = self._seen.pop(index, None)
        if old is None:
            return
        node, online, zone = old
        self._per_node["blocks", node] -= 1
        if online:
            self._per_node["online", node] -= 1
            if zone != "Movable":
                self._per_node["normal", node] -= 1
        else:
            self._offline[node].discard(index)
        if online and zone is not None:
            span = self._spans[node, zone]
            del span[bisect.bisect_left(span, index)]

    def _track(self, b: FakeBlock) -> None:
        self._untrack(b.index)
        self._seen[b.index] = (b.node, b.online, b.zone)
        self._per_node["blocks", b.node] += 1
        if b.online:
            self._per_node["online", b.node] += 1
            if b.zone != "Movable":
                self._per_node["normal", b.node] += 1
            if b.zone is not None:
                bisect.insort(self._spans.setdefault((b.node, b.zone), []), b.index)
        else:
            self._offline.setdefault(b.node, set()).add(b.index)

    def render_block(self, b: FakeBlock) -> None:
        if hasattr(self, "_seen"):  # not during MemorySubsystem.__init__
            self._track(b)
        super().render_block(b)

    def hot_remove(self, start: int, end: int) -> bool:
        indices = [i for i in self.block_range(start, end) if i in self.blocks]
        if any(self.blocks[i].online for i in indices):
            return False
        for i in indices:
            self._untrack(i)
        return super().hot_remove(start, end)

    def _span_has(self, node: int, zone: str, index: int) -> bool:
        span = self._spans.get((node, zone))
        return span is not None and bool(span) and span[0] <= index <= span[-1]

    def render_node(self, node: int) -> None:
        if self._deferred is not None:
            self._deferred.add(node)
            return
        if self.config.hotremove:
            for i in sorted(self._offline.get(node, ())):
                b = self.blocks[i]
                self.tree.attr(f"{b.devpath}/valid_zones", self.valid_zones(b))
        self.render_nodes()

    def render_nodes(self) -> None:
        if not hasattr(self, "_seen"):
            super().render_nodes()
            return

        def nodes(kind: str) -> set[int]:
            return {n for (k, n), c in self._per_node.items() if k == kind and c > 0}

        online = nodes("blocks") | self.cpu_nodes
        for node in online:
            self.tree.dir(f"{NODES}/node{node}")
        for entry in os.listdir(self.tree.path(NODES)):
            if entry.startswith("node") and entry[4:].isdigit() and int(entry[4:]) not in online:
                self.tree.remove(f"{NODES}/{entry}")
        self.tree.attr(f"{NODES}/possible", node_list(online | set(range(4))))
        self.tree.attr(f"{NODES}/online", node_list(online))
        self.tree.attr(f"{NODES}/has_memory", node_list(nodes("online")))
        self.tree.attr(f"{NODES}/has_normal_memory", node_list(nodes("normal")))
        self.tree.attr(f"{NODES}/has_cpu", node_list(self.cpu_nodes))


def hmem_kernel(
    base: Path,
    devices: int,
    blocks_per_device: int,
    *,
    movable: bool,
    block_size: int = BLOCK_SIZE,
) -> FakeKernel:
    """Soft-reserved devices bound to kmem at boot, every block online (Debian's default
    auto_online_blocks=online puts them in Normal; ``movable`` builds them as daxd leaves them).
    """
    kernel = FakeKernel(
        base,
        block_size=block_size,
        auto_online_blocks="online_movable" if movable else "online",
    )
    fast = FastMemory.install(kernel.memory)
    with fast.bulk():
        for i in range(devices):
            kernel.add_hmem_device(size=blocks_per_device * block_size, target_node=1 + i % 2)
    if movable:
        kernel.configure(auto_online_blocks="online")
    return kernel


def tree_size(root: Path) -> int:
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(root))


# -- counting what daxd asks of sysfs ------------------------------------------------------------

_BLOCK_PATH = re.compile(r"^devices/system/memory/memory[0-9]+(/|$)")


class CountingSysfs(FakeSysfs):
    """The fake kernel's sysfs, counting every operation (per block or not) and the time the
    fake kernel itself spends answering writes (not daxd's time).

    Reads go straight to daxd's own Sysfs.read: FakeSysfs adds a stat() per read to refuse
    reading write-only or (as non-root) 0400 attributes, which the benchmarks never do, and
    which real sysfs does not cost.
    """

    def __init__(self, kernel: FakeKernel) -> None:
        super().__init__(kernel)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.fake_write_seconds = 0.0

    def reset(self) -> None:
        self.counts.clear()
        self.fake_write_seconds = 0.0

    def _count(self, op: str, rel: str) -> None:
        self.counts[op, "block" if _BLOCK_PATH.match(rel) else "other"] += 1

    def read(self, rel: str) -> str | None:
        self._count("read", rel)
        return Sysfs.read(self, rel)

    def exists(self, rel: str) -> bool:
        self._count("exists", rel)
        return super().exists(rel)

    def listdir(self, rel: str) -> list[str]:
        self._count("listdir", rel)
        return super().listdir(rel)

    def link_name(self, rel: str) -> str | None:
        self._count("readlink", rel)
        return super().link_name(rel)

    def realpath(self, rel: str) -> str:
        self._count("realpath", rel)
        return super().realpath(rel)

    def _raw_write(self, rel: str, value: str, timeout: float | None) -> None:
        self._count("write", rel)
        start = time.perf_counter()
        try:
            super()._raw_write(rel, value, timeout)
        finally:
            self.fake_write_seconds += time.perf_counter() - start

    def block_ops(self) -> dict[str, int]:
        return {op: n for (op, kind), n in self.counts.items() if kind == "block"}

    def total(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.counts.items() if kind is None or k == kind)


# -- processes -------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kib(value: str) -> int:
    """ "12345 kB" -> 12345."""
    return int(value.split(maxsplit=1)[0])


def context_switches(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread: (voluntary, involuntary) context switches so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            st = proc_status_task(pid, int(tid))
            out[int(tid)] = (
                int(st["voluntary_ctxt_switches"]),
                int(st["nonvoluntary_ctxt_switches"]),
            )
    return out


def proc_status_task(pid: int, tid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def stop_process(p: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode

"""find_device_users(): who has /dev/daxX.Y open or mapped, through a fake procfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daxd.kernel.users import DeviceUser, find_device_users
from tests.fakekernel import FakeKernel


def test_nobody(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.open_device(10, "other", "dax1.0", mapped=True)
    assert find_device_users(pmem_kernel.proc_root, "dax0.0") == []


def test_open_mapped_and_both(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.open_device(300, "both", "dax0.0", mapped=True)
    pmem_kernel.open_device(20, "reader", "dax0.0")
    pmem_kernel.open_device(100, "mapper", "dax0.0", mapped=True)
    pmem_kernel.close_device(100, "dax0.0")  # the mapping outlives the fd
    assert find_device_users(pmem_kernel.proc_root, "dax0.0") == [
        DeviceUser(20, "reader", "open"),
        DeviceUser(100, "mapper", "mapped"),
        DeviceUser(300, "both", "open, mapped"),
    ]


def test_similar_names_do_not_match(pmem_kernel: FakeKernel) -> None:
    pmem_kernel.open_device(7, "x", "dax0.1", mapped=True)
    pmem_kernel.open_device(8, "y", "dax10.0", mapped=True)
    assert find_device_users(pmem_kernel.proc_root, "dax0.0") == []
    assert [u.pid for u in find_device_users(pmem_kernel.proc_root, "dax0.1")] == [7]


def test_deleted_node_still_counts(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "42" / "fd").mkdir(parents=True)
    (proc / "42" / "comm").write_text("qemu\n")
    os.symlink("/dev/dax0.0 (deleted)", proc / "42" / "fd" / "9")
    (proc / "43" / "fd").mkdir(parents=True)
    (proc / "43" / "maps").write_text(
        "7f0000000000-7f0040000000 rw-s 00000000 00:06 1029   /dev/dax0.0 (deleted)\n"
    )
    assert find_device_users(proc, "dax0.0") == [
        DeviceUser(42, "qemu", "open"),
        DeviceUser(43, "?", "mapped"),
    ]


def test_vanishing_processes_are_skipped_forbidden_ones_are_suspects(
    pmem_kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    pmem_kernel.open_device(5, "gone", "dax0.0", mapped=True)
    pmem_kernel.open_device(6, "secret", "dax0.0", mapped=True)
    pmem_kernel.open_device(7, "visible", "dax0.0")
    real_listdir, real_open = os.listdir, open

    def listdir(path: object) -> list[str]:
        if str(path).endswith("/5/fd"):
            raise FileNotFoundError(2, "gone")
        if str(path).endswith("/6/fd"):
            raise PermissionError(13, "denied")
        return real_listdir(path)  # type: ignore[call-overload, no-any-return]

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("/5/maps"):
            raise FileNotFoundError(2, "gone")
        if str(path).endswith("/6/maps"):
            raise PermissionError(13, "denied")
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr("builtins.open", fake_open)
    assert find_device_users(pmem_kernel.proc_root, "dax0.0") == [
        DeviceUser(6, "secret", "cannot inspect"),
        DeviceUser(7, "visible", "open"),
    ]


def test_missing_proc(tmp_path: Path) -> None:
    assert find_device_users(tmp_path / "nope", "dax0.0") == []


def test_rejects_names_that_are_not_dax_devices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a dax device name"):
        find_device_users(tmp_path, "../sda")


def _process(proc: Path, pid: int, fds: dict[int, str], maps: bytes) -> None:
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "comm").write_text(f"p{pid}\n")
    for fd, target in fds.items():
        os.symlink(target, proc / str(pid) / "fd" / str(fd))
    (proc / str(pid) / "maps").write_bytes(maps)


def test_paths_that_merely_contain_the_node_do_not_match(tmp_path: Path) -> None:
    """The maps pre-check finds b"/dev/dax0.1" in these lines; the path comparison rejects them."""
    proc = tmp_path / "proc"
    line = b"7f0000000000-7f0040000000 rw-s 00000000 00:06 1029   %s\n"
    _process(proc, 1, {3: "/dev/dax0.10"}, line % b"/dev/dax0.10")
    _process(proc, 2, {3: "/dev/dax0.1.old"}, line % b"/dev/dax0.1 (deleted) again")
    _process(proc, 3, {3: "/srv/dev/dax0.1"}, line % b"/home/me/my /dev/dax0.1")
    _process(proc, 4, {}, b"/dev/dax0.1\n" + line % b"/dev/dax0.1x")  # too few fields, suffix
    assert find_device_users(proc, "dax0.1") == []
    assert [u.pid for u in find_device_users(proc, "dax0.10")] == [1]


def test_maps_with_padding_odd_bytes_and_spaces_in_paths(tmp_path: Path) -> None:
    """Real maps pad the path column; other paths may hold spaces and bytes that are not UTF-8."""
    proc = tmp_path / "proc"
    _process(
        proc,
        9,
        {},
        b"55d0c0a00000-55d0c0a21000 r-xp 00000000 08:01 1312                       /usr/bin/\xff\n"
        b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
        b"7f0000001000-7f0000002000 r--p 00000000 08:01 77   /opt/a b/dev/dax0.0 lib.so\n"
        b"7f0040000000-7f0080000000 rw-s 00000000 00:06 1029                       /dev/dax0.0\n",
    )
    _process(proc, 10, {}, b"7f0040000000-7f0080000000 rw-s 00000000 00:06 1029   /dev/dax0.0")
    assert find_device_users(proc, "dax0.0") == [
        DeviceUser(9, "p9", "mapped"),
        DeviceUser(10, "p10", "mapped"),  # the last line has no newline
    ]


def test_comm_is_read_only_for_listed_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = tmp_path / "proc"
    _process(proc, 1, {3: "/dev/null"}, b"")
    _process(proc, 2, {3: "/dev/dax0.0"}, b"")
    read: list[str] = []
    real_open = open

    def spy_open(path: object, *args: object, **kwargs: object) -> object:
        read.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", spy_open)
    monkeypatch.setattr("io.open", spy_open)  # what pathlib reads through
    assert find_device_users(proc, "dax0.0") == [DeviceUser(2, "p2", "open")]
    assert [p for p in read if p.endswith("/comm")] == [str(proc / "2" / "comm")]

"""Fast checks of the lab's host-side logic (no QEMU, not marked ``vm``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import image as image_mod
from tests.vm import lab as lab_mod
from tests.vm import qemu as qemu_mod
from tests.vm.image import Image
from tests.vm.lab import (
    BootResult,
    CxlHostBridge,
    CxlMemdev,
    CxlTopology,
    CxlWindow,
    HmemSpec,
    Lab,
    NvdimmSpec,
    Scenario,
    ScenarioResult,
)
from tests.vm.qemu import Qemu


def _lab(tmp_path: Path) -> Lab:
    return Lab(
        Image(tmp_path / "img"),
        base=tmp_path,
        repo=tmp_path,
        tcg_thread="multi",
        qemu=Qemu(argv=("qemu-system-x86_64",)),
    )


def test_recipe_hash_is_stable_and_covers_the_package_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = image_mod.recipe_hash()
    assert first == image_mod.recipe_hash()
    assert len(first) == 16
    monkeypatch.setattr(image_mod, "PACKAGES", (*image_mod.PACKAGES, "hello"))
    assert image_mod.recipe_hash() != first


def test_lab_dir_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DAXD_LAB_DIR", str(tmp_path))
    assert image_mod.lab_dir() == tmp_path.resolve()
    monkeypatch.delenv("DAXD_LAB_DIR")
    assert image_mod.lab_dir() == image_mod.repo_root() / ".lab"


def test_incomplete_image_is_not_used(tmp_path: Path) -> None:
    image = Image(tmp_path)
    (tmp_path / "rootfs.raw").write_bytes(b"")
    assert not image.is_complete()


def test_nvdimms_get_own_nodes_and_a_2mib_larger_backend(tmp_path: Path) -> None:
    scenario = Scenario(
        script="", nvdimms=[NvdimmSpec(1024), NvdimmSpec(512, own_node=False)], hmem=[HmemSpec(256)]
    )
    assert lab_mod.numa_layout(scenario) == [2, 0]
    cmd = " ".join(
        _lab(tmp_path).qemu_command(
            scenario,
            cmdline=["x"],
            overlay=tmp_path / "d.qcow2",
            nvdimm_files=[tmp_path / "n0", tmp_path / "n1"],
            serial="file:s",
            shares=[],
        )
    )
    assert "size=1026M,align=2M" in cmd
    assert "label-size=128K,node=2" in cmd
    assert "label-size=128K,node=0" in cmd
    assert "-numa node,nodeid=1,memdev=ram1" in cmd
    assert "-numa node,nodeid=2 " in cmd
    assert "max-ram-below-4g=2048M" in cmd
    assert "slots=2," in cmd


def test_no_nvdimm_means_no_memory_slots(tmp_path: Path) -> None:
    cmd = _lab(tmp_path).qemu_command(
        Scenario(script=""),
        cmdline=["x"],
        overlay=tmp_path / "d.qcow2",
        nvdimm_files=[],
        serial="file:s",
        shares=[("lab_in", tmp_path, True)],
    )
    assert cmd[cmd.index("-m") + 1] == "2048M"
    assert "-numa" not in cmd
    assert f"local,id=fs0,path={tmp_path},security_model=none,readonly=on" in cmd


def test_hmem_ranges_start_at_4gib_and_become_soft_reserved() -> None:
    scenario = Scenario(script="", hmem=[HmemSpec(512), HmemSpec(256)])
    assert lab_mod.hmem_layout(scenario) == [
        (1 << 32, 512 << 20),
        ((1 << 32) + (512 << 20), 256 << 20),
    ]
    assert lab_mod.hmem_kernel_args(scenario) == [
        "memmap=0x20000000%0x100000000-1+0xefffffff",
        "memmap=0x10000000%0x120000000-1+0xefffffff",
    ]


def test_kernel_cmdline_has_phase_and_scenario_args(tmp_path: Path) -> None:
    scenario = Scenario(
        script="", kernel_args=["memhp_default_state=offline"], setup_kernel_args=["quiet"]
    )
    lab = _lab(tmp_path)
    main = lab.kernel_cmdline(scenario, "main")
    assert "daxd_lab.phase=main" in main
    assert main[-1] == "memhp_default_state=offline"
    assert lab.kernel_cmdline(scenario, "setup")[-1] == "quiet"


@pytest.mark.parametrize(
    "line",
    [
        "[    0.912345] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
        "[    1.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    2.0] Kernel panic - not syncing: Attempted to kill init!",
    ],
)
def test_early_crashes_are_recognised(line: str) -> None:
    serial = b"Linux version 6.12\n" + line.encode() + b"\nmore\n"
    assert lab_mod.RETRYABLE_RE.search(serial.decode())
    assert lab_mod._crash_line(serial) == line


def test_report_points_to_the_serial_log(tmp_path: Path) -> None:
    boot = BootResult(
        phase="main",
        dir=tmp_path / "boot1-main",
        failure="timeout: gave up waiting to reach the scenario runner after 300 s",
    )
    boot.dir.mkdir()
    boot.serial_log.write_text("Welcome to Debian\n")
    result = ScenarioResult(Scenario(script="true", name="x"), tmp_path, [boot])
    assert not result.ok
    with pytest.raises(AssertionError) as err:
        result.check()
    text = str(err.value)
    assert str(boot.serial_log) in text
    assert "Welcome to Debian" in text
    assert "timeout" in text


def test_install_hash_follows_what_make_install_reads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for rel in ("Makefile", "daxd/__init__.py", "units/daxd.service.in", "tests/test_x.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x\n")
    image = Image(tmp_path / "images" / "abc")
    first = lab_mod.install_hash(repo, image)
    (repo / "tests/test_x.py").write_text("changed\n")  # not installed
    assert lab_mod.install_hash(repo, image) == first
    (repo / "daxd/__init__.py").write_text("changed\n")
    second = lab_mod.install_hash(repo, image)
    assert second != first
    assert lab_mod.install_hash(repo, Image(tmp_path / "images" / "other")) != second


def test_kept_disk_powers_off_cleanly(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    lab._prepare_share(tmp_path / "a", Scenario(script="true"))
    assert "LAB_POWEROFF=fast" in (tmp_path / "a" / "config-main.env").read_text()
    lab._prepare_share(tmp_path / "b", Scenario(script="true", keep_disk=True))
    assert "LAB_POWEROFF=clean" in (tmp_path / "b" / "config-main.env").read_text()


def test_cxl_topology_becomes_host_bridges_devices_and_windows(tmp_path: Path) -> None:
    topology = CxlTopology(
        host_bridges=(
            CxlHostBridge((CxlMemdev(256, serial=0x1000),)),
            CxlHostBridge((CxlMemdev(512),)),
        ),
        windows=(CxlWindow((0,)), CxlWindow((0, 1), size_mib=8192, granularity_kib=4)),
    )
    cmd = _lab(tmp_path).qemu_command(
        Scenario(script="", cxl=topology),
        cmdline=["x"],
        overlay=tmp_path / "d.qcow2",
        nvdimm_files=[],
        serial="file:s",
        shares=[],
    )
    text = " ".join(cmd)
    assert cmd[cmd.index("-machine") + 1].startswith("q35,cxl=on,")
    assert cmd[cmd.index("-cpu") + 1] == "max,hypervisor=off"
    assert "-numa node,nodeid=0,memdev=ram0,cpus=0-1" in text  # boot RAM in a node of its own
    assert text.count("-device pxb-cxl,") == 2
    assert "cxl-type3,bus=cxl-rp-0-0,volatile-memdev=cxl-vmem-0-0,id=cxl-mem-0-0,sn=4096" in text
    assert "id=cxl-vmem-1-0,share=on,size=512M" in text
    assert "id=cxl-mem-1-0 " in text  # no serial given, none passed
    windows = cmd[cmd.index("-M") + 1].split(",")
    assert windows == [
        "cxl-fmw.0.targets.0=cxl.0",
        "cxl-fmw.0.size=4096M",
        "cxl-fmw.1.targets.0=cxl.0",
        "cxl-fmw.1.targets.1=cxl.1",
        "cxl-fmw.1.size=8192M",
        "cxl-fmw.1.interleave-granularity=4k",
    ]
    assert "virtio-blk-pci,drive=disk0,bus=pcie.0" in text


def test_cxl_window_must_target_an_existing_host_bridge() -> None:
    with pytest.raises(ValueError, match="host bridge 1"):
        lab_mod.cxl_qemu_args(CxlTopology(windows=(CxlWindow((0, 1)),)))


def test_without_cxl_the_machine_keeps_the_hypervisor_bit(tmp_path: Path) -> None:
    cmd = _lab(tmp_path).qemu_command(
        Scenario(script=""),
        cmdline=["x"],
        overlay=tmp_path / "d.qcow2",
        nvdimm_files=[],
        serial="file:s",
        shares=[],
    )
    assert cmd[cmd.index("-cpu") + 1] == "max"
    assert "pxb-cxl" not in " ".join(cmd)


def test_trixie_qemu_runs_through_its_own_loader(tmp_path: Path) -> None:
    qemu = qemu_mod.from_root(tmp_path)
    cmd = qemu.command(["-version"])
    assert cmd[0] == f"{tmp_path}/lib64/ld-linux-x86-64.so.2"
    assert cmd[cmd.index("--library-path") + 1].split(":") == [
        f"{tmp_path}/usr/lib/x86_64-linux-gnu",
        f"{tmp_path}/lib/x86_64-linux-gnu",
    ]
    assert cmd[5] == f"{tmp_path}/usr/bin/qemu-system-x86_64"
    # its own firmware, not the host's
    assert cmd[6:10] == ["-L", f"{tmp_path}/usr/share/qemu", "-L", f"{tmp_path}/usr/share/seabios"]
    assert qemu.environ()["QEMU_MODULE_DIR"] == f"{tmp_path}/usr/lib/x86_64-linux-gnu/qemu"


def test_lab_qemu_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DAXD_LAB_QEMU", "/opt/qemu/bin/qemu-system-x86_64")
    qemu = qemu_mod.ensure_qemu(tmp_path)
    assert qemu.command(["-x"]) == ["/opt/qemu/bin/qemu-system-x86_64", "-x"]
    assert not (tmp_path / "qemu").exists()  # nothing unpacked

"""Fast checks of the lab's host-side logic (no QEMU, not marked ``vm``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import image as image_mod
from tests.vm import lab as lab_mod
from tests.vm.image import Image
from tests.vm.lab import BootResult, HmemSpec, Lab, NvdimmSpec, Scenario, ScenarioResult


def _lab(tmp_path: Path) -> Lab:
    return Lab(Image(tmp_path / "img"), base=tmp_path, repo=tmp_path, tcg_thread="multi")


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

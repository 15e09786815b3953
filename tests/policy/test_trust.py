"""Policy files others could have written are refused, as sshd's StrictModes does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daxd.policy.errors import PolicyError
from daxd.policy.load import load_policy

GOOD = "rules:\n  - mode: devdax\n"
NOBODY = 65534


def folder(tmp_path: Path) -> Path:
    d = tmp_path / "daxd"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


def refused(path: Path, *, dropins: Path | None = None) -> str:
    with pytest.raises(PolicyError) as err:
        load_policy(path, dropins)
    return str(err.value)


def test_world_writable_file_is_refused(tmp_path: Path) -> None:
    policy = folder(tmp_path) / "policy.yaml"
    policy.write_text(GOOD)
    policy.chmod(0o666)
    message = refused(policy)
    assert message.startswith(f"{policy}: refusing to trust it: the file is writable")
    assert "0666" in message
    assert len(load_policy(policy, strict=False).rules) == 1


def test_group_writable_folder_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path)
    policy = d / "policy.yaml"
    policy.write_text(GOOD)
    d.chmod(0o775)
    assert "its folder" in refused(policy)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    policy = folder(tmp_path) / "policy.yaml"
    policy.write_text(GOOD)
    os.chown(policy, NOBODY, NOBODY)
    assert f"owned by uid {NOBODY}, not root" in refused(policy)


def test_symlink_out_of_the_policy_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(GOOD)
    policy = folder(tmp_path) / "policy.yaml"
    policy.symlink_to(outside)
    assert "symlink that leads out of" in refused(policy)


def test_symlink_within_the_folder_is_fine(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "real.yaml").write_text(GOOD)
    (d / "policy.yaml").symlink_to("real.yaml")
    assert len(load_policy(d / "policy.yaml").rules) == 1


def test_untrusted_dropin_is_refused_and_named(tmp_path: Path) -> None:
    d = folder(tmp_path)
    (d / "policy.yaml").write_text(GOOD)
    dropins = d / "policy.d"
    dropins.mkdir(mode=0o755)
    bad = dropins / "10-extra.yaml"
    bad.write_text(GOOD.replace("devdax", "ignore"))
    bad.chmod(0o646)
    assert refused(d / "policy.yaml").startswith(f"{bad}: refusing to trust it")

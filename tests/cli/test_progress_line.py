"""The progress line of `daxd apply` on a terminal: shown while it works, gone before the end."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from daxd.cli import progress as progress_module
from daxd.cli.main import main
from daxd.cli.progress import ProgressLine
from tests.cli.helpers import kernel_root
from tests.fakekernel import FakeKernel


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_where_stderr_is_not_a_terminal() -> None:
    out = io.StringIO()
    line = ProgressLine(out, interval=0)
    line.device({"Name": "dax0.0", "State": "pending", "BlocksOnline": 3, "BlocksTotal": 8})
    line.clear()
    assert not line.active
    assert out.getvalue() == ""


def test_a_device_line_is_rewritten_in_place_and_cleared() -> None:
    out = Terminal()
    line = ProgressLine(out, interval=0)
    props = {"Name": "dax0.0", "State": "pending", "BlocksOnline": 3, "BlocksTotal": 8}
    line.device({**props, "BlocksMovable": 3, "BlocksNormal": 0})
    line.device({**props, "BlocksOnline": 5, "BlocksMovable": 5, "BlocksNormal": 0})
    line.clear()
    text = out.getvalue()
    assert text.count("\r\033[K") == 3
    assert "dax0.0: pending, 3/8 blocks online (3 movable, 0 normal)" in text
    assert "dax0.0: pending, 5/8 blocks online (5 movable, 0 normal)" in text
    assert text.endswith("\r\033[K")


def test_the_line_is_rate_limited() -> None:
    out = Terminal()
    line = ProgressLine(out, interval=3600)
    for n in range(50):
        line.device({"Name": "dax0.0", "State": "pending", "BlocksOnline": n, "BlocksTotal": 50})
    assert out.getvalue().count("blocks online") == 1


def test_local_apply_shows_its_writes_then_the_outcome(
    pmem_kernel: FakeKernel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n  - name: ram\n    mode: system-ram\n    zone: movable\n"
        "    allow_pmem_data_loss: true\n"
    )
    terminal = Terminal()
    monkeypatch.setattr(progress_module, "INTERVAL", 0.0)
    monkeypatch.setattr("sys.stderr", terminal)
    argv = ["--root-dir", str(kernel_root(pmem_kernel)), "--policy", str(policy), "apply"]
    assert main(argv, sysfs=pmem_kernel.sysfs) == 0
    out = capsys.readouterr().out
    assert out.startswith("dax0.0: applied (rule 'ram')")
    assert "\r" not in out  # the outcome itself is never mixed with the line
    shown = terminal.getvalue()
    assert "dax0.0: 1 writes; last: dax0.0 > bus/dax/drivers/device_dax/unbind ok" in shown
    assert "online_movable > memory" in shown
    assert shown.endswith("\r\033[K")

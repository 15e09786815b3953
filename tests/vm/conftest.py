"""pytest glue of the real-kernel lab (tests marked ``vm``).

- Without the host tools (qemu-img, mmdebstrap, mke2fs; QEMU itself comes from trixie, see
  tests/vm/qemu.py) ``vm`` tests are skipped with the reason, unless ``DAXD_REQUIRE_VM=1``
  (CI), which makes them fail instead.
- ``lab_image`` (session) builds the guest image once, or loads it from the cache.
- ``lab`` (session) is a :class:`tests.vm.lab.Lab` on that image; every scenario it runs is
  listed with its timings at the end of the pytest run.
- ``installed_disk`` (session) is a qcow2 disk on which one boot ran ``make install``, for
  scenarios that boot with daxd installed (``Scenario(base_disk=installed_disk)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm import image as image_mod
from tests.vm.image import Image
from tests.vm.lab import Lab, Scenario, ScenarioResult


def _require_vm() -> bool:
    return os.environ.get("DAXD_REQUIRE_VM") == "1"


def _missing_reason() -> str | None:
    missing = image_mod.missing_host_tools()
    if not missing:
        return None
    return (
        f"the QEMU lab needs {', '.join(missing)}: run tests/vm/install-deps.sh "
        "(DAXD_REQUIRE_VM=1 turns this skip into a failure)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_reason()
    if reason is None or _require_vm():
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("vm") is not None:
            item.add_marker(skip)


_RESULTS: list[ScenarioResult] = []


class RecordingLab(Lab):
    """A Lab that remembers its results for the end-of-run summary."""

    def run(self, scenario: Scenario) -> ScenarioResult:
        result = super().run(scenario)
        _RESULTS.append(result)
        return result


@pytest.fixture(scope="session")
def lab_image() -> Image:
    reason = _missing_reason()
    if reason is not None:
        if _require_vm():
            pytest.fail(reason)
        pytest.skip(reason)
    return image_mod.ensure_image()


@pytest.fixture(scope="session")
def lab(lab_image: Image) -> Lab:
    return RecordingLab(lab_image)


@pytest.fixture(scope="session")
def installed_disk(lab: Lab) -> Path:
    """A disk with daxd installed by ``make install`` (cached; see Lab.installed_disk)."""
    return lab.installed_disk()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("daxd lab (QEMU)")
    all_boots = [b for r in _RESULTS for b in r.boots]
    in_qemu = sum(b.timings.get("total_s", 0.0) for b in all_boots)
    terminalreporter.write_line(
        f"{len(_RESULTS)} scenario run(s), {len(all_boots)} boot(s), {in_qemu:.0f} s in QEMU"
    )
    for result in _RESULTS:
        t = result.timings
        boots = ", ".join(
            f"{b.phase}: runner after {b.timings.get('begin_s', float('nan')):.0f} s, "
            f"total {b.timings.get('total_s', float('nan')):.0f} s"
            + (f", retried ({'; '.join(b.retried_because)})" if b.retried_because else "")
            for b in result.boots
        )
        rss = t.get("qemu_max_rss_mib")
        terminalreporter.write_line(
            f"{result.scenario.name}: {'ok' if result.ok else 'FAILED'}; {boots}; "
            f"QEMU max RSS {rss:.0f} MiB; {result.run_dir}"
            if rss is not None
            else f"{result.scenario.name}: {'ok' if result.ok else 'FAILED'}; {boots}"
        )

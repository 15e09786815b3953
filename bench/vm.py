"""Benchmark 5: conversion time and start to READY on the real kernel of the QEMU lab.

One boot of the lab (tests/vm, Debian 13, Linux 6.12, TCG) from the disk with daxd installed,
with two NVDIMMs (1 GiB and the large size), each made a devdax namespace. Inside, bench/vm_guest.py
converts each device devdax -> system-ram (Movable) and back with every method, for each
kernel setting, interleaved, ``runs`` times; this side prints medians and ratios.

Settings:
- ``offline``: ``auto_online_blocks=offline``, what ``daxctl reconfigure-device`` needs to
  online into Movable; every method runs here, so this is the comparison.
- ``online``: Debian's default; kmem's blocks come online in Normal and have to be offlined
  and onlined again into Movable (daxctl refuses to run).
- ``online_movable``: the kernel onlines every block into Movable inside the bind itself.
- ``offline+memmap``: as ``offline`` with the device's ``memmap_on_memory`` set (the memmap is
  carved out of the device instead of allocated from boot memory).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import common

if TYPE_CHECKING:
    from tests.vm.lab import ScenarioResult

GiB_MiB = 1024
SETTINGS_FULL: list[dict[str, Any]] = [
    {
        "label": "offline",
        "auto_online_blocks": "offline",
        "methods": ["bare", "bare-ascending", "daxctl", "daxd-apply", "daxd-inproc", "daemon"],
    },
    {
        "label": "online",
        "auto_online_blocks": "online",
        "methods": ["bare", "bare-ascending", "daxd-apply", "daxd-inproc", "daemon"],
    },
    {"label": "online_movable", "auto_online_blocks": "online_movable", "methods": ["bare"]},
    {
        "label": "offline+memmap",
        "auto_online_blocks": "offline",
        "memmap_on_memory": True,
        "methods": ["bare", "daxd-inproc"],
    },
]

# `python -m bench.vm --cxl`: CXL regions made in the guest (issue 12); the ``daemon`` method
# re-creates pmem namespaces and does not apply.
SETTINGS_CXL: list[dict[str, Any]] = [
    {
        "label": "offline",
        "auto_online_blocks": "offline",
        "methods": ["bare", "daxctl", "daxd-apply", "daxd-client"],
    },
]

CXL_SCRIPT = r"""
set -euo pipefail
lab_wait_booted
systemctl stop daxd.service 2>/dev/null || true
cat > /etc/daxd/policy.yaml <<'EOF'
version: 1
rules: []
EOF
lab_cxl_wait 2
echo offline > /sys/devices/system/memory/auto_online_blocks
devices=()
for w in 0 1; do
    region=$(lab_cxl_create_region "$w" "$((0x1000 + w))")
    dev=$(lab_cxl_region_dax "$region")
    udevadm settle
    # the kernel bound kmem (blocks offline): to devdax, where every round starts
    echo "$dev" > /sys/bus/dax/drivers/kmem/unbind
    echo "$dev" > /sys/bus/dax/drivers/device_dax/new_id
    echo "$dev" > /sys/bus/dax/drivers/device_dax/remove_id
    devices+=(--device "$dev=$region")
done
echo online > /sys/devices/system/memory/auto_online_blocks
# udev started daxd for the new devices; the methods that act alone need it stopped
systemctl stop daxd.service
lab_fact daxctl_version "$(daxctl --version)"
lab_fact kernel "$(uname -r)"
lab_fact cmdline "$(cat /proc/cmdline)"
lab_fact cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
lab_fact clocksource "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
python3 "$LAB_IN/files/vm_guest.py" --cxl --runs "$BENCH_RUNS" --settings "$BENCH_SETTINGS" \
    "${devices[@]}" > "$LAB_OUT/bench.json"
"""

# `python -m bench.vm --client`: the command as a client of the daemon against daxctl (issue 10).
SETTINGS_CLIENT: list[dict[str, Any]] = [
    {
        "label": "offline",
        "auto_online_blocks": "offline",
        "methods": ["bare", "daxctl", "daxd-apply", "daxd-client"],
    },
]

STARTUP = r"""
# start to READY: ExecMainStartTimestamp (exec) -> ActiveEnterTimestamp (READY=1), from systemd
startup() {
    local label=$1 i
    for i in $(seq "$BENCH_STARTUP_RUNS"); do
        systemctl stop daxd.service
        systemctl start daxd.service
        s=$(systemctl show -p ExecMainStartTimestampMonotonic --value daxd.service)
        a=$(systemctl show -p ActiveEnterTimestampMonotonic --value daxd.service)
        echo "$label $((a - s))" >> "$LAB_OUT/startup.txt"
    done
    systemctl stop daxd.service
}
"""

SCRIPT = (
    r"""
set -euo pipefail
lab_wait_booted
systemctl stop daxd.service 2>/dev/null || true
cat > /etc/daxd/policy.yaml <<'EOF'
version: 1
rules: []
EOF
"""
    + STARTUP
    + r"""
startup no-device
python3 -X importtime -c 'import daxd.cli.main, daxd.service.run' 2> "$LAB_OUT/importtime.txt"
for ns in namespace0.0 namespace1.0; do lab_devdax "$ns" > /dev/null; done
udevadm settle
startup two-devices-unmanaged
lab_fact daxctl_version "$(daxctl --version)"
lab_fact kernel "$(uname -r)"
lab_fact cmdline "$(cat /proc/cmdline)"
lab_fact cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
lab_fact clocksource "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
python3 "$LAB_IN/files/vm_guest.py" --runs "$BENCH_RUNS" --settings "$BENCH_SETTINGS" \
    --device dax0.0=namespace0.0 --device dax1.0=namespace1.0 > "$LAB_OUT/bench.json"
"""
)


def run(quick: bool, large_mib: int | None = None, client: bool = False) -> dict[str, Any]:
    from tests.vm.lab import Lab, NvdimmSpec, Scenario

    large = large_mib or (4 * GiB_MiB if quick else 32 * GiB_MiB)
    runs = 1 if quick else 5
    settings = SETTINGS_CLIENT if client else SETTINGS_FULL
    lab = Lab.default()
    disk = lab.installed_disk()
    env = (
        f"BENCH_RUNS={runs}\nBENCH_STARTUP_RUNS={3 if quick else 7}\n"
        f"BENCH_SETTINGS='{json.dumps(settings)}'\n"
    )
    result = lab.run(
        Scenario(
            name="bench-conversion",
            script=env + SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=GiB_MiB), NvdimmSpec(size_mib=large)],
            kernel_args=["memory_hotplug.memmap_on_memory=1"],
            memory_mib=4096,  # room for the memmap of the large device (64 B per 4 KiB)
            base_disk=disk,
            timeout=5400.0,
            files={"vm_guest.py": (Path(__file__).parent / "vm_guest.py").read_text()},
        )
    ).check()
    data = _collect(result)
    data["startup"] = _startup(result.file("startup.txt"))
    data["importtime"] = _importtime(result.file("importtime.txt"))
    report(data)
    return data


def run_cxl(quick: bool, large_mib: int | None = None) -> dict[str, Any]:
    """Two CXL type-3 devices (512 MiB and the large size, 2 GiB by default) on two host
    bridges, a region each; every method converts each, interleaved, in one boot."""
    from tests.vm.lab import CxlTopology, Lab, Scenario

    large = large_mib or 2 * GiB_MiB
    runs = 1 if quick else 5
    lab = Lab.default()
    disk = lab.installed_disk()
    env = f"BENCH_RUNS={runs}\nBENCH_SETTINGS='{json.dumps(SETTINGS_CXL)}'\n"
    result = lab.run(
        Scenario(
            name="bench-cxl",
            script=env + CXL_SCRIPT,
            cxl=CxlTopology.simple(512, large),
            base_disk=disk,
            timeout=5400.0,
            files={"vm_guest.py": (Path(__file__).parent / "vm_guest.py").read_text()},
        )
    ).check()
    data = _collect(result)
    report(data, title="5b. CXL conversion on a real kernel (QEMU lab, TCG)")
    return data


def _collect(result: ScenarioResult) -> dict[str, Any]:
    """What every lab benchmark run returns: facts, the guest's bench.json, timings."""
    return {
        "facts": dict(
            line.split("=", 1) for line in result.file("facts.txt").splitlines() if "=" in line
        ),
        "conversion": result.json("bench.json"),
        "startup": {},
        "importtime": {"total_ms": 0.0, "top_groups_ms": {}},
        "lab": result.timings,
        "run_dir": str(result.run_dir),
    }


def _startup(text: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        label, usec = line.split()
        out.setdefault(label, []).append(int(usec) / 1e6)
    return out


def _importtime(text: str) -> dict[str, Any]:
    groups: dict[str, float] = {}
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        self_us, name = int(m.group(1)), m.group(4)
        total += self_us
        top = name.split(".")[0]
        key = ".".join(name.split(".")[:2]) if top == "daxd" else top
        groups[key] = groups.get(key, 0.0) + self_us / 1000
    heavy = dict(sorted(groups.items(), key=lambda kv: -kv[1])[:12])
    return {"total_ms": total / 1000, "top_groups_ms": heavy}


Samples = list[dict[str, dict[str, float]]]


def _median(samples: Samples, direction: str, key: str = "total") -> float:
    return statistics.median(s[direction][key] for s in samples)


def report(
    data: dict[str, Any], title: str = "5. Conversion on a real kernel (QEMU lab, TCG)"
) -> None:
    conv = data["conversion"]
    facts = data["facts"]
    common.heading(title)
    print(
        f"guest kernel {facts.get('kernel')}, {facts.get('daxctl_version')}, memory block "
        f"{conv['block_size'] // (1 << 20)} MiB, auto_online_blocks at boot "
        f"{conv['auto_online_blocks_at_boot']}, clocksource {facts.get('clocksource')}"
    )
    for name, dev in conv["devices"].items():
        size_gib = dev["size"] / (1 << 30)
        for label in [k for k in dev if isinstance(dev[k], dict)]:
            per = dev[label]
            rows = []
            bare = per.get("bare")
            ref_ctl = per.get("daxctl")
            for method, samples in per.items():
                row: list[object] = [method]
                for direction in ("to_ram", "to_devdax"):
                    med = _median(samples, direction)
                    runs = [s[direction]["total"] for s in samples]
                    row += [f"{med:.3f}", f"{min(runs):.3f}-{max(runs):.3f}"]
                    row.append(f"{med / _median(bare, direction):.2f}" if bare else "-")
                    row.append(f"{med / _median(ref_ctl, direction):.2f}" if ref_ctl else "-")
                rows.append(row)
            print(f"\n{name}, {size_gib:.2f} GiB ({dev['blocks']} blocks), setting {label}:")
            print(
                common.table(
                    [
                        "method",
                        "to RAM s (median)",
                        "range",
                        "x bare",
                        "x daxctl",
                        "to devdax s",
                        "range",
                        "x bare",
                        "x daxctl",
                    ],
                    rows,
                )
            )
            client = per.get("daxd-client")
            if client:
                idle = statistics.median(s["to_devdax"]["in_sync"] for s in client)
                print(f"daxd-client, `daxd apply` of a device in sync (median): {idle:.3f} s")
            if bare:
                parts = {
                    d: {k: round(_median(bare, d, k), 4) for k in bare[0][d] if k != "total"}
                    for d in ("to_ram", "to_devdax")
                }
                print(f"bare, where the time goes (median s): {json.dumps(parts)}")
    if not data["startup"]:
        return
    common.heading("Start to READY in the VM (systemd: exec -> READY=1)")
    for label, values in data["startup"].items():
        print(
            f"{label}: median {statistics.median(values) * 1000:.0f} ms "
            f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})"
        )
    imp = data["importtime"]
    print(f"python -X importtime (guest): {imp['total_ms']:.0f} ms self time in all; top groups:")
    for group, value in imp["top_groups_ms"].items():
        print(f"  {group}: {value:.1f} ms")


def _main() -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.vm")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--large-mib", type=int)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--client", action="store_true", help="only `daxd apply` via the daemon against daxctl"
    )
    p.add_argument("--cxl", action="store_true", help="CXL regions instead of NVDIMMs")
    args = p.parse_args()
    data = (
        run_cxl(args.quick, args.large_mib)
        if args.cxl
        else run(args.quick, args.large_mib, args.client)
    )
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

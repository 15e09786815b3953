"""Scenarios 2 and 8: a namespace created at runtime, and daxd's D-Bus API for users and root.

One boot from the disk with daxd installed, no dax device at boot (so daxd does not run):

- scenario 2: creating namespace0.0 makes udev start daxd (90-daxd.rules at runtime); with
  daxd running, namespace1.0 is created (``ndctl create-namespace -m devdax``): the udev ``add``
  event reaches the running daxd, which applies the matching rule (blocks online movable, a
  journal line naming the device and the rule) without a restart;
- scenario 8: as user nobody, busctl and gdbus read (dbus-send and a GLib Gio.DBusProxy too,
  as root and nobody, with the documented types) (GetManagedObjects, Get, GetAll,
  Introspect, Plan) but Reload, Reconcile (of the manager and of a device) and Properties.Set
  are denied, also with the interface left out of the call; as root they work (Set on a
  read-only property fails, but not for lack of permission). GetManagedObjects lists every
  device with properties matching sysfs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.bus_daemon import DEVICE_TYPES
from tests.vm import facts as f
from tests.vm.lab import Lab, NvdimmSpec, Scenario, ScenarioResult

pytestmark = pytest.mark.vm

GLIB_CLIENT = Path(__file__).resolve().parents[1] / "service" / "glib_client.py"

SCRIPT = r"""
set -euo pipefail
lab_wait_booted
lab_fact daxd_at_boot "$(systemctl is-active daxd.service || true)"
lab_policy <<'EOF'
version: 1
rules:
  - name: keep-first-as-devdax
    match: {device: dax0.0}
    mode: devdax
  - name: hotplugged-pmem-as-ram
    match: {provider: pmem}
    mode: system-ram
    zone: movable
    allow_pmem_data_loss: true
EOF

# --- scenario 2 ---------------------------------------------------------------------------
lab_devdax namespace0.0 > /dev/null
lab_wait_until 120 lab_state_is dax0.0 applied
lab_fact daxd_after_first "$(systemctl is-active daxd.service)"
lab_fact pid_before "$(systemctl show -p MainPID --value daxd.service)"
lab_journal_mark hotplug
lab_devdax namespace1.0 > /dev/null
start=$SECONDS
lab_wait_until 60 lab_all_movable dax1.0
lab_fact hotplug_movable_after_s "$((SECONDS - start))"
lab_wait_until 30 lab_state_is dax1.0 applied
lab_fact pid_after "$(systemctl show -p MainPID --value daxd.service)"
lab_fact restarts "$(systemctl show -p NRestarts --value daxd.service)"
lab_blocks dax1.0 | tee "$LAB_OUT/dax1.0-blocks.txt"
lab_fact auto_online_after "$(cat /sys/devices/system/memory/auto_online_blocks)"
lab_journal_since hotplug > "$LAB_OUT/hotplug-journal.txt"

# --- scenario 8 ---------------------------------------------------------------------------
M=/org/daxd/Daxd1
D=$M/devices/dax0_0
lab_as_nobody busctl --json=short call org.daxd.Daxd1 $M \
    org.freedesktop.DBus.ObjectManager GetManagedObjects > "$LAB_OUT/objects-nobody.json"
busctl --json=short call org.daxd.Daxd1 $M \
    org.freedesktop.DBus.ObjectManager GetManagedObjects > "$LAB_OUT/objects-root.json"
lab_snapshot sysfs dax0.0 dax1.0
lab_call nobody-get lab_as_nobody busctl get-property org.daxd.Daxd1 $D org.daxd.Daxd1.Device State
for who in root nobody; do
    as=(); [ "$who" = root ] || as=(lab_as_nobody)
    lab_call "$who-dbus-send-memmap" "${as[@]}" dbus-send --system --print-reply=literal \
        --dest=org.daxd.Daxd1 $D org.freedesktop.DBus.Properties.Get \
        string:org.daxd.Daxd1.Device string:MemmapOnMemory
    lab_call "$who-dbus-send-size" "${as[@]}" dbus-send --system --print-reply=literal \
        --dest=org.daxd.Daxd1 $D org.freedesktop.DBus.Properties.Get \
        string:org.daxd.Daxd1.Device string:Size
    "${as[@]}" python3 "$LAB_IN/files/glib_client.py" properties $D org.daxd.Daxd1.Device \
        > "$LAB_OUT/glib-$who.json"
done
lab_call nobody-getall lab_as_nobody busctl call org.daxd.Daxd1 $D \
    org.freedesktop.DBus.Properties GetAll s org.daxd.Daxd1.Device
lab_call nobody-introspect lab_as_nobody busctl introspect org.daxd.Daxd1 $M
lab_call nobody-plan lab_as_nobody busctl call org.daxd.Daxd1 $M org.daxd.Daxd1.Manager Plan \
    'a{sv}' 0
lab_call nobody-gdbus-get lab_as_nobody gdbus call --system --dest org.daxd.Daxd1 \
    --object-path $D --method org.freedesktop.DBus.Properties.Get org.daxd.Daxd1.Device Rule
lab_call nobody-reload lab_as_nobody busctl call org.daxd.Daxd1 $M org.daxd.Daxd1.Manager Reload \
    'a{sv}' 0
lab_call nobody-reconcile lab_as_nobody busctl call org.daxd.Daxd1 $M \
    org.daxd.Daxd1.Manager Reconcile 'a{sv}' 0
lab_call nobody-device-reconcile lab_as_nobody busctl call org.daxd.Daxd1 $D \
    org.daxd.Daxd1.Device Reconcile 'a{sv}' 0
lab_call nobody-set lab_as_nobody busctl set-property org.daxd.Daxd1 $D \
    org.daxd.Daxd1.Device State s applied
lab_call nobody-gdbus-reload lab_as_nobody gdbus call --system --dest org.daxd.Daxd1 \
    --object-path $M --method org.daxd.Daxd1.Manager.Reload '{}'
# A method call without an interface field: no allow rule of the bus policy matches it.
lab_call nobody-reload-no-interface lab_as_nobody python3 -c '
import asyncio, sys
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(Message(destination="org.daxd.Daxd1", path="/org/daxd/Daxd1",
                                   member="Reload"))
    print(reply.message_type.name, reply.error_name, reply.body)
    sys.exit(0 if reply.message_type == MessageType.METHOD_RETURN else 1)
asyncio.run(main())'
lab_call root-reload busctl call org.daxd.Daxd1 $M org.daxd.Daxd1.Manager Reload 'a{sv}' 0
lab_call root-reconcile busctl call org.daxd.Daxd1 $M org.daxd.Daxd1.Manager Reconcile 'a{sv}' 0
lab_call root-gdbus-reconcile gdbus call --system --dest org.daxd.Daxd1 --object-path $M \
    --method org.daxd.Daxd1.Manager.Reconcile '{}'
lab_call root-device-reconcile busctl call org.daxd.Daxd1 $D org.daxd.Daxd1.Device Reconcile \
    'a{sv}' 0
lab_call root-set busctl set-property org.daxd.Daxd1 $D org.daxd.Daxd1.Device State s applied
lab_fact restarts_end "$(systemctl show -p NRestarts --value daxd.service)"
journalctl -b -u daxd.service --no-pager -o short-monotonic > "$LAB_OUT/daxd-journal.txt"
journalctl -b -u dbus.service --no-pager -o short-monotonic > "$LAB_OUT/dbus-journal.txt"
"""

DEVICE_PROPS = {
    "Name",
    "Provider",
    "Size",
    "NumaNode",
    "TargetNode",
    "Driver",
    "Mode",
    "Zone",
    "MemmapOnMemory",
    "BlocksOnline",
    "BlocksTotal",
    "BlocksMovable",
    "BlocksNormal",
    "Rule",
    "DesiredMode",
    "State",
    "LastError",
    "LastChange",
    "Cxl",
}


@pytest.fixture(scope="module")
def run(lab: Lab, installed_disk: object) -> ScenarioResult:
    return lab.run(
        Scenario(
            name="s2-s8-hotplug-dbus",
            script=SCRIPT,
            nvdimms=[NvdimmSpec(size_mib=512), NvdimmSpec(size_mib=512)],
            base_disk=installed_disk,  # type: ignore[arg-type]
            files={"glib_client.py": GLIB_CLIENT.read_text()},
        )
    ).check()


def test_hotplugged_namespace_gets_its_rule(run: ScenarioResult) -> None:
    facts = f.facts(run)
    assert facts["daxd_at_boot"] == "inactive"  # no dax device: daxd not started
    assert facts["daxd_after_first"] == "active"  # the first namespace started it (udev)
    # The second namespace was handled by the running daxd, from its udev event.
    assert facts["pid_before"] == facts["pid_after"] != "0"
    assert facts["restarts"] == "0"
    blocks = run.file("dax1.0-blocks.txt").split()
    assert blocks[1::3] == ["online"] * 3, blocks
    assert blocks[2::3] == ["Movable"] * 3, blocks
    journal = run.file("hotplug-journal.txt")
    lines = f.journal_lines(journal, "dax1.0: ", "kmem/new_id: ok", "rule='hotplugged-pmem-as-ram'")
    assert lines, journal
    assert not f.journal_lines(journal, "dax0.0: ", ": ok")  # dax0.0 left as it was
    # Debian's auto_online_blocks=online would online the blocks in Normal: daxd switched it off
    # for the bind only and onlined each block once, straight into Movable (no offline).
    assert f.journal_lines(journal, "dax1.0: ", "set-auto-online 'offline'", ": ok")
    assert f.journal_lines(journal, "dax1.0: ", "restore-auto-online 'online'", ": ok")
    assert len(f.journal_lines(journal, "dax1.0: ", "online-block 'online_movable'", ": ok")) == 3
    assert not f.journal_lines(journal, "dax1.0: ", "offline-block ")
    assert facts["auto_online_after"] == "online"
    print(f"hotplug: movable after {facts['hotplug_movable_after_s']} s")


def test_dbus_reads_for_everyone_changes_for_root_only(run: ScenarioResult) -> None:
    calls = f.calls(run)
    for name in ("nobody-get", "nobody-getall", "nobody-introspect", "nobody-plan"):
        assert calls[name][0] == 0, (name, calls[name])
    assert calls["nobody-plan"][1].startswith("aa{sv} "), calls["nobody-plan"]
    assert calls["nobody-gdbus-get"] == (0, "(<'keep-first-as-devdax'>,)")
    for name in (
        "nobody-reload",
        "nobody-reconcile",
        "nobody-device-reconcile",
        "nobody-set",
        "nobody-gdbus-reload",
        "nobody-reload-no-interface",
    ):
        rc, text = calls[name]
        assert rc != 0, (name, text)
        assert "AccessDenied" in text or "Access denied" in text, (name, text)
    for name in ("root-reload", "root-reconcile", "root-gdbus-reconcile", "root-device-reconcile"):
        assert calls[name][0] == 0, (name, calls[name])
    rc, text = calls["root-set"]
    assert rc != 0  # every property is read-only ...
    assert "Access denied" not in text, text  # ... but not forbidden
    assert "AccessDenied" not in text, text
    assert f.facts(run)["restarts_end"] == "0"


def test_managed_objects_match_sysfs(run: ScenarioResult) -> None:
    objects = f.dbus_objects(run, "objects-nobody.json")
    assert objects == f.dbus_objects(run, "objects-root.json")
    sysfs = f.snapshot(run, "sysfs")
    by_name = {props["Name"]: props for props in objects.values()}
    assert sorted(by_name) == sorted(sysfs["dax_bus_devices"]) == ["dax0.0", "dax1.0"]
    for path, props in objects.items():
        name = props["Name"]
        assert path == f"/org/daxd/Daxd1/devices/{name.replace('.', '_')}"
        assert set(props) == DEVICE_PROPS
        dev = f.device(sysfs, name)
        blocks = f.blocks(sysfs, name)
        assert props["Provider"] == "pmem"
        assert props["Size"] == int(f.attr(sysfs, name, "size") or -1)
        assert props["TargetNode"] == int(f.attr(sysfs, name, "target_node") or -2)
        assert props["NumaNode"] == int(f.attr(sysfs, name, "numa_node") or -2)
        assert props["Driver"] == dev["driver"]
        # In effect: the attribute reads 1 and the global parameter is on (this boot: off).
        in_effect = f.attr(sysfs, name, "memmap_on_memory") == "1" and sysfs[
            "memory_hotplug_params"
        ].get("memmap_on_memory") in ("Y", "force")
        assert props["MemmapOnMemory"] is in_effect
        assert props["BlocksTotal"] == len(blocks)
        assert props["BlocksOnline"] == sum(state == "online" for state, _ in blocks.values())
        assert props["BlocksMovable"] == sum(
            (state, zones) == ("online", "Movable") for state, zones in blocks.values()
        )
        assert props["BlocksNormal"] == sum(
            (state, zones) == ("online", "Normal") for state, zones in blocks.values()
        )
        assert props["State"] == "applied"
        assert props["LastError"] == ""
        assert props["LastChange"] > 0
        assert props["Cxl"] == {}  # pmem: no CXL identity
    first, second = by_name["dax0.0"], by_name["dax1.0"]
    assert (first["Mode"], first["Zone"], first["Rule"], first["DesiredMode"]) == (
        "devdax",
        "none",
        "keep-first-as-devdax",
        "devdax",
    )
    assert (second["Mode"], second["Zone"], second["Rule"], second["DesiredMode"]) == (
        "system-ram",
        "movable",
        "hotplugged-pmem-as-ram",
        "system-ram",
    )


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_dbus_send_and_glib_read_the_typed_properties(run: ScenarioResult, who: str) -> None:
    calls = f.calls(run)
    rc, memmap = calls[f"{who}-dbus-send-memmap"]
    assert rc == 0, memmap
    assert memmap.split() == ["variant", "boolean", "false"], memmap
    rc, size = calls[f"{who}-dbus-send-size"]
    assert rc == 0, size
    assert size.split()[:2] == ["variant", "uint64"], size
    glib = run.json(f"glib-{who}.json")
    assert isinstance(glib, dict), glib
    assert set(glib["cached"]) == set(DEVICE_TYPES), glib["cached"]
    for name, (kind, _value) in glib["cached"].items():
        assert kind == DEVICE_TYPES[name], (name, kind)
    assert glib["get"] == glib["cached"]

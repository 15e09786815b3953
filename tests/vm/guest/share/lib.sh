# Helpers for lab scenario scripts; sourced at the top of every script (bash).
# LAB_OUT: folder whose files the host returns (ScenarioResult.files); LAB_IN: the read-only share.

# lab_save PATH [NAME]: copy a file (e.g. from sysfs) into the results.
lab_save() { cat "$1" > "$LAB_OUT/${2:-$(basename "$1")}"; }

# lab_snapshot NAME DAXDEV...: JSON snapshot of device DAX state into $LAB_OUT/NAME.json.
lab_snapshot() { local name=$1; shift; python3 "$LAB_IN/snapshot.py" dax "$@" > "$LAB_OUT/$name.json"; }

# lab_try_write PATH VALUE: write like `echo VALUE > PATH` and log the answer (OK or the error
# text, e.g. "Invalid argument") to $LAB_OUT/writes.tsv as STAGE PATH VALUE ANSWER, where STAGE is
# $LAB_STAGE; never fails.
lab_try_write() {
    local answer
    if answer=$( { echo "$2" > "$1"; } 2>&1 ); then answer=OK; else answer=${answer##*: }; fi
    printf '%s\t%s\t%s\t%s\n' "${LAB_STAGE:-}" "$1" "$2" "$answer" >> "$LAB_OUT/writes.tsv"
    echo "write $2 > $1: $answer"
}

# lab_devdax NAMESPACE [ndctl args...]: turn a namespace into devdax (prints ndctl's JSON).
lab_devdax() { local ns=$1; shift; ndctl create-namespace -f -e "$ns" -m devdax "$@"; }

# lab_wait_active UNIT [SECONDS]: wait until a unit is active (fails on failed or timeout).
lab_wait_active() {
    local unit=$1 left=${2:-60} state
    while [ "$left" -gt 0 ]; do
        state=$(systemctl is-active "$unit")
        [ "$state" = active ] && return 0
        [ "$state" = failed ] && { echo "$unit failed" >&2; return 1; }
        sleep 1; left=$((left - 1))
    done
    echo "$unit not active: $state" >&2
    return 1
}

# lab_wait_booted: wait for the boot to finish (state running or degraded).
lab_wait_booted() { systemctl is-system-running --wait >/dev/null 2>&1 || true; }

# lab_blocks DAXDEV: the memory blocks inside the device's ranges, "memoryN STATE ZONES" a line
# (none while the device is not bound to kmem).
lab_blocks() {
    local dev=/sys/bus/dax/devices/$1 size m s e i b
    size=$((0x$(cat /sys/devices/system/memory/block_size_bytes)))
    for m in "$dev"/mapping*; do
        [ -d "$m" ] || continue
        s=$(($(cat "$m/start"))); e=$(($(cat "$m/end")))
        for ((i = (s + size - 1) / size; i <= (e + 1) / size - 1; i++)); do
            b=/sys/devices/system/memory/memory$i
            [ -d "$b" ] && echo "memory$i $(cat "$b/state") $(cat "$b/valid_zones")"
        done
    done
}

# lab_all_movable DAXDEV: true when the device has memory blocks and all are online in Movable.
lab_all_movable() {
    local out; out=$(lab_blocks "$1")
    [ -n "$out" ] && ! grep -qv ' online Movable$' <<< "$out"
}

# lab_driver DAXDEV: the driver bound to the device, or "none".
lab_driver() {
    local d=/sys/bus/dax/devices/$1/driver
    if [ -e "$d" ]; then basename "$(readlink -f "$d")"; else echo none; fi
}

# lab_wait_until SECONDS COMMAND...: run COMMAND every half second until it succeeds; fail (and
# say what was waited for) after SECONDS.
lab_wait_until() {
    local left=$(($1 * 2)); shift
    until "$@" > /dev/null 2>&1; do
        left=$((left - 1))
        if [ "$left" -le 0 ]; then echo "timed out waiting for: $*" >&2; return 1; fi
        sleep 0.5
    done
}

# lab_prop DAXDEV PROPERTY: a property of the device's object on daxd's D-Bus API (plain value).
lab_prop() {
    busctl --json=short get-property org.daxd.Daxd1 "/org/daxd/Daxd1/devices/${1//./_}" \
        org.daxd.Daxd1.Device "$2" | jq -r .data
}

# lab_manager_prop PROPERTY: a property of daxd's manager object (plain value).
lab_manager_prop() {
    busctl --json=short get-property org.daxd.Daxd1 /org/daxd/Daxd1 org.daxd.Daxd1.Manager "$1" \
        | jq -r '.data | if type == "array" then join("\n") else . end'
}

# lab_state_is DAXDEV STATE: true when daxd publishes that State for the device.
lab_state_is() { [ "$(lab_prop "$1" State 2>/dev/null)" = "$2" ]; }

# lab_policy: write standard input to /etc/daxd/policy.yaml (and check it with daxd).
lab_policy() { cat > /etc/daxd/policy.yaml && daxd check /etc/daxd/policy.yaml; }

# lab_journal_mark NAME: remember the journal cursor; lab_journal_since NAME: daxd's journal
# lines since then.
lab_journal_mark() {
    journalctl -q -n1 -o export | sed -n 's/^__CURSOR=//p' > "/run/daxd-lab/$1.cursor"
}
lab_journal_since() {
    journalctl -q --no-pager -o short-monotonic --after-cursor="$(cat "/run/daxd-lab/$1.cursor")" \
        -u daxd.service
}

# lab_fact KEY VALUE...: record "KEY=VALUE" in $LAB_OUT/facts.txt (tests.vm.facts.facts) and
# echo it.
lab_fact() { local k=$1; shift; echo "$k=$*" | tee -a "$LAB_OUT/facts.txt"; }

# lab_call NAME COMMAND...: run COMMAND, record NAME, its exit code and its output (one line) in
# $LAB_OUT/calls.tsv (tests.vm.facts.calls); never fails.
lab_call() {
    local name=$1 out rc; shift
    out=$("$@" 2>&1) && rc=0 || rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(tr '\n\t' '  ' <<< "$out" | cut -c1-2000)" \
        >> "$LAB_OUT/calls.tsv"
    echo "$name: rc=$rc: $(head -c 300 <<< "$out")"
}

# lab_as_nobody COMMAND...: run COMMAND as user nobody (uid/gid 65534, no groups).
lab_as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }

# -- CXL (Scenario(cxl=CxlTopology(...))) ---------------------------------------------------------
# memN names are handed out in probe order and change between boots: scripts name devices by
# serial number (CxlMemdev.serial) and windows by index (root decoder decoder0.INDEX).

# lab_cxl_wait COUNT [SECONDS]: wait until COUNT CXL memdevs are bound to cxl_mem and every
# endpoint port is enumerated (the cxl modules load from udev after the boot has "finished").
lab_cxl_wait() {
    local want=$1 left=$((${2:-120} * 2)) have
    udevadm settle --timeout=60 || true
    while :; do
        have=$(find /sys/bus/cxl/drivers/cxl_mem -maxdepth 1 -name 'mem*' 2>/dev/null | wc -l)
        if [ "$have" -ge "$want" ] && \
            [ "$(find /sys/bus/cxl/devices -maxdepth 1 -name 'endpoint*' | wc -l)" -ge "$want" ]; then
            return 0
        fi
        left=$((left - 1))
        if [ "$left" -le 0 ]; then
            echo "CXL: $have of $want memdevs after waiting" >&2
            ls /sys/bus/cxl/devices >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

# lab_cxl_memdev SERIAL: the memN name of the memdev with that serial number (0x1000 or 4096).
lab_cxl_memdev() {
    local m
    for m in /sys/bus/cxl/devices/mem*; do
        [ -e "$m/serial" ] || continue
        if [ "$(($(cat "$m/serial")))" = "$(($1))" ]; then basename "$m"; return 0; fi
    done
    echo "no CXL memdev with serial $1" >&2
    return 1
}

# lab_cxl_host_bridge_uid MEMDEV: the ACPI uid of the host bridge above the memdev (what root
# decoders' target_list names).
lab_cxl_host_bridge_uid() {
    local path hb
    path=$(readlink -f "/sys/bus/cxl/devices/$1")
    hb=$(grep -o 'pci[0-9a-f]\{4\}:[0-9a-f]\{2\}' <<< "$path" | head -n1)
    cat "/sys/devices/$hb/firmware_node/uid"
}

# lab_cxl_create_region WINDOW SERIAL...: create a RAM region in root decoder decoder0.WINDOW
# over the memdevs with these serial numbers (any order: they are put in the order of the
# window's target_list, as the kernel requires) and print the region's name.
lab_cxl_create_region() {
    local decoder=decoder0.$1 uid serial m ordered=() out; shift
    for uid in $(tr ',' ' ' < "/sys/bus/cxl/devices/$decoder/target_list"); do
        for serial in "$@"; do
            m=$(lab_cxl_memdev "$serial") || return 1
            [ "$(lab_cxl_host_bridge_uid "$m")" = "$uid" ] && ordered+=("$m")
        done
    done
    if [ "${#ordered[@]}" -ne "$#" ]; then
        echo "lab_cxl_create_region: memdevs $* are not all below $decoder's host bridges" >&2
        return 1
    fi
    out=$(cxl create-region -m -t ram -d "$decoder" -w "$#" "${ordered[@]}") || return 1
    jq -r .region <<< "$out"
}

# lab_cxl_region_dax REGION: the dax device of a region (regionN -> daxN.0).
lab_cxl_region_dax() { echo "dax${1#region}.0"; }

# lab_cxl_destroy_region REGION: tear a region down as an operator must: offline its memory
# (cxl refuses while a driver is bound: "active. Disable it or use --force"), then destroy it.
lab_cxl_destroy_region() {
    local dax b
    dax=$(lab_cxl_region_dax "$1")
    if [ "$(lab_driver "$dax")" = kmem ]; then
        for b in $(lab_blocks "$dax" | awk '$2 == "online" {print $1}'); do
            echo offline > "/sys/devices/system/memory/$b/state" || return 1
        done
    fi
    cxl destroy-region -f "$1"
}

# lab_mmap_check DAXDEV: map 2 MiB of /dev/DAXDEV, write a pattern, map it again and read it
# back; prints ok (or differs).
lab_mmap_check() {
    python3 - "$1" <<'PY'
import mmap, os, sys
fd = os.open(f"/dev/{sys.argv[1]}", os.O_RDWR)
pattern = os.urandom(4096)
with mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
    m[8192:12288] = pattern
with mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ) as m:
    print("ok" if m[8192:12288] == pattern else "differs")
PY
}

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

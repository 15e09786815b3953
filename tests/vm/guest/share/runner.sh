#!/bin/bash
# daxd lab runner: started in the guest by /usr/lib/daxd-lab/bootstrap (daxd-lab.service, ordered
# after multi-user.target) with the host's "in" share mounted read-only at /lab/in.
#
# 1. mounts the writable "out" share (/lab/out) and, when asked, the repository (/lab/repo);
# 2. installs daxd from a tmpfs copy of the repository (make install, else pip install);
# 3. runs /lab/in/$PHASE.sh as root (stdout, stderr, exit code -> /lab/out);
# 4. saves `journalctl -b` and powers off.
# Markers on the console (DAXD-LAB-BEGIN/-INSTALLED/-END) let the host follow progress.
set -u
IN=/lab/in
OUT=/lab/out
PHASE=$(sed -n 's/.*daxd_lab\.phase=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$PHASE" ] || PHASE=main

mark() { printf '\nDAXD-LAB-%s\n' "$*" > /dev/console; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mark "BEGIN phase=$PHASE uptime=$(uptime_s)"

mount_9p() {  # tag dir ro|rw
    mkdir -p "$2"
    mountpoint -q "$2" || mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2"
}
mount_9p lab_out "$OUT" rw || { mark "END phase=$PHASE rc=254 (no out share)"; systemctl poweroff -ff; }
mkdir -p "$OUT/files"
echo "begin_uptime=$(uptime_s)" > "$OUT/guest-times"

# Defaults, then the host's settings for this phase.
LAB_INSTALL=0
LAB_SCRIPT_TIMEOUT=300
LAB_POWEROFF=clean
# shellcheck disable=SC1090
[ -r "$IN/config-$PHASE.env" ] && . "$IN/config-$PHASE.env"

finish() {  # rc
    echo "end_uptime=$(uptime_s)" >> "$OUT/guest-times"
    systemctl is-system-running > "$OUT/system-state.txt" 2>&1
    systemctl list-units --failed --no-pager --plain > "$OUT/failed-units.txt" 2>&1
    systemd-analyze time > "$OUT/systemd-analyze.txt" 2>&1
    journalctl -b --no-pager -o short-monotonic > "$OUT/journal.txt" 2>&1
    echo "$1" > "$OUT/exit_code"
    sync
    mark "END phase=$PHASE rc=$1"
    umount "$OUT" 2>/dev/null
    if [ "$LAB_POWEROFF" = fast ]; then
        sync
        systemctl poweroff -ff
    else
        systemctl poweroff --no-block
    fi
    exit 0
}

export LAB_PHASE="$PHASE" LAB_OUT="$OUT/files" LAB_IN="$IN" LAB_LIB="$IN/lib.sh"

if [ "$LAB_INSTALL" = 1 ]; then
    (
        set -x
        mount_9p lab_repo /lab/repo ro
        src=/run/daxd-lab/src
        rm -rf "$src" && mkdir -p "$src"
        # The share is read-only: build from a tmpfs copy, without the host's caches.
        tar -C /lab/repo --exclude=./.git --exclude=./.venv --exclude=./.lab \
            --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
            --exclude=.pytest_cache --exclude=.hypothesis --exclude='*.egg-info' \
            --exclude=./build --exclude=./dist -cf - . | tar -C "$src" -xf -
        if [ -f "$src/Makefile" ] && grep -qE '^install[[:space:]]*:' "$src/Makefile"; then
            echo "daxd-lab: make install"
            make -C "$src" install DESTDIR= PREFIX=/usr
        else
            echo "daxd-lab: no 'install' target in Makefile, pip install"
            python3 -m pip install --no-deps --break-system-packages --no-build-isolation \
                --no-index "$src"
        fi
        rc=$?
        systemctl daemon-reload
        udevadm control --reload || true
        exit $rc
    ) > "$OUT/install.log" 2>&1 < /dev/null
    rc=$?
    echo "$rc" > "$OUT/install_exit_code"
    mark "INSTALLED rc=$rc"
    if [ "$rc" != 0 ]; then
        echo "daxd-lab: installing daxd failed ($rc), see install.log" > "$OUT/stderr.txt"
        finish 125
    fi
fi

mkdir -p /run/daxd-lab/work
cd /run/daxd-lab/work || exit 1
echo "script_uptime=$(uptime_s)" >> "$OUT/guest-times"
timeout --kill-after=10 "$LAB_SCRIPT_TIMEOUT" /bin/bash "$IN/$PHASE.sh" \
    > "$OUT/stdout.txt" 2> "$OUT/stderr.txt" < /dev/null
finish $?

#!/bin/sh
# Install what the daxd QEMU lab needs on a Debian 12 or newer host, then unpack the lab's QEMU
# (Debian 13's, whatever the host: CXL type-3 memory needs QEMU 10; tests/vm/qemu.py) into
# $DAXD_LAB_DIR (default .lab/), once. Idempotent.
#
#   sudo tests/vm/install-deps.sh          # installs only what is missing
#   DAXD_LAB_APT_UPDATE=0 tests/vm/install-deps.sh   # never run apt-get update
set -eu

PKGS="qemu-utils mmdebstrap e2fsprogs ca-certificates debian-archive-keyring python3"
# debian-archive-keyring of bookworm already carries the trixie keys; mmdebstrap needs them to
# verify the trixie Release file.

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

lab_qemu() {
    cd "$(dirname "$0")/../.." && python3 -m tests.vm.qemu ensure
}

if [ -z "$missing" ]; then
    echo "install-deps: all present:$(printf ' %s' $PKGS)"
    lab_qemu
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg rather than fail.  `apt-get update` does not wait for the lists'
# lock (DPkg::Lock::Timeout covers only dpkg's): retry it while that is why it failed.
WAIT="-o DPkg::Lock::Timeout=300"
if [ "${DAXD_LAB_APT_UPDATE:-1}" != 0 ]; then
    tries=60
    log=$(mktemp)
    # shellcheck disable=SC2086
    until $SUDO apt-get $WAIT update -q >"$log" 2>&1; do
        tries=$((tries - 1))
        if ! grep -q 'Could not get lock' "$log" || [ "$tries" -eq 0 ]; then
            cat "$log" >&2
            rm -f "$log"
            exit 1
        fi
        sleep 5
    done
    cat "$log"
    rm -f "$log"
fi
# shellcheck disable=SC2086
$SUDO apt-get $WAIT install -y -q --no-install-recommends $missing
echo "install-deps: installed:$missing"
lab_qemu

#!/bin/sh
# Install the host packages the daxd QEMU lab needs (Debian 12 or newer). Idempotent.
#
#   sudo tests/vm/install-deps.sh          # installs only what is missing
#   DAXD_LAB_APT_UPDATE=0 tests/vm/install-deps.sh   # never run apt-get update
set -eu

PKGS="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs ca-certificates debian-archive-keyring"
# debian-archive-keyring of bookworm already carries the trixie keys; mmdebstrap needs them to
# verify the trixie Release file.

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all present:$(printf ' %s' $PKGS)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
if [ "${DAXD_LAB_APT_UPDATE:-1}" != 0 ]; then
    $SUDO apt-get update -q
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
echo "install-deps: installed:$missing"

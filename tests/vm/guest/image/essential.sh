#!/bin/sh
# mmdebstrap --essential-hook for the daxd lab image: runs before linux-image and initramfs-tools
# are installed, so the one initramfs they build is already the small one.
#   essential.sh ROOT
set -eu
ROOT=$1
# A small initramfs: only what mounts the root file system of the lab (virtio disk, ext4).
# MODULES=most (Debian's default) makes a 35 MB initrd that costs seconds to unpack under TCG.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d" "$ROOT/usr/share/initramfs-tools/modules.d"
echo MODULES=list > "$ROOT/etc/initramfs-tools/conf.d/daxd-lab.conf"
printf '%s\n' virtio_pci virtio_blk ext4 > "$ROOT/usr/share/initramfs-tools/modules.d/daxd-lab"

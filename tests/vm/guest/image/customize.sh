#!/bin/sh
# mmdebstrap --customize-hook for the daxd lab image.
#   customize.sh ROOT GUEST_IMAGE_DIR OUT_DIR IMAGE_SIZE_MIB
# Configures the tree ROOT, then packs it into OUT_DIR/rootfs.raw (ext4, made with mke2fs -d, no
# mount needed) and copies the kernel and initrd next to it. Runs on the host, outside the chroot.
set -eu
ROOT=$1
SRC=$2
OUT=$3
SIZE_MIB=$4

in_root() { chroot "$ROOT" "$@"; }

echo daxd-lab > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	daxd-lab
::1	localhost ip6-localhost ip6-loopback
HOSTS
cat > "$ROOT/etc/fstab" <<'FSTAB'
# <file system>       <mount point> <type> <options>                 <dump> <pass>
LABEL=daxd-lab-root   /             ext4   rw,errors=remount-ro      0      0
FSTAB
# A fixed machine id: no first-boot logic (systemd-firstboot would prompt on the console).
echo 4461784c6162000000000000000000a1 > "$ROOT/etc/machine-id"
rm -f "$ROOT/.dockerenv" "$ROOT/run/.containerenv"
ln -sf /usr/share/zoneinfo/Etc/UTC "$ROOT/etc/localtime"
echo Etc/UTC > "$ROOT/etc/timezone"
# Root without a password: log in on the serial console when booting by hand.
sed -i "s/^root:[^:]*:/root::/" "$ROOT/etc/shadow"

install -D -m 0644 "$SRC/modules-load.conf" "$ROOT/etc/modules-load.d/daxd-lab.conf"
install -D -m 0755 "$SRC/bootstrap" "$ROOT/usr/lib/daxd-lab/bootstrap"
install -D -m 0644 "$SRC/daxd-lab.service" "$ROOT/etc/systemd/system/daxd-lab.service"
mkdir -p "$ROOT/lab/in" "$ROOT/lab/out" "$ROOT/lab/repo"

in_root systemctl set-default multi-user.target
in_root systemctl enable daxd-lab.service
# Timers and jobs that only cost boot time in a throw-away VM. ndctl-monitor exits with 250 ("no
# dimms to monitor": QEMU's NVDIMMs have no SMART) and would leave the system "degraded".
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer man-db.timer systemd-timesyncd.service \
         systemd-firstboot.service getty@tty1.service ndctl-monitor.service; do
    in_root systemctl mask "$u" >/dev/null 2>&1 || true
done
# pip as root inside the guest is expected (make install / pip install of daxd).
printf '[global]\nno-index = true\ndisable-pip-version-check = true\nroot-user-action = ignore\n' \
    > "$ROOT/etc/pip.conf"

# QEMU's pc machine has a floppy controller; probing it only costs time.
echo "blacklist floppy" > "$ROOT/etc/modprobe.d/daxd-lab.conf"

# Record what went in.
in_root dpkg-query -W -f '${Package}\t${Version}\n' > "$OUT/packages.tsv"

# Space: package lists and caches are useless without a network.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin

kver=$(ls "$ROOT/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
cp "$ROOT/boot/vmlinuz-$kver" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$OUT/initrd.img"
echo "$kver" > "$OUT/kernel-version"

# Nothing for ldconfig.service, systemd-journal-catalog-update.service and
# systemd-update-done.service (ConditionNeedsUpdate=) to do at every boot of a fresh overlay.
in_root ldconfig
in_root journalctl --update-catalog >/dev/null 2>&1 || true
touch -r "$ROOT/usr" "$ROOT/etc/.updated" "$ROOT/var/.updated"

# mmdebstrap has /proc, /sys and /dev mounted inside ROOT now; a plain (non-recursive) bind mount
# shows the tree without them, which is what goes into the image.
view=$(mktemp -d)
mount --bind "$ROOT" "$view"
trap 'umount "$view"; rmdir "$view"' EXIT
mke2fs -q -F -t ext4 -L daxd-lab-root -E root_owner=0:0 -d "$view" "$OUT/rootfs.raw" "${SIZE_MIB}M"

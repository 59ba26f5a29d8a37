#!/bin/bash
# mmdebstrap hooks of build-image.sh; they run on the build host with the chroot as $2.
#   image-hooks.sh setup ROOT       before any package is installed
#   image-hooks.sh customize ROOT   after all packages are installed
# Environment from build-image.sh: SYSRQ_IMAGE_PURGE (the build-only packages).
set -euo pipefail
STEP=$1
R=$2
say() { echo "image-hooks: $*"; }
. "$(dirname "$0")/../lib/debian-image.sh"    # in_root, installed, small_root, xt_sysrq_for

setup() { small_root sysrq-image; }

customize() {
    local kver
    kver=$(root_kernel)
    echo "$kver" >"$R/etc/sysrq-image-kernel"
    # shellcheck disable=SC2086  # a list of package names
    xt_sysrq_for "$kver" $SYSRQ_IMAGE_PURGE
    echo sysrq-realkernel >"$R/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$R/etc/hosts"
    printf '/dev/vda / ext4 rw 0 1\n' >"$R/etc/fstab"
    rm -f "$R/etc/resolv.conf"; : >"$R/etc/resolv.conf"   # no network, no DNS
    # PID 1 (init=/sbin/sysrq-guest-boot): mount the checkout the host shares read-only and
    # hand over to its tests/realkernel/guest-run.sh, so changing the tests needs no rebuild.
    cat >"$R/sbin/sysrq-guest-boot" <<'BOOT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /srv/repo /srv/out
modprobe 9pnet_virtio
mount -t 9p -o trans=virtio,version=9p2000.L,ro repo /srv/repo
mount -t 9p -o trans=virtio,version=9p2000.L out /srv/out
[ -x /srv/repo/tests/realkernel/guest-run.sh ] && /srv/repo/tests/realkernel/guest-run.sh
echo "sysrq-guest-boot: powering off" >/dev/console
sync
echo o >/proc/sysrq-trigger
BOOT
    chmod 0755 "$R/sbin/sysrq-guest-boot"
    in_root apt-get clean
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/*.log "$R"/tmp/*
}

case "$STEP" in
    setup) setup ;;
    customize) customize ;;
    *) echo "usage: $0 setup|customize ROOT" >&2; exit 2 ;;
esac

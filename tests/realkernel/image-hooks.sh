#!/bin/bash
# mmdebstrap hooks of build-image.sh; they run on the build host with the chroot as $2.
#   image-hooks.sh setup ROOT       before any package is installed
#   image-hooks.sh customize ROOT   after all packages are installed
# Environment from build-image.sh: SYSRQ_IMAGE_PURGE (the build-only packages).
set -euo pipefail
STEP=$1
R=$2
say() { echo "image-hooks: $*"; }
in_root() { chroot "$R" env DEBIAN_FRONTEND=noninteractive "$@"; }
installed() { in_root dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}'; }

setup() {
    # A small initramfs that mounts a virtio disk: this root only ever boots under QEMU.
    mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/usr/share/initramfs-tools/modules.d"
    printf 'MODULES=list\nCOMPRESS=zstd\n' >"$R/etc/initramfs-tools/conf.d/sysrq-image"
    printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >"$R/usr/share/initramfs-tools/modules.d/sysrq-image"
    mkdir -p "$R/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/locale/*' \
        'path-exclude=/usr/share/info/*' >"$R/etc/dpkg/dpkg.cfg.d/sysrq-image-nodoc"
}

customize() {
    local kver
    kver=$(ls "$R/lib/modules" | sort -V | tail -1)
    echo "$kver" >"$R/etc/sysrq-image-kernel"
    # DKMS for the image's kernel (`uname -r` in the chroot is the build host's).
    in_root dkms autoinstall -k "$kver" >/dev/null
    ls "$R/lib/modules/$kver/updates/dkms/" | grep -q '^xt_SYSRQ\.ko' \
        || { in_root dkms status; say "xt_SYSRQ was not built for $kver"; exit 1; }
    # Keep the modules where purging the DKMS package will not remove them.
    mkdir -p "$R/lib/modules/$kver/updates/xtables-addons"
    cp -a "$R/lib/modules/$kver/updates/dkms/." "$R/lib/modules/$kver/updates/xtables-addons/"
    local compilers
    compilers=$(installed | grep -E '^((gcc|cpp)(-[0-9]+)?(-x86-64-linux-gnu)?|make|dpkg-dev)$' || true)
    # shellcheck disable=SC2086  # lists of package names
    in_root apt-get purge -y -qq --autoremove -o APT::AutoRemove::RecommendsImportant=false \
        $SYSRQ_IMAGE_PURGE dkms "linux-headers-$kver" $compilers >/dev/null
    in_root depmod -a "$kver"
    say "kernel $kver; xt_SYSRQ: $(in_root modinfo -k "$kver" -F filename xt_SYSRQ)"
    say "xtables-addons-common $(in_root dpkg-query -W -f '${Version}' xtables-addons-common)"
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

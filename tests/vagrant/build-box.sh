#!/bin/bash
# Build a vagrant-libvirt box of Debian RELEASE from Debian packages only, or reuse a cached one.
#
#   tests/vagrant/build-box.sh trixie|bookworm [--stale-kernel] [--force]
#
# Prints the path of the .box on stdout (progress goes to stderr). The box is cached in
# $SYSRQ_CACHE/boxes/ under a name that carries a hash of its inputs (this script, the hook
# script, the release, the package list): change any of them and the next run builds anew.
# The Debian archive itself is not part of the key; --force rebuilds against today's archive.
#
# What is in it and why:
#  - everything our .deb needs at run time, because the guests have no route out and no mirror:
#    python3 + pyroute2/iptables/yaml/systemd/prometheus-client, adduser, iptables, iproute2,
#    kmod, xtables-addons-common;
#  - nftables, disabled as Debian ships it: the hung-shutdown drill and the unit check enable it;
#  - xt_SYSRQ and the other xtables-addons modules, built by DKMS for the box's kernel here, in
#    the chroot, so no compiler ever runs under TCG; compiler and headers are purged afterwards;
#  - what Vagrant needs: systemd, openssh-server, sudo, user vagrant with Vagrant's insecure
#    public key, systemd-networkd with DHCP on eth* (net.ifnames=0);
#  - no partition table and no boot loader: the filesystem image is made with `mke2fs -d`
#    (no loop device), and the box's own Vagrantfile boots the kernel and initrd it ships
#    directly (vagrant-libvirt kernel/initrd/cmd_line).
#
# --stale-kernel (trixie only) makes the box a workstation's public box stands for, months old:
# it runs the mirror's previous kernel, carries no xt_SYSRQ and no compiler, and boots through
# GRUB from a partitioned disk, so a reboot starts whatever kernel the guest installed last
# (GRUB's /vmlinuz entry, as Debian's kernel packages keep that link on the newest). Its only
# package source is a local repository in the box (the guests have no route out) holding
# what tests/vagrant/provision/kernel.sh installs: the current kernel, its headers and
# xtables-addons-dkms with their dependencies, and no headers for the kernel it runs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/../lib/debian-image.sh"    # debian_root

usage() { echo "usage: $0 trixie|bookworm [--stale-kernel] [--force]" >&2; exit 2; }
RELEASE=${1:-}
shift || true
FORCE= STALE=
for arg; do
    case "$arg" in
        --force) FORCE=$arg ;;
        --stale-kernel) STALE=$arg ;;
        *) usage ;;
    esac
done
case "$RELEASE" in
    trixie) ;;
    bookworm) [ -z "$STALE" ] || { echo "$0: --stale-kernel is for trixie (a Debian 12 target cannot work)" >&2; exit 2; } ;;
    *) usage ;;
esac
need_root

DISK_GB=4     # virtual size of the guest's root filesystem (sparse)

# Installed and kept.
PACKAGES=(
    systemd-sysv udev dbus openssh-server sudo
    linux-image-amd64 initramfs-tools kmod
    iproute2 iptables nftables iputils-ping procps e2fsprogs util-linux netbase
    python3 python3-pyroute2 python3-iptables python3-yaml
    python3-systemd python3-prometheus-client adduser
    xtables-addons-common
)
# Installed for the DKMS build only, purged afterwards (with what they pulled in).
BUILD_ONLY=(xtables-addons-dkms linux-headers-amd64)
FLAVOUR=$RELEASE
if [ -n "$STALE" ]; then
    # No DKMS build here: the guest's kernel.sh does it. GRUB's modules to make its core image.
    FLAVOUR=$RELEASE-stale-kernel
    BUILD_ONLY=(grub-pc-bin)
fi

key=$( { cat "$0" "$HERE/box-hooks.sh" "$HERE/../lib/debian-image.sh"; echo "$FLAVOUR ${PACKAGES[*]} ${BUILD_ONLY[*]}"; } |
       sha256sum | cut -c1-12)
BOX_DIR=$SYSRQ_CACHE/boxes
BOX=$BOX_DIR/sysrq-appliance-$FLAVOUR-$key.box
mkdir -p "$BOX_DIR"

exec 9>"$BOX_DIR/.lock-$FLAVOUR"
flock 9     # one build per release at a time; a second caller waits and then reuses it

if [ -s "$BOX" ] && [ "$FORCE" != --force ]; then
    log "reusing $BOX"
    echo "$BOX"
    exit 0
fi

apt_ensure mmdebstrap e2fsprogs qemu-utils vagrant
[ -z "$STALE" ] || apt_ensure fdisk apt-utils     # sfdisk, apt-ftparchive
PUBKEY=$(dpkg -L vagrant | grep '/keys/vagrant\.pub$' | head -1)
[ -s "$PUBKEY" ] || die "Vagrant's insecure public key not found in the vagrant package"

WORK=$(mktemp -d /var/tmp/sysrq-box-"$FLAVOUR".XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
T0=$(now)

log "mmdebstrap $FLAVOUR (log: $WORK/mmdebstrap.log)"
if ! SYSRQ_BOX_PUBKEY=$PUBKEY SYSRQ_BOX_RELEASE=$RELEASE SYSRQ_BOX_PURGE="${BUILD_ONLY[*]}" \
    SYSRQ_BOX_STALE=${STALE:+1} \
    debian_root "$RELEASE" "$ROOT" "$WORK/mmdebstrap.log" "$HERE/box-hooks.sh" \
        "${PACKAGES[@]}" "${BUILD_ONLY[@]}"; then
    tail -40 "$WORK/mmdebstrap.log" >&2
    die "mmdebstrap failed"
fi
grep '^box-hooks:' "$WORK/mmdebstrap.log" >&2 || true
T1=$(now)

mkdir "$WORK/box"
KVER=$(cat "$ROOT/etc/sysrq-box-kernel")
cat >"$WORK/box/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GB}
EOF
if [ -z "$STALE" ]; then
    log "filesystem image (mke2fs -d), kernel, initrd"
    BOX_FILES=(metadata.json Vagrantfile box.img vmlinuz initrd.img)
    cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/box/vmlinuz"
    cp "$ROOT/boot/initrd.img-$KVER" "$WORK/box/initrd.img"
    mke2fs -q -t ext4 -L sysrq-root -E root_owner=0:0 -d "$ROOT" "$WORK/root.ext4" "${DISK_GB}G" >&2
    # The box's own Vagrantfile: boot the kernel and initrd shipped next to it. Vagrant merges
    # it under the project's Vagrantfile, so a project can still override any of these.
    cat >"$WORK/box/Vagrantfile" <<'EOF'
# Built by sysrq-appliance tests/vagrant/build-box.sh: a filesystem without partition table
# or boot loader, booted directly from the kernel and initrd in this directory.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.expand_path("vmlinuz", __dir__)
    libvirt.initrd = File.expand_path("initrd.img", __dir__)
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"
  end
end
EOF
else
    log "disk image: one partition (mke2fs -d at 1 MiB), GRUB's boot sector and core image"
    BOX_FILES=(metadata.json Vagrantfile box.img)
    truncate -s "${DISK_GB}G" "$WORK/root.ext4"
    echo 'start=2048, type=83, bootable' | sfdisk -q "$WORK/root.ext4" >&2
    mke2fs -q -t ext4 -L sysrq-root -E root_owner=0:0,offset=$((2048 * 512)) -d "$ROOT" \
        "$WORK/root.ext4" $(((DISK_GB * 1024 - 1) * 1024))k >&2
    # What grub-install does on a block device: the boot sector's code (not the partition
    # table after it) in sector 0, the core image from sector 1, where boot.img loads it from.
    dd if="$ROOT/usr/lib/grub/i386-pc/boot.img" of="$WORK/root.ext4" bs=440 count=1 conv=notrunc status=none
    dd if="$ROOT/boot/grub/i386-pc/core.img" of="$WORK/root.ext4" bs=512 seek=1 conv=notrunc status=none
    cat >"$WORK/box/Vagrantfile" <<'EOF'
# Built by sysrq-appliance tests/vagrant/build-box.sh --stale-kernel: a partitioned disk that
# boots through GRUB, like a public box.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.boot "hd"
  end
end
EOF
fi
qemu-img convert -O qcow2 "$WORK/root.ext4" "$WORK/box/box.img"
rm -f "$WORK/root.ext4"

tar -C "$WORK/box" -cf "$WORK/out.box" "${BOX_FILES[@]}"
mv "$WORK/out.box" "$BOX"
T2=$(now)

# Older builds of this flavour are of no use any more.
find "$BOX_DIR" -maxdepth 1 -regextype posix-extended \
    -regex ".*/sysrq-appliance-$FLAVOUR-[0-9a-f]{12}\.box" ! -path "$BOX" -delete
log "built $BOX ($(du -h "$BOX" | cut -f1); kernel $KVER; rootfs $(du -sh "$ROOT" | cut -f1))"
log "TIME box build $FLAVOUR: mmdebstrap $((T1 - T0)) s, image $((T2 - T1)) s, total $((T2 - T0)) s"
echo "$BOX"

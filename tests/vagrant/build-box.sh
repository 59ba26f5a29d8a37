#!/bin/bash
# Build a vagrant-libvirt box of Debian RELEASE from Debian packages only, or reuse a cached one.
#
#   tests/vagrant/build-box.sh trixie|bookworm [--force]
#
# Prints the path of the .box on stdout (progress goes to stderr). The box is cached in
# $SYSRQ_CACHE/boxes/ under a name that carries a hash of its inputs (this script, the hook
# script, the release, the package list): change any of them and the next run builds anew.
# The Debian archive itself is not part of the key; --force rebuilds against today's archive.
#
# What is in it and why:
#  - everything our .deb needs at run time, because the guests have no route out and no mirror:
#    python3 + pyroute2/iptables/yaml/apt, iptables, iproute2, kmod, xtables-addons-common;
#  - nftables, disabled as Debian ships it: the hung-shutdown drill and the unit check enable it;
#  - xt_SYSRQ and the other xtables-addons modules, built by DKMS for the box's kernel here, in
#    the chroot, so no compiler ever runs under TCG; compiler and headers are purged afterwards;
#  - what Vagrant needs: systemd, openssh-server, sudo, user vagrant with Vagrant's insecure
#    public key, systemd-networkd with DHCP on eth* (net.ifnames=0);
#  - no partition table and no boot loader: the filesystem image is made with `mke2fs -d`
#    (no loop device), and the box's own Vagrantfile boots the kernel and initrd it ships
#    directly (vagrant-libvirt kernel/initrd/cmd_line).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/../lib/debian-image.sh"    # debian_root

RELEASE=${1:-}
FORCE=${2:-}
case "$RELEASE" in
    trixie|bookworm) ;;
    *) echo "usage: $0 trixie|bookworm [--force]" >&2; exit 2 ;;
esac
need_root

DISK_GB=4     # virtual size of the guest's root filesystem (sparse)

# Installed and kept.
PACKAGES=(
    systemd-sysv udev dbus openssh-server sudo
    linux-image-amd64 initramfs-tools kmod
    iproute2 iptables nftables iputils-ping procps e2fsprogs util-linux netbase
    python3 python3-pyroute2 python3-iptables python3-yaml
    xtables-addons-common
    python3-apt     # Ansible's apt module (the fleet rollout installs our .deb with it)
)
# Installed for the DKMS build only, purged afterwards (with what they pulled in).
BUILD_ONLY=(xtables-addons-dkms linux-headers-amd64)

key=$( { cat "$0" "$HERE/box-hooks.sh" "$HERE/../lib/debian-image.sh"; echo "$RELEASE ${PACKAGES[*]} ${BUILD_ONLY[*]}"; } |
       sha256sum | cut -c1-12)
BOX_DIR=$SYSRQ_CACHE/boxes
BOX=$BOX_DIR/sysrq-appliance-$RELEASE-$key.box
mkdir -p "$BOX_DIR"

exec 9>"$BOX_DIR/.lock-$RELEASE"
flock 9     # one build per release at a time; a second caller waits and then reuses it

if [ -s "$BOX" ] && [ "$FORCE" != --force ]; then
    log "reusing $BOX"
    echo "$BOX"
    exit 0
fi

apt_ensure mmdebstrap e2fsprogs qemu-utils vagrant
PUBKEY=$(dpkg -L vagrant | grep '/keys/vagrant\.pub$' | head -1)
[ -s "$PUBKEY" ] || die "Vagrant's insecure public key not found in the vagrant package"

WORK=$(mktemp -d /var/tmp/sysrq-box-"$RELEASE".XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
T0=$(now)

log "mmdebstrap $RELEASE (log: $WORK/mmdebstrap.log)"
if ! SYSRQ_BOX_PUBKEY=$PUBKEY SYSRQ_BOX_RELEASE=$RELEASE SYSRQ_BOX_PURGE="${BUILD_ONLY[*]}" \
    debian_root "$RELEASE" "$ROOT" "$WORK/mmdebstrap.log" "$HERE/box-hooks.sh" \
        "${PACKAGES[@]}" "${BUILD_ONLY[@]}"; then
    tail -40 "$WORK/mmdebstrap.log" >&2
    die "mmdebstrap failed"
fi
grep '^box-hooks:' "$WORK/mmdebstrap.log" >&2 || true
T1=$(now)

log "filesystem image (mke2fs -d), kernel, initrd"
mkdir "$WORK/box"
KVER=$(cat "$ROOT/etc/sysrq-box-kernel")
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/box/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$WORK/box/initrd.img"
mke2fs -q -t ext4 -L sysrq-root -E root_owner=0:0 -d "$ROOT" "$WORK/root.ext4" "${DISK_GB}G" >&2
qemu-img convert -O qcow2 "$WORK/root.ext4" "$WORK/box/box.img"
rm -f "$WORK/root.ext4"

cat >"$WORK/box/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GB}
EOF
# The box's own Vagrantfile: boot the kernel and initrd shipped next to it. Vagrant merges it
# under the project's Vagrantfile, so a project can still override any of these.
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
tar -C "$WORK/box" -cf "$WORK/out.box" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$WORK/out.box" "$BOX"
T2=$(now)

# Older builds of this release are of no use any more.
find "$BOX_DIR" -maxdepth 1 -name "sysrq-appliance-$RELEASE-*.box" ! -path "$BOX" -delete
log "built $BOX ($(du -h "$BOX" | cut -f1); kernel $KVER; rootfs $(du -sh "$ROOT" | cut -f1))"
log "TIME box build $RELEASE: mmdebstrap $((T1 - T0)) s, image $((T2 - T1)) s, total $((T2 - T0)) s"
echo "$BOX"

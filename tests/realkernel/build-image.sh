#!/bin/bash
# Build the Debian 13 root the real-kernel tier boots, or reuse a cached one.
#
#   tests/realkernel/build-image.sh [--force]
#
# Prints the image directory on stdout (progress on stderr): it holds vmlinuz, initrd.img and
# root.ext4, the Debian 13 kernel and root the tier boots directly under QEMU. The directory is
# $SYSRQ_CACHE/realkernel/trixie-<hash>, keyed by a hash of this script and its hook (which
# hold the package list); change either and the next run builds anew. The archive itself is
# not part of the key: --force rebuilds against today's archive.
#
# What is in it: Debian's kernel, iptables, iproute2, python3 with pyroute2/iptables/yaml/pytest
# (what the tests and the package use), strace and ping (tests/netns use them), and xt_SYSRQ
# built by DKMS for that kernel here in the chroot (no compiler ever runs under TCG; compiler
# and headers are purged afterwards). No systemd, no network configuration: tests/realkernel/
# guest-init is PID 1, and the guest has no NIC at all.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../vagrant/lib.sh"    # log, die, now, apt_ensure, SYSRQ_CACHE
. "$HERE/../lib/debian-image.sh"    # debian_root

FORCE=${1:-}
need_root
RELEASE=trixie
PACKAGES=(
    linux-image-amd64 initramfs-tools kmod util-linux procps
    iproute2 iptables iputils-ping strace
    python3 python3-pyroute2 python3-iptables python3-yaml python3-pytest
    python3-systemd python3-prometheus-client
    xtables-addons-common
)
BUILD_ONLY=(xtables-addons-dkms linux-headers-amd64)   # purged after the DKMS build

key=$(cat "$0" "$HERE/image-hooks.sh" "$HERE/../lib/debian-image.sh" | sha256sum | cut -c1-12)
CACHE_DIR=$SYSRQ_CACHE/realkernel
IMAGE=$CACHE_DIR/$RELEASE-$key
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock 9     # one build at a time; a second caller waits and then reuses it

if [ -s "$IMAGE/root.ext4" ] && [ "$FORCE" != --force ]; then
    log "reusing $IMAGE"
    echo "$IMAGE"
    exit 0
fi

apt_ensure mmdebstrap e2fsprogs
WORK=$(mktemp -d /var/tmp/sysrq-realkernel.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
ROOT=$WORK/rootfs
T0=$(now)
log "mmdebstrap $RELEASE (log: $WORK/mmdebstrap.log)"
if ! SYSRQ_IMAGE_PURGE="${BUILD_ONLY[*]}" \
    debian_root "$RELEASE" "$ROOT" "$WORK/mmdebstrap.log" "$HERE/image-hooks.sh" \
        "${PACKAGES[@]}" "${BUILD_ONLY[@]}"; then
    tail -40 "$WORK/mmdebstrap.log" >&2
    die "mmdebstrap failed"
fi
grep '^image-hooks:' "$WORK/mmdebstrap.log" >&2 || true

mkdir "$WORK/image"
KVER=$(cat "$ROOT/etc/sysrq-image-kernel")
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/image/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$WORK/image/initrd.img"
# Sparse; the guest boots it with snapshot=on, so every run starts from this very image.
mke2fs -q -t ext4 -L sysrq-root -E root_owner=0:0 -d "$ROOT" "$WORK/image/root.ext4" 2G >&2
rm -rf "$IMAGE"
mv -T "$WORK/image" "$IMAGE"
# Older builds are of no use any more.
find "$CACHE_DIR" -mindepth 1 -maxdepth 1 -type d -name "$RELEASE-*" ! -path "$IMAGE" \
    -exec rm -rf --one-file-system {} +
log "built $IMAGE (kernel $KVER, rootfs $(du -sh "$ROOT" | cut -f1)) in $(($(now) - T0)) s"
echo "$IMAGE"

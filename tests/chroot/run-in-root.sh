#!/bin/bash
# Run a command inside a cached Debian root (e.g. trixie on a bookworm host), with this
# checkout mounted read-only at /srv/sysrq-appliance, in a throwaway network namespace.
#
#   tests/chroot/run-in-root.sh RELEASE -- CMD...
#   tests/chroot/run-in-root.sh trixie -- /usr/bin/python3 -m pytest -q tests/netns/test_firewall_netns.py
#
# The root is built once with `mmdebstrap --variant=apt RELEASE` plus $PACKAGES and cached under
# $SYSRQ_ROOT_CACHE (default /var/cache/sysrq-appliance/roots/RELEASE-<hash>), keyed by a hash of
# the release and the package list: change either and a new root is built. Delete the
# directory to force a rebuild.
#
# CMD runs as root in new mount, PID and network namespaces: /proc, /sys, /dev, a tmpfs /run and
# /tmp and the checkout are mounted into the root for CMD only and unmounted, by those paths,
# when it ends; the mount namespace dies with CMD, so nothing can leak even if it is killed.
# The new network namespace has only a loopback interface: CMD cannot reach the host's
# network or its firewall. Needs root, mmdebstrap (first run only), unshare, chroot.
set -euo pipefail

# The project's runtime dependencies (pyproject.toml) and what tests/netns need (as in
# tests/install-deps.sh).
PACKAGES="iptables,iproute2,iputils-ping,kmod,strace,mount,python3-iptables,python3-pyroute2,python3-yaml,python3-pytest,python3-hypothesis,python3-systemd,python3-prometheus-client"
# The mirror (or proxy) this machine's apt uses, unless SYSRQ_ROOT_MIRROR names one.
MIRROR=${SYSRQ_ROOT_MIRROR:-$("$(dirname "$0")/../debian-mirror.sh" archive)}
CACHE=${SYSRQ_ROOT_CACHE:-/var/cache/sysrq-appliance/roots}
REPO_IN_ROOT=/srv/sysrq-appliance

usage() { echo "usage: $0 RELEASE -- CMD..." >&2; exit 2; }
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
release=$1; shift 2
[[ $release =~ ^[a-z]+$ ]] || { echo "$0: bad release name: $release" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
key=$(printf '%s\n%s\n' "$release" "$PACKAGES" | sha256sum | cut -c1-16)
root=$CACHE/$release-$key

build_root() {
    command -v mmdebstrap >/dev/null \
        || { echo "$0: mmdebstrap missing: apt-get install mmdebstrap" >&2; exit 1; }
    local tmp=$root.tmp.$$
    echo "run-in-root: building $release root in $root ($PACKAGES)" >&2
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    mmdebstrap --quiet --variant=apt --include="$PACKAGES" "$release" "$tmp" "$MIRROR" >&2
    mkdir -p "$tmp$REPO_IN_ROOT"
    mv -T "$tmp" "$root"
    trap - EXIT
}

mkdir -p "$CACHE"
(
    flock 9
    [ -d "$root" ] || build_root
) 9>"$CACHE/.lock"

# Everything below runs in the new namespaces; $mounts lists what we mounted, in order.
inside='
set -eu
root=$1 repo=$2 repo_in_root=$3; shift 3
mounts=""
mnt() { mount "$@"; mounts="${!#} $mounts"; }
cleanup() { for m in $mounts; do umount -R "$m"; done; }
trap cleanup EXIT
mount --make-rprivate /
mnt --bind "$root" "$root"  # the root must be a mount point: `ip netns exec` remounts /
mnt -t proc proc "$root/proc"
mnt -t sysfs sysfs "$root/sys"
mnt --rbind /dev "$root/dev"
mnt -t tmpfs -o mode=0755 tmpfs "$root/run"
mnt -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mnt --bind "$repo" "$root$repo_in_root"
mount -o remount,bind,ro "$root$repo_in_root"
ip link set lo up 2>/dev/null || true
chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 PYTEST_ADDOPTS="-p no:cacheprovider" \
    /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$repo_in_root" "$@"
'
exec unshare --mount --net --pid --fork bash -c "$inside" inside "$root" "$repo" "$REPO_IN_ROOT" "$@"

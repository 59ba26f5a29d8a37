#!/bin/sh
# Install, from Debian only, what the test tiers need; skip apt entirely when all is there.
# Usage: tests/install-deps.sh TIER...   (tiers: unit netns package ansible realkernel vagrant)
set -eu
packages=""
for tier in "$@"; do
    case "$tier" in
        unit) packages="$packages python3-pyroute2 python3-iptables python3-yaml python3-pytest
                  python3-hypothesis python3-systemd python3-prometheus-client" ;;
        netns) packages="$packages iptables iproute2 kmod mmdebstrap iputils-ping strace" ;;
        package) packages="$packages debhelper dh-python pybuild-plugin-pyproject python3-all
                  python3-setuptools python3-docutils python3-yaml python3-pytest python3-pyroute2
                  python3-iptables python3-prometheus-client python3-systemd lintian mmdebstrap fakeroot" ;;
        ansible) packages="$packages ansible python3-yaml python3-pytest" ;;
        realkernel) packages="$packages qemu-system-x86 mmdebstrap e2fsprogs" ;;
        vagrant) packages="$packages vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients
                  qemu-system-x86 qemu-utils mmdebstrap dnsmasq-base e2fsprogs ansible
                  fdisk apt-utils procps iproute2" ;;
        *) echo "install-deps: unknown tier '$tier' (use unit netns package ansible realkernel vagrant)" >&2; exit 2 ;;
    esac
done
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing:$missing — run as root (sudo) to install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
# shellcheck disable=SC2086
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null

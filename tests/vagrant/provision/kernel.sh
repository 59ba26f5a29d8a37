#!/bin/sh
# Guest side, public boxes only (a workstation's `vagrant up`; the locally built test boxes
# carry xt_SYSRQ already and skip this): make sure xt_SYSRQ is built for the kernel the
# machine will run. DKMS builds it against that kernel's headers, and a box made months ago
# runs a kernel whose headers its mirror no longer carries, so the kernel and its headers are
# brought to the mirror's current version together; Vagrant reboots into it after this script
# (the provisioner has `reboot: true`).
set -eu
export DEBIAN_FRONTEND=noninteractive
APT="apt-get -y -qq -o DPkg::Lock::Timeout=600"

if modinfo xt_SYSRQ >/dev/null 2>&1; then
    echo "kernel: xt_SYSRQ is already built for $(uname -r)"
    exit 0
fi
# A fresh boot runs apt-daily, which holds the package lists' lock; DPkg::Lock::Timeout
# covers dpkg's lock only, so wait for those units before `apt-get update`.
for _ in $(seq 600); do
    systemctl is-active --quiet apt-daily.service apt-daily-upgrade.service || break
    sleep 1
done
$APT update || { echo "kernel: no Debian mirror reachable from this guest (apt-get update failed)" >&2; exit 1; }
arch=$(dpkg --print-architecture)
running=$(uname -r)
if apt-cache show "linux-headers-$running" >/dev/null 2>&1; then
    echo "kernel: headers for the running $running are on the mirror"
    $APT install xtables-addons-dkms "linux-headers-$running"
else
    echo "kernel: the mirror has no headers for the running $running: installing the current kernel and its headers"
fi
# The meta packages follow the mirror's current kernel; dkms builds xt_SYSRQ for every
# kernel whose headers are installed, the new one included.
$APT install "linux-image-$arch" "linux-headers-$arch" xtables-addons-dkms
newest=$(linux-version list | linux-version sort | tail -n 1)
modinfo -k "$newest" xt_SYSRQ >/dev/null 2>&1 || {
    echo "kernel: DKMS did not build xt_SYSRQ for $newest (see /var/lib/dkms/xtables-addons)" >&2; exit 1; }
echo "kernel: xt_SYSRQ built for $newest; rebooting into it"

#!/bin/sh
# Guest side, as root: install our .deb (and what it needs) with apt.
#   install-deb.sh DIR     DIR holds sysrq-appliance_*.deb
#
# xt_SYSRQ comes from xtables-addons-dkms, built for the running kernel. The locally built test
# boxes already have it (built when the box was made: no compiler runs in the guest, and their
# networks have no route out); a public box gets it from its Debian mirror here.
set -eu
DIR=${1:?usage: $0 DIR}
export DEBIAN_FRONTEND=noninteractive
set -- "$DIR"/sysrq-appliance_*.deb
[ -f "$1" ] || { echo "install-deb: no sysrq-appliance_*.deb in $DIR" >&2; exit 1; }

if ! modinfo xt_SYSRQ >/dev/null 2>&1; then
    echo "install-deb: xt_SYSRQ missing for $(uname -r): installing xtables-addons-dkms and headers"
    apt-get update -qq || { echo "install-deb: no Debian mirror reachable from this guest" >&2; exit 1; }
    apt-get install -y -qq xtables-addons-dkms "linux-headers-$(uname -r)"
    modinfo -F filename xt_SYSRQ
fi
# Without package lists (the isolated test boxes) apt resolves against what is installed and
# leaves out Recommends it cannot have; a missing Depends fails here, naming it.
apt-get install -y -qq "$@"
dpkg-query -W -f 'install-deb: ${Package} ${Version} installed\n' sysrq-appliance
rm -rf "$DIR"

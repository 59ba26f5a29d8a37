#!/bin/sh
# Guest side of the provisioning, as root: our .deb with apt, this machine's half of the pair
# into /etc/sysrq-appliance, then the systemd unit applies it.
#   install.sh DIR --start       DIR as staged by stage.sh; `systemctl enable --now sysrq-appliance`
#   install.sh DIR --no-start    the same without starting the unit (Debian 12: apply must refuse)
#
# xt_SYSRQ comes from xtables-addons-dkms, built for the running kernel: with the locally
# built test boxes (no compiler runs in the guest, and their networks lead nowhere), or by
# kernel.sh on a public box before this runs.
set -eu
DIR=${1:?usage: $0 DIR --start|--no-start}
START=${2:---start}
ETC=/etc/sysrq-appliance
export DEBIAN_FRONTEND=noninteractive
set -- "$DIR"/sysrq-appliance_*.deb
[ -f "$1" ] || { echo "install: no sysrq-appliance_*.deb in $DIR" >&2; exit 1; }
[ -s "$DIR/sysrq-appliance-etc.tar" ] || { echo "install: no pair half in $DIR" >&2; exit 1; }

# kernel.sh (public boxes) or the box build (test boxes) built xt_SYSRQ before this runs.
modinfo xt_SYSRQ >/dev/null 2>&1 ||
    echo "install: WARNING: no xt_SYSRQ for $(uname -r): the target role cannot arm (doctor says why)" >&2
# Without package lists (the isolated test boxes) apt resolves against what is installed and
# leaves out Recommends it cannot have; a missing Depends fails here, naming it.
apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$@"   # waits for apt-daily
dpkg-query -W -f 'install: ${Package} ${Version} installed\n' sysrq-appliance

if [ -f "$DIR/check-unit-in-guest.sh" ]; then   # test tooling, for the scenarios
    install -m 0755 "$DIR/check-unit-in-guest.sh" /usr/local/sbin/sysrq-appliance-check-unit
fi
if [ -d "$DIR/bench" ]; then
    install -d /usr/local/share/sysrq-appliance-bench
    install -m 0644 "$DIR"/bench/*.py /usr/local/share/sysrq-appliance-bench/
fi
install -d -m 0700 -o root -g root "$ETC"
tar -C "$ETC" --same-owner --same-permissions -xf "$DIR/sysrq-appliance-etc.tar"
rm -rf "$DIR"
echo "install: $(grep -m1 '^role:' "$ETC/appliance.yaml") installed in $ETC"

if [ "$START" = --start ]; then
    systemctl enable --now sysrq-appliance
    systemctl --no-pager --lines=5 status sysrq-appliance || true
fi

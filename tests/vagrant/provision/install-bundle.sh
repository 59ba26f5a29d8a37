#!/bin/sh
# Guest side, as root: make one half of a pair bundle this machine's /etc/sysrq-appliance,
# then let the systemd unit apply it.
#   install-bundle.sh DIR --start      install, `systemctl enable --now sysrq-appliance`
#   install-bundle.sh DIR --no-start   install only (e.g. a box where apply must refuse)
set -eu
DIR=${1:?usage: $0 DIR --start|--no-start}
START=${2:---start}
ETC=/etc/sysrq-appliance
[ -f "$DIR/appliance.yaml" ] || { echo "install-bundle: $DIR/appliance.yaml missing (was the bundle made?)" >&2; exit 1; }

# Root-owned, directories 0700 and files 0600, whatever the upload left.
chown -R root:root "$DIR"
find "$DIR" -type d -exec chmod 0700 {} +
find "$DIR" -type f -exec chmod 0600 {} +
install -d -m 0700 -o root -g root "$ETC"
cp -Rp "$DIR/." "$ETC/"
rm -rf "$DIR"
echo "install-bundle: $(grep -m1 '^role:' "$ETC/appliance.yaml") installed in $ETC"

if [ "$START" = --start ]; then
    systemctl enable --now sysrq-appliance
    systemctl --no-pager --lines=5 status sysrq-appliance || true
fi

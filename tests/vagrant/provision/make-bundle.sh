#!/bin/bash
# Host side of the provisioning (a Vagrant trigger runs it before `up`/`provision`): make both
# halves of one sender–target pair with `sysrq-appliance pair`.
#
#   make-bundle.sh BUNDLE_DIR target=ADDR sender=ADDR   make BUNDLE_DIR/{target,sender}/ unless made
#   make-bundle.sh --remove BUNDLE_DIR                  delete the bundle (keys and password)
#
# Each half is the content of /etc/sysrq-appliance on that machine. A bundle that exists is
# kept, so `vagrant provision` again installs the same keys. Extra `pair` options (e.g.
# `--allow sync,reboot`) come from SYSRQ_PAIR_ARGS. `pair` is the installed sysrq-appliance
# when the host has the package, else the one in this source tree, on Debian's python3.
set -euo pipefail
if [ "${1:-}" = --remove ]; then
    rm -rf -- "${2:?usage: $0 --remove BUNDLE_DIR}"
    exit 0
fi
BUNDLE=${1:?usage: $0 BUNDLE_DIR target=ADDR sender=ADDR}
TARGET=${2:?target=ADDR}
SENDER=${3:?sender=ADDR}
SRC=$(cd "$(dirname "$0")/../../.." && pwd)

mkdir -p -m 0700 "$BUNDLE"
exec 9>"$BUNDLE/.lock"
flock 9
full() { [ -n "$(ls -A "$BUNDLE/$1" 2>/dev/null)" ]; }
if full target && full sender; then
    echo "pair bundle exists in $BUNDLE; reusing it"
    exit 0
fi

if command -v sysrq-appliance >/dev/null; then
    pair=(sysrq-appliance pair)
else
    pair=(env PYTHONPATH="$SRC/appliance" /usr/bin/python3 -m sysrq_appliance pair)
fi
rm -rf "$BUNDLE/.new"
# shellcheck disable=SC2086  # SYSRQ_PAIR_ARGS is a list of options
"${pair[@]}" --target "$TARGET" --sender "$SENDER" --out "$BUNDLE/.new" ${SYSRQ_PAIR_ARGS:-} >/dev/null
for half in target sender; do
    rm -rf "$BUNDLE/$half"
    mv "$BUNDLE/.new/$half" "$BUNDLE/$half"
done
rmdir "$BUNDLE/.new"
echo "pair bundle made in $BUNDLE"

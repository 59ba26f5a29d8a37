#!/bin/bash
# Host side of the provisioning (a Vagrant trigger runs it before `up`, `provision`, `reload`):
# one upload directory per machine with our .deb and that machine's half of one pair bundle.
#
#   stage.sh STAGE_DIR DEB_DIR target=ADDR sender=ADDR   make STAGE_DIR/{target,sender}/
#   stage.sh --remove STAGE_DIR                          delete the keys and the password
#
# STAGE_DIR/NAME/ holds sysrq-appliance_*.deb and sysrq-appliance-etc.tar: the content of
# /etc/sysrq-appliance on NAME, as `sysrq-appliance pair` wrote it (root-owned, files 0600,
# directories 0700). A pair made once is kept, so `vagrant provision` again installs the same
# keys; the .deb is refreshed every time. Extra `pair` options (e.g. `--allow sync,reboot`)
# come from SYSRQ_PAIR_ARGS. `pair` is the host's sysrq-appliance if it has the package, else
# the one in this source tree, on Debian's python3.
set -euo pipefail
if [ "${1:-}" = --remove ]; then
    # The secrets go; the empty per-machine directories stay: Vagrant checks that they exist.
    find "${2:?usage: $0 --remove STAGE_DIR}" -mindepth 2 -delete 2>/dev/null || true
    rm -rf -- "$2/pair"
    exit 0
fi
STAGE=${1:?usage: $0 STAGE_DIR DEB_DIR target=ADDR sender=ADDR}
DEB_DIR=${2:?DEB_DIR}
TARGET=${3:?target=ADDR}
SENDER=${4:?sender=ADDR}
SRC=$(cd "$(dirname "$0")/../../.." && pwd)

# What this host needs, said in one line before anything is made.
for tool in flock tar; do
    command -v "$tool" >/dev/null ||
        { echo "stage: this host needs '$tool' to stage the uploads (apt install util-linux tar)" >&2; exit 1; }
done
if ! command -v sysrq-appliance >/dev/null &&
   ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
    echo "stage: pairing needs Debian's python3 with python3-yaml on this host (apt install python3-yaml), or the sysrq-appliance package" >&2
    exit 1
fi

mkdir -p -m 0700 "$STAGE"
exec 9>"$STAGE/.lock"
flock 9     # the trigger runs once per machine, possibly at the same time

if [ ! -s "$STAGE/pair/target/appliance.yaml" ] || [ ! -s "$STAGE/pair/sender/appliance.yaml" ]; then
    if command -v sysrq-appliance >/dev/null; then
        pair=(sysrq-appliance pair)
    else
        pair=(env PYTHONPATH="$SRC/appliance" /usr/bin/python3 -m sysrq_appliance pair)
    fi
    rm -rf "$STAGE/pair"
    # shellcheck disable=SC2086  # SYSRQ_PAIR_ARGS is a list of options
    "${pair[@]}" --target "$TARGET" --sender "$SENDER" --out "$STAGE/pair" ${SYSRQ_PAIR_ARGS:-} >/dev/null
    echo "stage: pair made in $STAGE/pair"
fi
for half in target sender; do
    mkdir -p -m 0700 "$STAGE/$half"
    rm -f "$STAGE/$half"/*.deb
    cp "$DEB_DIR"/sysrq-appliance_*.deb "$STAGE/$half/"
    tar -C "$STAGE/pair/$half" --owner=0 --group=0 --numeric-owner -cf "$STAGE/$half/sysrq-appliance-etc.tar" .
    # The package tier's check of the unit under systemd, run by the scenarios after a reboot.
    cp "$SRC/tests/package/check-unit-in-guest.sh" "$STAGE/$half/"
    # The benchmarks that need a kernel with ESP run in the guests too (make bench-guest).
    mkdir -p "$STAGE/$half/bench" && cp "$SRC"/bench/*.py "$STAGE/$half/bench/"
    chmod 0600 "$STAGE/$half/sysrq-appliance-etc.tar"
done
echo "stage: $(cd "$STAGE/target" && echo *.deb) and each machine's half staged in $STAGE"

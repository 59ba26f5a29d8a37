#!/bin/bash
# Host side of fleet.scn: render a fleet inventory here, roll it out with ansible-playbook
# (Debian's ansible, the repository's role) over the management network, print the recap.
#
#   fleet-rollout.sh INVENTORY
#
# The halves go to $SYSRQ_STAGE_DIR/fleet (under /run: they hold keys and passwords), so a
# second run finds and keeps them. The machines are the Ansible hosts named in the inventory
# (sender, target, target2), reached through Vagrant's ssh config in $SYSRQ_RUN_DIR; the
# package comes from $SYSRQ_DEB_DIR; `fleet render` is the one in this source tree (the code
# under test, whatever the host has installed).
set -euo pipefail
INVENTORY=${1:?usage: $0 INVENTORY}
SRC=$(cd "$(dirname "$0")/../../.." && pwd)
RUN_DIR=${SYSRQ_RUN_DIR:?run by tests/vagrant/run.sh}
OUT=${SYSRQ_STAGE_DIR:?run by tests/vagrant/run.sh}/fleet
debs=("${SYSRQ_DEB_DIR:?}"/sysrq-appliance_*.deb)
[ -f "${debs[-1]}" ] || { echo "fleet-rollout: no sysrq-appliance_*.deb in $SYSRQ_DEB_DIR" >&2; exit 1; }

env PYTHONPATH="$SRC/appliance" /usr/bin/python3 -m sysrq_appliance fleet render "$INVENTORY" \
    --out "$OUT"

hosts=$(/usr/bin/python3 -c 'import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
print("\n".join(h["name"] for h in d["admins"] + d["targets"]))' "$INVENTORY")
mkdir -p -m 0700 "$RUN_DIR/ansible"
{
    echo "[sysrq_fleet]"
    echo "$hosts"
    echo "[sysrq_fleet:vars]"
    echo "ansible_ssh_common_args='-F $RUN_DIR/ssh-config'"
    echo "ansible_python_interpreter=/usr/bin/python3"
} >"$RUN_DIR/ansible/hosts.ini"
cat >"$RUN_DIR/ansible/fleet.yml" <<'PLAY'
- name: sysrq-appliance on the fleet
  hosts: sysrq_fleet
  become: true
  gather_facts: false
  roles: [sysrq_appliance]
PLAY
export ANSIBLE_ROLES_PATH=$SRC/ansible/roles ANSIBLE_HOST_KEY_CHECKING=False \
    ANSIBLE_PIPELINING=True ANSIBLE_NOCOLOR=1 ANSIBLE_FORKS=5 ANSIBLE_RETRY_FILES_ENABLED=0 \
    ANSIBLE_LOCAL_TEMP=$RUN_DIR/ansible/tmp
exec ansible-playbook -i "$RUN_DIR/ansible/hosts.ini" "$RUN_DIR/ansible/fleet.yml" \
    -e "sysrq_appliance_fleet_dir=$OUT" -e "sysrq_appliance_deb=${debs[-1]}"

#!/bin/bash
# mmdebstrap hooks of build-box.sh; they run on the build host with the chroot as $2.
#   box-hooks.sh setup ROOT       before any package is installed
#   box-hooks.sh customize ROOT   after all packages are installed
# Environment from build-box.sh: SYSRQ_BOX_PUBKEY (Vagrant's insecure public key),
# SYSRQ_BOX_RELEASE, SYSRQ_BOX_PURGE (the build-only packages).
set -euo pipefail
STEP=$1
R=$2
say() { echo "box-hooks: $*"; }
. "$(dirname "$0")/../lib/debian-image.sh"    # in_root, installed, small_root, xt_sysrq_for

setup() { small_root sysrq-box; }

vagrant_user() {
    in_root useradd --create-home --shell /bin/bash --user-group vagrant
    echo 'vagrant:vagrant' | in_root chpasswd
    install -d -m 0700 "$R/home/vagrant/.ssh"
    install -m 0600 "$SYSRQ_BOX_PUBKEY" "$R/home/vagrant/.ssh/authorized_keys"
    in_root chown -R vagrant:vagrant /home/vagrant/.ssh
    echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$R/etc/sudoers.d/vagrant"
    chmod 0440 "$R/etc/sudoers.d/vagrant"
    # Host keys are made at each VM's first boot, not shared by every VM of the box; Ed25519
    # and ECDSA only (an RSA key takes seconds to make under TCG).
    rm -f "$R"/etc/ssh/ssh_host_*
    printf '%s\n' 'UseDNS no' 'HostKey /etc/ssh/ssh_host_ed25519_key' 'HostKey /etc/ssh/ssh_host_ecdsa_key' \
        >"$R/etc/ssh/sshd_config.d/vagrant.conf"
    mkdir -p "$R/etc/systemd/system/ssh.service.d"
    cat >"$R/etc/systemd/system/ssh.service.d/sysrq-box-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'for t in ed25519 ecdsa; do k=/etc/ssh/ssh_host_$${t}_key; [ -s $$k ] || ssh-keygen -q -t $$t -N "" -f $$k; done'
ExecStartPre=/usr/sbin/sshd -t
EOF
}

system_identity() {
    echo sysrq-box >"$R/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tsysrq-box\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$R/etc/hosts"
    # Empty machine-id: each VM makes its own at first boot (DHCP DUIDs, journal).
    : >"$R/etc/machine-id"
    rm -f "$R/var/lib/dbus/machine-id"
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$R/etc/fstab"
    # Not the build host's resolv.conf (mmdebstrap copies it in for the build). The test
    # networks have no DNS server at all; names the tests use are in /etc/hosts.
    rm -f "$R/etc/resolv.conf"
    printf '# sysrq-appliance test box: isolated networks, no DNS\noptions timeout:1 attempts:1\n' \
        >"$R/etc/resolv.conf"
}

networking() {
    # DHCP on every ethernet NIC; Vagrant adds 50-vagrant-ethN.network for static addresses.
    mkdir -p "$R/etc/systemd/network"
    printf '%s\n' '[Match]' 'Name=eth*' '[Network]' 'DHCP=ipv4' 'LinkLocalAddressing=no' \
        'IPv6AcceptRA=no' '[DHCPv4]' 'ClientIdentifier=mac' \
        >"$R/etc/systemd/network/80-sysrq-box-dhcp.network"
    in_root systemctl enable --quiet systemd-networkd.service ssh.service
    # Nothing that waits for a network that never comes, or that wakes up to reach a mirror.
    local unit
    for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer; do
        in_root systemctl mask --quiet "$unit"
    done
}

customize() {
    local kver
    kver=$(root_kernel)
    echo "$kver" >"$R/etc/sysrq-box-kernel"
    say "release $SYSRQ_BOX_RELEASE, kernel $kver"
    # shellcheck disable=SC2086  # a list of package names
    xt_sysrq_for "$kver" $SYSRQ_BOX_PURGE
    vagrant_user
    system_identity
    networking
    # Apt has no mirror to reach from the guests: drop the lists, so `apt install ./x.deb`
    # resolves against what is installed and skips Recommends it cannot have.
    in_root apt-get clean
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/*.log "$R"/tmp/*
}

case "$STEP" in
    setup) setup ;;
    customize) customize ;;
    *) echo "usage: $0 setup|customize ROOT" >&2; exit 2 ;;
esac

#!/bin/bash
# mmdebstrap hooks of build-box.sh; they run on the build host with the chroot as $2.
#   box-hooks.sh setup ROOT       before any package is installed
#   box-hooks.sh customize ROOT   after all packages are installed
# Environment from build-box.sh: SYSRQ_BOX_PUBKEY (Vagrant's insecure public key),
# SYSRQ_BOX_RELEASE, SYSRQ_BOX_PURGE (the build-only packages), SYSRQ_BOX_STALE=1 for the
# --stale-kernel box.
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
    printf '%s / ext4 rw,errors=remount-ro 0 1\n' "$ROOT_DEVICE" >"$R/etc/fstab"
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

# The --stale-kernel box: the kernel before the one linux-image-amd64 brought, without its
# meta package; a local repository with what kernel.sh installs (downloaded by this root's
# own apt, so exactly what the guest will ask for), as the guest's only package source; GRUB.
MIRROR=/srv/sysrq-box-mirror
stale_kernel() {
    local current=$1 old
    old=$(in_root apt-cache pkgnames linux-image- | sed -n 's/^linux-image-\([0-9][^-]*-amd64\)$/\1/p' |
          { cat; echo "$current"; } | sort -uV | grep -B1 -Fx "$current" | grep -vFx "$current" || true)
    [ -n "$old" ] || { say "the mirror has no kernel older than $current to run"; exit 1; }
    in_root apt-get install -y -qq "linux-image-$old" >/dev/null
    in_root apt-get purge -y -qq linux-image-amd64 "linux-image-$current" >/dev/null
    mkdir -p "$R$MIRROR/partial"
    in_root apt-get install -y -qq --download-only -o "Dir::Cache::Archives=$MIRROR" \
        linux-image-amd64 linux-headers-amd64 xtables-addons-dkms >/dev/null
    rm -rf "$R$MIRROR/partial" "$R$MIRROR/lock"
    ! ls "$R$MIRROR" | grep -q "^linux-headers-$old" || { say "headers for $old in the local mirror"; exit 1; }
    (cd "$R$MIRROR" && apt-ftparchive packages . >Packages)
    rm -f "$R/etc/apt/sources.list" "$R"/etc/apt/sources.list.d/*
    echo "deb [trusted=yes] file:$MIRROR ./" >"$R/etc/apt/sources.list.d/sysrq-box-mirror.list"
    say "kernel $old (headers not in the box's mirror); the mirror: $(ls "$R$MIRROR" | grep -c '\.deb$') packages, $(du -sh "$R$MIRROR" | cut -f1), kernel $(ls "$R$MIRROR" | sed -n 's/^linux-image-\([0-9][^_]*\)_.*/\1/p')"
    # GRUB boots /vmlinuz and /initrd.img, which Debian's kernel packages point at the newest
    # kernel installed; its core image reads this configuration from the first partition.
    [ "$(readlink "$R/vmlinuz")" = "boot/vmlinuz-$old" ] || { say "/vmlinuz is not $old: $(readlink "$R/vmlinuz")"; exit 1; }
    mkdir -p "$R/boot/grub"
    cp -r "$R/usr/lib/grub/i386-pc" "$R/boot/grub/"
    in_root grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,msdos1)/boot/grub' \
        biosdisk part_msdos ext2 normal linux serial
    cat >"$R/boot/grub/grub.cfg" <<'EOF'
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "Debian (newest kernel)" {
    linux /vmlinuz root=/dev/vda1 rw console=ttyS0,115200n8 net.ifnames=0 biosdevname=0
    initrd /initrd.img
}
EOF
    echo "$old" >"$R/etc/sysrq-box-kernel"
}

customize() {
    local kver
    kver=$(root_kernel)
    echo "$kver" >"$R/etc/sysrq-box-kernel"
    say "release $SYSRQ_BOX_RELEASE, kernel $kver"
    if [ -n "${SYSRQ_BOX_STALE:-}" ]; then
        ROOT_DEVICE=/dev/vda1
        stale_kernel "$kver"
    else
        ROOT_DEVICE=/dev/vda
        # shellcheck disable=SC2086  # a list of package names
        xt_sysrq_for "$kver" $SYSRQ_BOX_PURGE
    fi
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

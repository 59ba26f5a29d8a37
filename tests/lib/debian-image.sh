# The Debian roots the QEMU tiers boot (the two-VM box, the real-kernel image), sourced by
# their build scripts and mmdebstrap hooks: one recipe for the root, the small initramfs and
# xt_SYSRQ built by DKMS in the chroot (no compiler ever runs under TCG).
# shellcheck shell=bash

# mmdebstrap RELEASE into ROOT with HOOKS (called as `HOOKS setup|customize ROOT`), from the
# mirror this machine's apt uses unless SYSRQ_DEBIAN_MIRROR / SYSRQ_DEBIAN_SECURITY_MIRROR
# say otherwise. The caller exports what its hooks read. Output goes to LOG.
#   debian_root RELEASE ROOT LOG HOOKS PACKAGE...
debian_root() {
    local release=$1 root=$2 logfile=$3 hooks=$4 mirror security include
    shift 4
    local lib_dir
    lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    mirror=${SYSRQ_DEBIAN_MIRROR:-$("$lib_dir/../debian-mirror.sh" archive)}
    security=${SYSRQ_DEBIAN_SECURITY_MIRROR:-$("$lib_dir/../debian-mirror.sh" security)}
    include=$(IFS=,; echo "$*")
    mmdebstrap --variant=minbase --mode=root --include="$include" \
        --setup-hook="$hooks setup \"\$1\"" --customize-hook="$hooks customize \"\$1\"" \
        "$release" "$root" "deb $mirror $release main" "deb $mirror $release-updates main" \
        "deb $security $release-security main" >"$logfile" 2>&1
}

# --- for the hooks (R is the chroot, say() the hook's log line) ---------------------------

in_root() { chroot "$R" env DEBIAN_FRONTEND=noninteractive "$@"; }
installed() { in_root dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" {print $2}'; }

# Before any package: an initramfs that mounts a virtio disk (these roots only ever boot
# under QEMU), written before the kernel so its first initramfs is already this one; no
# documentation, manual pages or translations.
#   small_root NAME
small_root() {
    mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/usr/share/initramfs-tools/modules.d" \
        "$R/etc/dpkg/dpkg.cfg.d"
    printf 'MODULES=list\nCOMPRESS=zstd\n' >"$R/etc/initramfs-tools/conf.d/$1"
    printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >"$R/usr/share/initramfs-tools/modules.d/$1"
    printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/locale/*' \
        'path-exclude=/usr/share/info/*' >"$R/etc/dpkg/dpkg.cfg.d/$1-nodoc"
}

# The newest kernel installed in the chroot.
root_kernel() { ls "$R/lib/modules" | sort -V | tail -1; }

# xt_SYSRQ and the other xtables-addons modules built by DKMS for KVER (not for the build
# host's kernel: `uname -r` in the chroot is the host's), kept where purging the DKMS package
# leaves them; then DKMS, the headers, the compilers and the BUILD_ONLY packages purged.
#   xt_sysrq_for KVER BUILD_ONLY...
xt_sysrq_for() {
    local kver=$1 compilers left
    shift
    in_root dkms autoinstall -k "$kver" >/dev/null
    ls "$R/lib/modules/$kver/updates/dkms/" 2>/dev/null | grep -q '^xt_SYSRQ\.ko' \
        || { in_root dkms status; say "xt_SYSRQ was not built for $kver"; exit 1; }
    mkdir -p "$R/lib/modules/$kver/updates/xtables-addons"
    cp -a "$R/lib/modules/$kver/updates/dkms/." "$R/lib/modules/$kver/updates/xtables-addons/"
    # The compiler and make stay behind otherwise (apt keeps what something recommends).
    compilers=$(installed | grep -E '^((gcc|cpp)(-[0-9]+)?(-x86-64-linux-gnu)?|make|dpkg-dev)$' || true)
    # shellcheck disable=SC2086  # lists of package names
    in_root apt-get purge -y -qq --autoremove -o APT::AutoRemove::RecommendsImportant=false \
        "$@" dkms "linux-headers-$kver" $compilers >/dev/null
    in_root depmod -a "$kver"
    left=$(installed | grep -E '^(gcc-[0-9]+$|gcc$|cpp|make$|dkms|linux-headers|linux-kbuild|linux-compiler)' || true)
    [ -z "$left" ] || { say "still installed after the purge: $(echo $left)"; exit 1; }
    say "kernel $kver; xt_SYSRQ: $(in_root modinfo -k "$kver" -F filename xt_SYSRQ)"
    say "xtables-addons-common $(in_root dpkg-query -W -f '${Version}' xtables-addons-common)"
}

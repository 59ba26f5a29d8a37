#!/bin/bash
# The libvirt side of the two-VM test on a machine without systemd or udev (CI, dev machine).
#
#   tests/vagrant/libvirt.sh start    daemons (if none run), /dev/kvm mode, our pool and networks
#   tests/vagrant/libvirt.sh stop     undo exactly what `start` did, recorded in $SYSRQ_STATE
#   tests/vagrant/libvirt.sh status   what is recorded
#
# `start` records every daemon it starts (PID), every object it creates (name and UUID) and every
# mode it changes; `stop` removes only those. A daemon that was already running is used and left
# running. Both networks are isolated: no <forward> element (no NAT, no routing), no DNS server;
# the management network hands out addresses by DHCP without a default route.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

POOL_DIR=${SYSRQ_POOL_DIR:-/var/tmp/$SYSRQ_POOL-pool}
LOG_DIR=${SYSRQ_LOG_DIR:-/var/tmp/$SYSRQ_LIBVIRT_PREFIX-libvirt-logs}   # daemons' output, kept
DAEMONS=(virtlogd virtlockd libvirtd)

virsh_q() { virsh -q "$@"; }

# ---------------------------------------------------------------------------- daemons
start_daemons() {
    if [ "$(ps -p 1 -o comm=)" = systemd ]; then
        if ! systemctl -q is-active libvirtd.service; then
            systemctl start libvirtd.service
            echo libvirtd.service >"$SYSRQ_STATE/systemd-unit"
            log "started libvirtd.service"
        fi
        return
    fi
    local d
    for d in "${DAEMONS[@]}"; do
        if pgrep -x "$d" >/dev/null; then
            log "$d already runs; using it"
            continue
        fi
        [ "$d" = libvirtd ] && sleep 0.5    # its log and lock daemons first
        setsid "/usr/sbin/$d" </dev/null >"$LOG_DIR/$d.log" 2>&1 &
        echo $! >"$SYSRQ_STATE/$d.pid"
        log "started $d (pid $!)"
    done
    local i
    for i in $(seq 60); do
        virsh_q version >/dev/null 2>&1 && return
        sleep 0.5
    done
    die "libvirtd does not answer; see $LOG_DIR/libvirtd.log"
}

stop_daemons() {
    if [ -s "$SYSRQ_STATE/systemd-unit" ]; then
        systemctl stop "$(cat "$SYSRQ_STATE/systemd-unit")"
        rm -f "$SYSRQ_STATE/systemd-unit"
    fi
    local d running
    if [ -s "$SYSRQ_STATE/libvirtd.pid" ] && virsh_q version >/dev/null 2>&1; then
        running=$(virsh_q list --name | sed '/^$/d')
        if [ -n "$running" ]; then
            # Killing libvirtd would orphan these qemu processes; they are not ours to kill.
            die "not stopping libvirtd: domains still run: $running"
        fi
    fi
    for d in libvirtd virtlockd virtlogd; do
        kill_recorded "$SYSRQ_STATE/$d.pid" "/usr/sbin/$d"
    done
}

# ---------------------------------------------------------------------------- /dev/kvm
# Without udev /dev/kvm is 0600 root:root; libvirt then finds KVM "not usable by the qemu user"
# and re-probes QEMU on every API call (minutes per `vagrant up`). Do what Debian's udev rule does.
fix_kvm_mode() {
    [ -c /dev/kvm ] || return 0
    local mode
    mode=$(stat -c '%a %g' /dev/kvm)
    if [ "$mode" != "660 $(getent group kvm | cut -d: -f3)" ]; then
        echo "$mode" >"$SYSRQ_STATE/dev-kvm.mode"
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
        log "/dev/kvm: was mode ${mode% *} gid ${mode#* }, now 0660 group kvm (restored on stop)"
    fi
}

restore_kvm_mode() {
    [ -s "$SYSRQ_STATE/dev-kvm.mode" ] || return 0
    local mode gid
    read -r mode gid <"$SYSRQ_STATE/dev-kvm.mode"
    chgrp "$gid" /dev/kvm && chmod "$mode" /dev/kvm
    log "/dev/kvm restored to mode $mode gid $gid"
    rm -f "$SYSRQ_STATE/dev-kvm.mode"
}

# ---------------------------------------------------------------------------- host firewall
# libvirt's network driver adds top-level LIBVIRT_* chains to the host's tables for every
# network and leaves them behind, empty, when the last network goes. Remove the ones that
# appeared during our run, once they are empty again.
libvirt_chains() {
    local cmd
    for cmd in iptables ip6tables; do
        command -v "$cmd-save" >/dev/null || continue
        "$cmd-save" 2>/dev/null | awk -v c="$cmd" '/^\*/ {t=substr($0,2)} /^:LIBVIRT_/ {print c, t, substr($1,2)}'
    done | sort
}

remove_new_libvirt_chains() {
    [ -f "$SYSRQ_STATE/libvirt-chains.before" ] || return 0
    local cmd table chain parent
    libvirt_chains | comm -13 "$SYSRQ_STATE/libvirt-chains.before" - | while read -r cmd table chain; do
        [ -z "$("$cmd" -t "$table" -S "$chain" | grep -v -- "^-N $chain\$")" ] || continue
        for parent in INPUT OUTPUT FORWARD PREROUTING POSTROUTING; do
            while "$cmd" -t "$table" -D "$parent" -j "$chain" 2>/dev/null; do :; done
        done
        "$cmd" -t "$table" -X "$chain" && log "removed empty chain $chain ($cmd -t $table)"
    done
    rm -f "$SYSRQ_STATE/libvirt-chains.before"
}

# ---------------------------------------------------------------------------- pool, networks
network_xml() {   # name bridge address netmask [dhcp-start dhcp-end]
    local dhcp=
    [ -n "${5:-}" ] && dhcp="<dhcp><range start='$5' end='$6'/></dhcp>"
    cat <<EOF
<network>
  <name>$1</name>
  <bridge name='$2' stp='off' delay='0'/>
  <dns enable='no'/>
  <ip address='$3' netmask='$4'>$dhcp</ip>
</network>
EOF
}

create_network() {   # name, then network_xml's arguments
    local name=$1 xml
    if virsh_q net-info "$name" >/dev/null 2>&1; then
        die "a libvirt network '$name' exists already and is not recorded as ours; remove it or set SYSRQ_LIBVIRT_PREFIX"
    fi
    xml=$SYSRQ_STATE/net-$name.xml
    network_xml "$@" >"$xml"
    virsh_q net-create "$xml" >/dev/null        # transient: gone with libvirtd's state
    virsh_q net-uuid "$name" >>"$SYSRQ_STATE/networks"
    log "created isolated network $name ($3/$4)"
}

create_pool() {
    if virsh_q pool-info "$SYSRQ_POOL" >/dev/null 2>&1; then
        die "a libvirt pool '$SYSRQ_POOL' exists already and is not recorded as ours"
    fi
    mkdir -p "$POOL_DIR"
    virsh_q pool-create-as "$SYSRQ_POOL" dir --target "$POOL_DIR" >/dev/null
    virsh_q pool-uuid "$SYSRQ_POOL" >"$SYSRQ_STATE/pool"
    echo "$POOL_DIR" >"$SYSRQ_STATE/pool-dir"
    log "created pool $SYSRQ_POOL in $POOL_DIR"
}

remove_networks_and_pool() {
    virsh_q version >/dev/null 2>&1 || return 0
    local uuid vol
    if [ -s "$SYSRQ_STATE/networks" ]; then
        while read -r uuid; do
            virsh_q net-destroy "$uuid" >/dev/null 2>&1 && log "removed network $uuid"
        done <"$SYSRQ_STATE/networks"
        rm -f "$SYSRQ_STATE/networks"
    fi
    if [ -s "$SYSRQ_STATE/pool" ]; then
        uuid=$(cat "$SYSRQ_STATE/pool")
        if virsh_q pool-info "$uuid" >/dev/null 2>&1; then
            for vol in $(virsh_q vol-list "$uuid" | awk '{print $1}'); do
                virsh_q vol-delete --pool "$uuid" "$vol" >/dev/null && log "deleted volume $vol"
            done
            virsh_q pool-destroy "$uuid" >/dev/null && log "removed pool $uuid"
        fi
        rmdir "$(cat "$SYSRQ_STATE/pool-dir")" 2>/dev/null || true
        rm -f "$SYSRQ_STATE/pool" "$SYSRQ_STATE/pool-dir"
    fi
}

# ---------------------------------------------------------------------------- commands
mask_of() { python3 -c 'import ipaddress,sys; n=ipaddress.ip_network(sys.argv[1]); print(n.netmask, n[1], n[2], n[-2])' "$1"; }

start() {
    need_root
    apt_ensure libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base
    if [ -d "$SYSRQ_STATE" ] && [ -n "$(ls -A "$SYSRQ_STATE")" ]; then
        if [ -s "$SYSRQ_STATE/networks" ] && virsh_q version >/dev/null 2>&1 &&
           [ -n "$(virsh_q list --name | sed '/^$/d')" ]; then
            die "another two-VM run is up (domains run, state in $SYSRQ_STATE); take it down first"
        fi
        log "leftovers of an earlier run in $SYSRQ_STATE: cleaning them up first"
        stop
    fi
    mkdir -p "$SYSRQ_STATE" "$LOG_DIR"
    cat /proc/sys/net/ipv4/ip_forward >"$SYSRQ_STATE/ip_forward"
    libvirt_chains >"$SYSRQ_STATE/libvirt-chains.before"
    fix_kvm_mode
    start_daemons
    # A libvirtd that has just started may not have probed QEMU yet (seen right after a stop).
    local i
    for i in $(seq 30); do
        virsh_q capabilities | grep -q "<domain type='qemu'" && break
        [ "$i" = 30 ] && die "libvirt offers no qemu (TCG) domains"
        sleep 1
    done
    create_pool
    local mask first second last
    read -r mask first second last < <(mask_of "$SYSRQ_MGMT_SUBNET")
    create_network "$SYSRQ_MGMT_NETWORK" sysrq-mgmt "$first" "$mask" "$second" "$last"
    create_network "$SYSRQ_TUNNEL_NETWORK" sysrq-tun "$SYSRQ_TUNNEL_HOST_IP" \
        "$(mask_of "$SYSRQ_TUNNEL_SUBNET" | cut -d' ' -f1)"
    # A libvirtd we started may also have autostarted a network of the host's (e.g. Debian's
    # NAT network "default"): refuse to run next to one that forwards.
    local net
    for net in $(virsh_q net-list --name); do
        if virsh_q net-dumpxml "$net" | grep -q '<forward'; then
            die "libvirt network '$net' forwards traffic out of the host; the test needs isolated networks only (virsh net-destroy $net)"
        fi
    done
}

stop() {
    remove_networks_and_pool
    stop_daemons
    restore_kvm_mode
    remove_new_libvirt_chains
    if [ -s "$SYSRQ_STATE/ip_forward" ]; then
        if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$(cat "$SYSRQ_STATE/ip_forward")" ]; then
            cat "$SYSRQ_STATE/ip_forward" >/proc/sys/net/ipv4/ip_forward
            log "restored net.ipv4.ip_forward"
        fi
        rm -f "$SYSRQ_STATE/ip_forward"
    fi
    rm -f "$SYSRQ_STATE"/net-*.xml
    rmdir "$SYSRQ_STATE" 2>/dev/null || log "left in $SYSRQ_STATE: $(ls "$SYSRQ_STATE")"
}

status() {
    [ -d "$SYSRQ_STATE" ] || { echo "nothing recorded ($SYSRQ_STATE absent)"; return; }
    local f
    for f in "$SYSRQ_STATE"/*; do
        [ -f "$f" ] && case "$f" in *.xml|*.before) ;; *) echo "${f##*/}: $(tr '\n' ' ' <"$f")" ;; esac
    done
}

case "${1:-}" in
    start) start ;;
    stop)
        need_root
        if [ -d "$SYSRQ_STATE" ]; then stop; else log "nothing to stop"; fi ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

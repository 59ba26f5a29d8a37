# Shared by the two-VM harness scripts (sourced, not run).
#
# Where things live (all outside the repository):
#   $SYSRQ_CACHE          built boxes and Vagrant's box store, kept between runs
#   $SYSRQ_STATE          what libvirt.sh started or created (PIDs, names, modes), one run
#   $SYSRQ_RUN_DIR        one harness run: logs, serial consoles, pair bundle, .vagrant
# shellcheck shell=bash

SYSRQ_CACHE=${SYSRQ_CACHE:-/var/cache/sysrq-appliance}
SYSRQ_STATE=${SYSRQ_STATE:-/run/sysrq-appliance-vagrant}

# Names of the libvirt objects we create. Everything of ours starts with this prefix, and
# cleanup only ever touches objects whose exact name or UUID we recorded ourselves.
SYSRQ_LIBVIRT_PREFIX=${SYSRQ_LIBVIRT_PREFIX:-sysrq-appliance}
SYSRQ_POOL=${SYSRQ_POOL:-$SYSRQ_LIBVIRT_PREFIX}
SYSRQ_MGMT_NETWORK=${SYSRQ_MGMT_NETWORK:-$SYSRQ_LIBVIRT_PREFIX-mgmt}
SYSRQ_MGMT_SUBNET=${SYSRQ_MGMT_SUBNET:-192.168.125.0/24}
SYSRQ_TUNNEL_NETWORK=${SYSRQ_TUNNEL_NETWORK:-$SYSRQ_LIBVIRT_PREFIX-tunnel}
SYSRQ_TUNNEL_SUBNET=${SYSRQ_TUNNEL_SUBNET:-10.10.25.0/24}
SYSRQ_TUNNEL_HOST_IP=${SYSRQ_TUNNEL_HOST_IP:-10.10.25.254}

export LIBVIRT_DEFAULT_URI=qemu:///system

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it starts libvirt and writes under /var/cache)"; }

# Install Debian packages that are missing; apt only when something is missing.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    log "installing with apt: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Kill exactly one PID we started, after checking it still is the program we started
# (a recycled PID must never be killed). Waits up to 20 s, then SIGKILL.
kill_recorded() {
    local pidfile=$1 exe=$2 pid i
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe")" = "$exe" ]; then
        kill "$pid"
        for i in $(seq 40); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
        [ -d "/proc/$pid" ] && { log "$exe ($pid) ignored SIGTERM, sending SIGKILL"; kill -9 "$pid"; }
        log "stopped ${exe##*/} (pid $pid)"
    fi
    rm -f "$pidfile"
}

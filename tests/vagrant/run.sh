#!/bin/bash
# The two-VM test on this machine kind: the root Vagrantfile on vagrant-libvirt + QEMU TCG.
#
#   tests/vagrant/run.sh RELEASE          all of it: up, isolation gate, scenarios, down
#   tests/vagrant/run.sh RELEASE all SCN...   the same with these scenario files
#   tests/vagrant/run.sh RELEASE up       build/reuse the box, start libvirt, bring both VMs up
#   tests/vagrant/run.sh RELEASE test [SCN...]   isolation gate + scenarios on running VMs
#   tests/vagrant/run.sh RELEASE each SCN...  up, then each file alone on the freshly
#                                         provisioned pair (libvirt snapshot, reverted between files), down
#   tests/vagrant/run.sh RELEASE down     destroy the VMs, our networks and pool, our daemons
#
# RELEASE is the sender's: trixie (Debian 13) or bookworm (Debian 12). The target is always
# Debian 13: a Debian 12 target cannot work (its xt_SYSRQ 3.23 panics the kernel), so the
# bookworm run is a Debian 12 admin host in front of a Debian 13 target, and then of two:
# the fleet run (fleet.scn, a third machine). Its first target is made from the stale-kernel
# box (build-box.sh --stale-kernel) and provisioned the way a workstation's public box is:
# kernel.sh brings its kernel and headers to the current ones, DKMS builds xt_SYSRQ, Vagrant
# reboots it. Run as root. Apt installs what is missing. The full run always ends with
# `down`, also on failure or interrupt. The product is provisioned from
# $SYSRQ_DEB_DIR/sysrq-appliance_*.deb (default: out/ of this repository); without it the VMs
# come up bare and only the infrastructure scenarios mean anything.
# Logs, serial consoles and timings: $SYSRQ_RUN_DIR (default /var/tmp/sysrq-appliance-vagrant/RELEASE).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"

RELEASE=${1:-}
ACTION=${2:-all}
case "$RELEASE" in trixie|bookworm) ;; *) sed -n '2,22p' "$0" >&2; exit 2 ;; esac
case "$ACTION" in all|each|up|test|down) ;; *) sed -n '2,22p' "$0" >&2; exit 2 ;; esac
shift $(($# < 2 ? $# : 2))

RUN_DIR=${SYSRQ_RUN_DIR:-/var/tmp/sysrq-appliance-vagrant/$RELEASE}
MACHINES=(sender target)
LATE=()   # machines that boot in the background while the first scenarios run
LATE_WAIT=1200   # seconds their `vagrant up` may take (about 110 s here)
REBOOT_STALL=240   # seconds of Vagrant waiting for a reboot before reboot_watchdog steps in
# The bookworm run is the fleet run too: a second Debian 13 target that gets only the box;
# fleet.scn renders an inventory here and rolls it out with ansible-playbook over the
# management network (cheaper than a run of its own: the Debian 12 box is shared). It boots
# while bookworm.scn runs: those checks are one ssh command at a time and leave a core idle,
# where booting it beside the other two would slow all three.
TARGET_RELEASE=trixie
TARGET_BOX_ARGS=("$TARGET_RELEASE")
if [ "$RELEASE" = bookworm ]; then
    LATE=(target2)
    export SYSRQ_FLEET=1
    TARGET_BOX_ARGS=("$TARGET_RELEASE" --stale-kernel)
    export SYSRQ_KERNEL_MACHINES=target
fi

# ----------------------------------------------------------------------------- environment
# Everything the Vagrantfile and Vagrant read. Vagrant never contacts anything outside: no
# version checkpoint, no box update check, boxes only from the local cache.
export VAGRANT_HOME=$SYSRQ_CACHE/vagrant.d
export VAGRANT_CWD=$REPO
export VAGRANT_DOTFILE_PATH=$RUN_DIR/dot-vagrant
export VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export SYSRQ_TCG=1
export SYSRQ_SERIAL_DIR=$RUN_DIR/serial
# The pair's keys and passwords: under /run (root's), not the 1777 /var/tmp, on whose path
# sysrq-appliance rightly refuses to write secrets.
export SYSRQ_STAGE_DIR=${SYSRQ_STAGE_DIR:-/run/sysrq-appliance-stage/$RELEASE}
export SYSRQ_LOG_DIR=$RUN_DIR/libvirt
export SYSRQ_DEB_DIR=${SYSRQ_DEB_DIR:-$REPO/out}
export SYSRQ_POOL SYSRQ_MGMT_NETWORK SYSRQ_MGMT_SUBNET SYSRQ_TUNNEL_NETWORK SYSRQ_TUNNEL_HOST_IP
# The rescue drills need thaw (j: the signal bit) and the blocked-task dump (w: dump).
export SYSRQ_PAIR_ARGS=${SYSRQ_PAIR_ARGS:---allow sync,remount,reboot,signal,dump}

vagrant() { command vagrant "$@"; }
# The boxes these machines are made from (recorded by `up`): `vagrant up` in @start and
# `vagrant destroy` must see the same, never a default one.
use_boxes() {
    read -r SYSRQ_SENDER_BOX SYSRQ_TARGET_BOX SYSRQ_TARGET2_BOX <"$RUN_DIR/box"
    SYSRQ_BOX=$SYSRQ_SENDER_BOX
    export SYSRQ_BOX SYSRQ_SENDER_BOX SYSRQ_TARGET_BOX SYSRQ_TARGET2_BOX
}
stamp() { local line; while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done; }
timing() { echo "$1 $2" >>"$RUN_DIR/timings"; log "TIME $1: $2 s"; }

# ----------------------------------------------------------------------------- up
box_name() { local f=${1##*/}; f=${f%.box}; echo "sysrq-appliance/${f#sysrq-appliance-}"; }

# Build (or reuse) a box (build-box.sh ARGS), add it to Vagrant's store; prints its name.
add_box() {
    local box name old flavour
    box=$("$HERE/build-box.sh" "$@" | tail -1)
    [ -s "$box" ] || { log "ERROR: build-box.sh $* made no box"; return 1; }
    name=$(box_name "$box")
    flavour=${name%-*}
    if ! vagrant box list --machine-readable | grep -q ",box-name,$name\$"; then
        log "adding box $name"
        vagrant box add --name "$name" "$box" >"$RUN_DIR/box-add.log"
    fi
    # Older builds of this flavour in Vagrant's store are of no use any more.
    for old in $(vagrant box list --machine-readable | awk -F, '$3 == "box-name" {print $4}' |
                 grep -Ex "$flavour-[0-9a-f]{12}" | grep -vx "$name" || true); do
        vagrant box remove --force --all "$old" >/dev/null && log "removed old box $old"
    done
    echo "$name"
}

up() {
    need_root
    apt_ensure vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
        qemu-utils mmdebstrap dnsmasq-base e2fsprogs openssh-client python3 ansible procps iproute2
    [ -s "$RUN_DIR/box" ] && { log "VMs of an earlier run are recorded in $RUN_DIR: taking them down first"; down; }
    rm -rf "$RUN_DIR"
    mkdir -p "$RUN_DIR" "$SYSRQ_SERIAL_DIR" "$SYSRQ_LOG_DIR"
    local t spec
    local -A boxes=()   # build-box.sh arguments -> the box's name (each added once)
    t=$(now)
    # A failed build must stop the run, never leave a machine to fall back to another
    # release's box.
    for spec in "$RELEASE" "${TARGET_BOX_ARGS[*]}" "$TARGET_RELEASE"; do
        [ -z "${boxes[$spec]:-}" ] || continue
        # shellcheck disable=SC2086 # a spec is build-box.sh's arguments
        boxes[$spec]=$(add_box $spec) && [ -n "${boxes[$spec]}" ] || die "no $spec box"
    done
    printf '%s %s %s\n' "${boxes[$RELEASE]}" "${boxes[${TARGET_BOX_ARGS[*]}]}" \
        "${boxes[$TARGET_RELEASE]}" >"$RUN_DIR/box"
    use_boxes; timing box $(($(now) - t))
    t=$(now); "$HERE/libvirt.sh" start; timing libvirt-start $(($(now) - t))
    if ! ls "$SYSRQ_DEB_DIR"/sysrq-appliance_*.deb >/dev/null 2>&1; then
        log "no sysrq-appliance_*.deb in $SYSRQ_DEB_DIR: the VMs come up without our package"
    fi
    log "vagrant up (log: $RUN_DIR/vagrant-up.log)"
    t=$(now)
    : >"$RUN_DIR/vagrant-up.log"
    reboot_watchdog "$RUN_DIR/vagrant-up.log" &
    local watchdog=$!
    if ! vagrant up --no-tty --provider=libvirt "${MACHINES[@]}" 2>&1 | stamp >"$RUN_DIR/vagrant-up.log"; then
        stop_pid_tree "$watchdog"
        tail -30 "$RUN_DIR/vagrant-up.log" >&2
        die "vagrant up failed"
    fi
    stop_pid_tree "$watchdog"
    timing vagrant-up $(($(now) - t))
    vagrant ssh-config "${MACHINES[@]}" >"$RUN_DIR/ssh-config"
    guest_memory
    start_late
}

# Vagrant's wait for a kernel machine's reboot (`reboot: true`) sometimes hangs for good: it
# waits on an ssh connection opened before the reboot, which the guest forgot, with nothing
# to send (seen after 7 and after 11 minutes; a reboot takes 1-2 here). Once the log has said
# "Waiting for machine to reboot..." for REBOOT_STALL seconds and nothing since, that guest's
# ssh connections are aborted (ss -K): Vagrant takes it as the reboot's disconnect and
# connects again. Errors here are never the run's: it only watches.
reboot_watchdog() {
    set +e
    local log=$1 size last=-1 since m ip
    since=$(now)
    while sleep 10 && kill -0 $$ 2>/dev/null; do   # never outlives run.sh
        size=$(stat -c %s "$log" 2>/dev/null) || continue
        if [ "$size" != "$last" ]; then last=$size since=$(now); continue; fi
        m=$(tail -n 1 "$log" | sed -n 's/.*==> \([A-Za-z0-9_-]*\): Waiting for machine to reboot\.\.\.$/\1/p')
        [ -n "$m" ] && [ $(($(now) - since)) -ge "$REBOOT_STALL" ] || continue
        for ip in $(virsh -q domifaddr "$SYSRQ_LIBVIRT_PREFIX-$m" --source lease |
                    awk '$3 == "ipv4" {sub("/.*", "", $4); print $4}'); do
            log "vagrant has waited $(($(now) - since)) s for $m's reboot: aborting its ssh connections to $ip"
            ss -K dst "$ip" dport = 22 >/dev/null 2>&1
        done
        since=$(now)   # once per stall
    done
}

# The LATE machines: `vagrant up` in the background (its exit code in late.rc), awaited by
# await_late before the first scenario file that names one of them.
start_late() {
    [ ${#LATE[@]} -gt 0 ] || return 0
    log "vagrant up ${LATE[*]} in the background (log: $RUN_DIR/vagrant-up-late.log)"
    rm -f "$RUN_DIR/late.rc" "$RUN_DIR/late.ready"
    (
        t=$(now) rc=0
        # The log's writer ignores stop_late's TERM: it ends with vagrant's output.
        vagrant up --no-tty --provider=libvirt "${LATE[@]}" 2>&1 |
            { trap '' TERM; stamp; } >"$RUN_DIR/vagrant-up-late.log" || rc=$?
        echo "vagrant-up-late $(($(now) - t))" >>"$RUN_DIR/timings"
        echo "$rc" >"$RUN_DIR/late.rc"
    ) </dev/null &
    echo $! >"$RUN_DIR/late.pid"
}

# Until the background `vagrant up` has ended (also when it is not our child: `run.sh test`),
# at most $1 seconds: then 1 if it still runs.
late_ended() {
    local pid deadline
    pid=$(cat "$RUN_DIR/late.pid" 2>/dev/null) || return 0
    deadline=$(($(now) + $1))
    while [ ! -s "$RUN_DIR/late.rc" ] && kill -0 "$pid" 2>/dev/null; do
        [ "$(now)" -lt "$deadline" ] || return 1
        sleep 2
    done
}

# Stop the background `vagrant up` if it still runs and is ours: a child of this shell (the
# pid in late.pid of another run may name another process by now). Vagrant itself runs
# further down (the subshell's pipeline), so the whole tree below it, by pid.
stop_late() {
    local pid tree
    pid=$(cat "$RUN_DIR/late.pid" 2>/dev/null) || return 0
    [ ! -s "$RUN_DIR/late.rc" ] && [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$$" ] || return 0
    log "stopping the background vagrant up (pid $pid and what runs below it)"
    tree=$(descendants "$pid")
    # shellcheck disable=SC2086 # a list of pids
    kill -TERM $tree 2>/dev/null || true
    for _ in $(seq 30); do
        # shellcheck disable=SC2086
        kill -0 $tree 2>/dev/null || break
        sleep 2
    done
    # shellcheck disable=SC2086 # what is left (also if orphaned meanwhile)
    kill -KILL $tree 2>/dev/null || true
    stop_pid_tree "$pid" KILL   # and what vagrant started meanwhile
}
# Signal PID and every process below it (TERM unless $2 names another signal).
stop_pid_tree() {
    # shellcheck disable=SC2046 # a list of pids
    kill -"${2:-TERM}" "$1" $(descendants "$1") 2>/dev/null || true
}
descendants() {
    local child
    for child in $(pgrep -P "$1"); do descendants "$child"; echo "$child"; done
}

await_late() {
    [ ${#LATE[@]} -gt 0 ] && [ ! -e "$RUN_DIR/late.ready" ] || return 0
    local t
    t=$(now)
    log "waiting for ${LATE[*]} (booting since the scenarios began)"
    late_ended "$LATE_WAIT" || die "vagrant up ${LATE[*]} still runs after $LATE_WAIT s (log: $RUN_DIR/vagrant-up-late.log)"
    if [ "$(cat "$RUN_DIR/late.rc" 2>/dev/null)" != 0 ]; then
        tail -30 "$RUN_DIR/vagrant-up-late.log" >&2
        die "vagrant up ${LATE[*]} failed"
    fi
    timing await-late $(($(now) - t))
    vagrant ssh-config "${MACHINES[@]}" "${LATE[@]}" >"$RUN_DIR/ssh-config"
    check_isolation "${LATE[@]}"
    touch "$RUN_DIR/late.ready"
}

guest_memory() {
    local m pidfile
    for m in "${MACHINES[@]}"; do
        pidfile=/run/libvirt/qemu/$SYSRQ_LIBVIRT_PREFIX-$m.pid
        [ -s "$pidfile" ] && log "guest $m: qemu RSS $(($(ps -o rss= -p "$(cat "$pidfile")") / 1024)) MiB"
    done
}

# ----------------------------------------------------------------------------- test
# The isolation gate: nothing else runs unless every network our domains use is isolated
# and no guest has a way out.
check_isolation() {   # [MACHINE...] (default: MACHINES)
    local m uuid net type failed=0 scn
    [ $# -gt 0 ] || set -- "${MACHINES[@]}"
    for m in "$@"; do
        uuid=$(cat "$VAGRANT_DOTFILE_PATH/machines/$m/libvirt/id")
        while read -r _ type net _; do
            [ -n "$type" ] || continue
            if [ "$type" != network ]; then
                log "ISOLATION: $m has an interface of type $type"; failed=1; continue
            fi
            if virsh -q net-dumpxml "$net" | grep -Eq "<forward( |>)" &&
               ! virsh -q net-dumpxml "$net" | grep -q "<forward mode='none'"; then
                log "ISOLATION: network $net of $m forwards: $(virsh -q net-dumpxml "$net" | grep '<forward')"
                failed=1
            else
                log "isolation: $m -> network $net: no forwarding"
            fi
        done < <(virsh -q domiflist "$uuid")
    done
    [ "$failed" = 0 ] || die "a guest network is not isolated; not running any scenario"
    local gate=("$HERE/scenarios/isolation.scn")
    [[ " $* " == *" target2 "* ]] && gate=("$HERE/scenarios/fleet/isolation.scn")
    for scn in "${gate[@]}"; do
        "$HERE/scenarios.py" --ssh-config "$RUN_DIR/ssh-config" --vagrant-dir "$REPO" \
            --log "$RUN_DIR/scenarios.log" "$scn" ||
            die "a guest can reach out; not running any scenario"
    done
}

run_scenarios() {
    [ -s "$RUN_DIR/ssh-config" ] || die "no VMs up for $RELEASE (run: $0 $RELEASE up)"
    use_boxes
    local t rc=0 scn m
    t=$(now); check_isolation; timing isolation $(($(now) - t))
    [ $# -gt 0 ] || set -- "$HERE/scenarios/$RELEASE.scn"
    [ $# -gt 0 ] && [ "$1" = "$HERE/scenarios/bookworm.scn" ] && set -- "$@" "$HERE/scenarios/fleet.scn"
    t=$(now)
    for scn in "$@"; do
        for m in "${LATE[@]}"; do
            grep -q "^$m ::" "$scn" && { await_late; break; }
        done
        log "scenarios: $scn"
        SYSRQ_RUN_DIR=$RUN_DIR "$HERE/scenarios.py" --ssh-config "$RUN_DIR/ssh-config" \
            --vagrant-dir "$REPO" --serial-dir "$SYSRQ_SERIAL_DIR" \
            --log "$RUN_DIR/scenarios.log" "$scn" || rc=1
    done
    timing scenarios $(($(now) - t))
    return $rc
}

# Each file alone on the pair exactly as provisioned: an internal snapshot of both running
# machines (disk and memory) right after the isolation gate, reverted before every file but
# the first. Cheaper than a new `vagrant up` per file, and just as fresh. No ssh connection
# is open across a snapshot: scenarios.py closes its shared connections when a file ends.
SNAPSHOT=sysrq-provisioned
machine_uuid() { cat "$VAGRANT_DOTFILE_PATH/machines/$1/libvirt/id"; }

run_each() {
    [ $# -gt 0 ] || die "each: name the scenario files to run alone"
    [ -s "$RUN_DIR/ssh-config" ] || die "no VMs up for $RELEASE (run: $0 $RELEASE up)"
    use_boxes
    local t m rc=0 scn first=1
    t=$(now); check_isolation; timing isolation $(($(now) - t))
    t=$(now)
    for m in "${MACHINES[@]}"; do
        virsh -q snapshot-create-as "$(machine_uuid "$m")" "$SNAPSHOT" --atomic >/dev/null ||
            die "snapshot of $m failed"
    done
    timing snapshot $(($(now) - t))
    for scn in "$@"; do
        if [ "$first" = 0 ]; then
            t=$(now)
            for m in "${MACHINES[@]}"; do
                virsh -q snapshot-revert "$(machine_uuid "$m")" "$SNAPSHOT" --running ||
                    die "reverting $m to the provisioned state failed"
            done
            # A reverted guest's clock resumes at the snapshot's time (no NTP: no way out),
            # while a guest that reboots reads the real time from its RTC: xt_SYSRQ then takes
            # the sender's time-based sequence numbers for replays. Set both clocks, as NTP would.
            for m in "${MACHINES[@]}"; do
                ssh -F "$RUN_DIR/ssh-config" -o BatchMode=yes -o ConnectTimeout=30 "$m" \
                    "sudo date -u -s @$(date +%s) >/dev/null" || die "setting $m's clock failed"
            done
            timing revert $(($(now) - t))
        fi
        first=0
        log "scenarios (alone on the provisioned pair): $scn"
        t=$(now)
        "$HERE/scenarios.py" --ssh-config "$RUN_DIR/ssh-config" --vagrant-dir "$REPO" \
            --serial-dir "$SYSRQ_SERIAL_DIR" --log "$RUN_DIR/scenarios.log" "$scn" || rc=1
        timing "alone:$(basename "$scn")" $(($(now) - t))
    done
    return $rc
}

# ----------------------------------------------------------------------------- down
down() {
    need_root
    local t m uuid
    t=$(now)
    if [ -d "$VAGRANT_DOTFILE_PATH" ] && [ -s "$RUN_DIR/box" ]; then
        use_boxes
        # A machine still booting cannot be destroyed by another vagrant: ours is stopped,
        # another run's awaited (what vagrant then leaves is removed by UUID below).
        stop_late
        late_ended "$LATE_WAIT" || log "vagrant up ${LATE[*]} of another run still runs"
        # A domain with a snapshot cannot be undefined (`each` made ours).
        for m in "${MACHINES[@]}"; do
            uuid=$(machine_uuid "$m" 2>/dev/null) &&
                virsh -q snapshot-delete "$uuid" "$SNAPSHOT" >/dev/null 2>&1 || true
        done
        timeout 300 vagrant destroy -f --no-tty 2>&1 | stamp >"$RUN_DIR/vagrant-destroy.log" ||
            log "vagrant destroy failed (see $RUN_DIR/vagrant-destroy.log); removing the domains by UUID"
        # Whatever vagrant left: our domains, by the UUID vagrant recorded or, when it was
        # interrupted before recording one, by their exact name (default_prefix + machine).
        for m in "${MACHINES[@]}" "${LATE[@]}"; do
            uuid=$(cat "$VAGRANT_DOTFILE_PATH/machines/$m/libvirt/id" 2>/dev/null) ||
                uuid=$SYSRQ_LIBVIRT_PREFIX-$m
            if virsh -q dominfo "$uuid" >/dev/null 2>&1; then
                virsh -q destroy "$uuid" >/dev/null 2>&1 || true
                virsh -q undefine "$uuid" --remove-all-storage >/dev/null && log "removed domain $uuid ($m)"
            fi
        done
        timing destroy $(($(now) - t))
    fi
    "$HERE/libvirt.sh" stop
    rm -rf "$SYSRQ_STAGE_DIR" "$RUN_DIR/.ssh-control" "$RUN_DIR/box" "$RUN_DIR/ssh-config" \
        "$RUN_DIR/late.pid" "$RUN_DIR/late.rc" "$RUN_DIR/late.ready"
}

# ----------------------------------------------------------------------------- main
# One two-VM run at a time on a machine: the networks, the pool and the daemons are shared.
if [ "$ACTION" = all ] || [ "$ACTION" = each ] || [ "$ACTION" = up ]; then
    exec 8>"$SYSRQ_STATE.lock"
    flock -n 8 || die "another two-VM run holds $SYSRQ_STATE.lock"
fi
case "$ACTION" in
    up)
        trap '[ $? = 0 ] || log "partly up; take it down with: $0 $RELEASE down"' EXIT
        up ;;
    test) run_scenarios "$@" ;;
    down) down ;;
    all|each)
        START=$(now)
        on_exit() {
            local rc=$?
            trap - EXIT INT TERM
            down || rc=1
            timing total $(($(now) - START))
            [ -f "$RUN_DIR/timings" ] && column -t "$RUN_DIR/timings" >&2
            log "logs: $RUN_DIR"
            exit $rc
        }
        trap on_exit EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        # `each` snapshots the pair; the bookworm run's third machine is not part of it.
        [ "$ACTION" != each ] || [ ${#LATE[@]} -eq 0 ] || die "each: trixie only (the $RELEASE run has a third machine)"
        up
        if [ "$ACTION" = each ]; then run_each "$@"; else run_scenarios "$@"; fi
        ;;
esac

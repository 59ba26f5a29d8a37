#!/bin/bash
# The systemd side of the package, checked where it can be: in a booted Debian guest
# (systemd as PID 1, real kernel with ESP and xt_SYSRQ). The two-VM harness runs it as root
# on each guest after installing the .deb, copying the pair's half to /etc/sysrq-appliance
# and rebooting (so the unit has applied the config at boot):
#
#   sudo /path/to/tests/package/check-unit-in-guest.sh
#
# It checks: the units verify; the service is enabled and came up at boot, before
# network-pre.target and after systemd-sysctl (and nftables/netfilter-persistent if present);
# the hardening is in force and the job still did everything under it (xt_SYSRQ loaded and
# holding the stored password, kernel.sysrq = the config's mask, our chain, our SAs and
# policies); reload works; the timer's service heals a deleted SA; restarting or reloading
# nftables.service (if installed: it flushes the whole ruleset) and restarting
# netfilter-persistent.service or calling `netfilter-persistent reload` (if installed) bring
# our chain back; stop runs `down` and takes the timer with it; a manual `apply` then starts
# the unit again (healing on); start restores everything.
# On a target whose xtables-addons is older than 3.26 (Debian 12) it checks the opposite:
# the unit failed because apply refused the rule.
# Nothing is sent on the network; the password is compared, never printed. It restarts the
# guest's nftables.service when installed (set SKIP_NFTABLES=1 to leave it alone) and
# leaves the unit active as it found it. One PASS/FAIL/SKIP line per check, then
# "N passed, M failed, K skipped"; exit 1 on any FAIL, 2 if it cannot run here.
set -uo pipefail
export LC_ALL=C.UTF-8
UNIT=sysrq-appliance.service TIMER=sysrq-appliance-reapply.timer REAPPLY=sysrq-appliance-reapply.service
CONFIG=/etc/sysrq-appliance/appliance.yaml
passed=0 failed=0 skipped=0

result() {   # result PASS|FAIL|SKIP NAME DETAIL
    printf '%-4s %-36s %s\n' "$1" "$2" "$3"
    case $1 in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; *) skipped=$((skipped + 1)) ;; esac
}
check() {    # check NAME DETAIL COMMAND...
    local name=$1 detail=$2; shift 2
    if "$@"; then result PASS "$name" "$detail"; else result FAIL "$name" "$detail"; fi
}
finish() { echo "$passed passed, $failed failed, $skipped skipped"; [ "$failed" = 0 ]; exit $?; }
wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.5; done
}

[ "$(id -u)" = 0 ] || { echo "check-unit-in-guest: run as root" >&2; exit 2; }
[ -d /run/systemd/system ] || { echo "check-unit-in-guest: PID 1 is not systemd" >&2; exit 2; }
dpkg-query -W -f '${Status}' sysrq-appliance 2>/dev/null | grep -q "ok installed" \
    || { echo "check-unit-in-guest: sysrq-appliance is not installed" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "check-unit-in-guest: no $CONFIG (copy a pair's half first)" >&2; exit 2; }

# What the config says, from the installed code (one line per fact; no secret).
facts=$(python3 -B - "$CONFIG" <<'EOF'
import sys
from sysrq_appliance import config
c = config.load(sys.argv[1])
print("role", c.role)
print("backend", c.backend)
print("mask", c.sysrq_mask if c.role == "target" else "-")
print("hash", c.hash)
for p in c.peers:
    print("sa_in", p.address, c.local, f"{p.spi_in:#010x}")
    print("sa_out", c.local, p.address, f"{p.spi_out:#010x}")
EOF
) || { echo "check-unit-in-guest: $CONFIG does not load" >&2; exit 2; }
fact() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' <<<"$facts"; }
role=$(fact role) mask=$(fact mask) hash=$(fact hash)
echo "config: role $role, backend $(fact backend), $(fact sa_in | wc -l) peer(s)"

# --- the units ---------------------------------------------------------------------------
out=$(systemd-analyze verify --man=no "$UNIT" "$TIMER" "$REAPPLY" 2>&1)
check "systemd-analyze verify" "${out:-clean}" [ -z "$out" ]
state=$(systemctl is-enabled "$UNIT" 2>&1)
check "enabled" "$state" [ "$state" = enabled ]

# The first of the two that is installed (a removed dkms package still has a version).
xa=$(dpkg-query -W -f '${db:Status-Status} ${Version}\n' xtables-addons-dkms xtables-addons-common 2>/dev/null \
     | awk '$1 == "installed" { print $2; exit }')
if [ "$role" = target ] && dpkg --compare-versions "$xa" lt 3.26; then
    # Debian 12: apply must refuse the SYSRQ rule (doctor FAILs), so the unit fails.
    active=$(systemctl is-active "$UNIT")
    why=$(journalctl -b -u "$UNIT" --no-pager -o cat | grep -m1 "doctor FAILs")
    check "refuses xtables-addons $xa" "unit $active: ${why:-no 'doctor FAILs' in the journal}" \
        eval '[ "$active" = failed ] && [ -n "$why" ]'
    finish
fi

active=$(systemctl show -p ActiveState -p SubState -p Result "$UNIT" | sort | tr '\n' ' ')
check "active after boot" "$active" [ "$active" = "ActiveState=active Result=success SubState=exited " ]

# Boot order, from this boot's journal: when each start job finished (monotonic µs).
order=$(journalctl -b -o json _PID=1 JOB_TYPE=start JOB_RESULT=done --no-pager | python3 -B -c '
import json, sys
done = {}
for line in sys.stdin:
    e = json.loads(line)
    done.setdefault(e.get("UNIT", ""), int(e["__MONOTONIC_TIMESTAMP"]))
for u in ("sysrq-appliance.service", "network-pre.target", "systemd-sysctl.service",
          "nftables.service", "netfilter-persistent.service"):
    print(u, done.get(u, "-"))')
t() { awk -v u="$1" '$1 == u { print $2 }' <<<"$order"; }
ours=$(t sysrq-appliance.service)
if [ "$ours" = - ]; then
    result FAIL "boot order" "no finished start job for $UNIT in this boot's journal (run right after a boot)"
else
    pre=$(t network-pre.target)
    check "before network-pre.target" "ours done at ${ours}us, network-pre.target at ${pre}us" \
        eval '[ "$pre" != - ] && [ "$ours" -le "$pre" ]'
    for dep in systemd-sysctl.service nftables.service netfilter-persistent.service; do
        d=$(t $dep)
        if [ "$d" = - ]; then result SKIP "after $dep" "$dep did not run this boot"; continue; fi
        check "after $dep" "$dep done at ${d}us, ours at ${ours}us" [ "$d" -le "$ours" ]
    done
fi

props=$(systemctl show "$UNIT" -p CapabilityBoundingSet -p NoNewPrivileges -p ProtectSystem \
            -p ProtectKernelTunables -p ProtectKernelModules -p MemoryDenyWriteExecute \
            -p PrivateTmp -p RestrictNamespaces -p SystemCallArchitectures | sort | tr '\n' ' ')
check "hardening in force" "$props" eval 'grep -q "ProtectSystem=strict" <<<"$props" &&
    grep -q "NoNewPrivileges=yes" <<<"$props" && grep -q "MemoryDenyWriteExecute=yes" <<<"$props" &&
    ! grep -qE "CapabilityBoundingSet=.*(cap_dac_override|cap_sys_ptrace|cap_sys_boot)" <<<"$props"'
exposure=$(systemd-analyze security "$UNIT" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
check "systemd-analyze security" "exposure ${exposure:-?} (<= 4.0)" \
    eval '[ -n "$exposure" ] && python3 -c "import sys; sys.exit(not float(sys.argv[1]) <= 4.0)" "$exposure"'
denied=$(journalctl -b -u "$UNIT" --no-pager -o cat | grep -m2 -iE "permission denied|not permitted|read-only file system|EPERM|EACCES")
check "no sandbox denials in the journal" "${denied:-none}" [ -z "$denied" ]

# --- what the job did, read from the kernel ----------------------------------------------
chain_present() { iptables-save 2>/dev/null | grep -q ':SYSRQ-APPLIANCE' \
                  || iptables-legacy-save 2>/dev/null | grep -q ':SYSRQ-APPLIANCE'; }
sas_present() {
    local src dst spi
    while read -r _ src dst spi; do
        ip xfrm state get src "$src" dst "$dst" proto esp spi "$spi" >/dev/null 2>&1 || return 1
    done < <(grep -E '^sa_(in|out) ' <<<"$facts")
}
policies_present() { [ -n "$(ip xfrm policy list 2>/dev/null)" ]; }
password_matches() {
    python3 -B - <<'EOF'
import secrets, sys
from sysrq_appliance import config
c = config.load()
kernel = open("/sys/module/xt_SYSRQ/parameters/password", "rb").read().rstrip(b"\n")
stored = open(c.password_file, "rb").read()
sys.exit(not secrets.compare_digest(kernel, stored))
EOF
}
reloaded_since() {   # a reload job of our unit finished after epoch second $1
    [ -n "$(journalctl -q -o cat _PID=1 UNIT="$UNIT" JOB_TYPE=reload JOB_RESULT=done --since "@$1")" ]
}
sysrq_is() { [ "$(cat /proc/sys/kernel/sysrq)" = "$1" ]; }
kernel_state() {   # kernel_state NAME-PREFIX: every piece of the applied state
    local p=$1
    check "$p: ESP SAs" "$(fact sa_in | wc -l) peer(s), in and out, by SPI" sas_present
    check "$p: xfrm policies" "$(ip xfrm policy list 2>/dev/null | grep -c '^src') policies" policies_present
    if [ "$role" = target ]; then
        check "$p: SYSRQ-APPLIANCE chain" "iptables-save / iptables-legacy-save" chain_present
        check "$p: xt_SYSRQ password" "kernel parameter = stored file (compared, not shown)" password_matches
        check "$p: kernel.sysrq" "$(cat /proc/sys/kernel/sysrq) (config: $mask)" sysrq_is "$mask"
        h=$(cat /sys/module/xt_SYSRQ/parameters/hash 2>/dev/null)
        check "$p: xt_SYSRQ hash" "${h:-?} (config: $hash)" [ "$h" = "$hash" ]
    fi
}
kernel_state boot

rc=0; systemctl reload "$UNIT" || rc=$?
check "reload (apply)" "systemctl reload: exit $rc" [ "$rc" = 0 ]
kernel_state reload

# --- drift healing: what the timer runs ---------------------------------------------------
timer=$(systemctl is-active "$TIMER")
check "timer active with the unit" "$TIMER $timer" [ "$timer" = active ]
read -r _ src dst spi < <(grep -m1 '^sa_in ' <<<"$facts")
ip xfrm state delete src "$src" dst "$dst" proto esp spi "$spi"
rc=0; systemctl start "$REAPPLY" || rc=$?
check "timer's service heals a deleted SA" "deleted spi $spi, started $REAPPLY: exit $rc" \
    eval '[ "$rc" = 0 ] && sas_present'

# --- firewall loaders that flush the ruleset ---------------------------------------------
if [ "$role" != target ]; then
    result SKIP "nftables restart/reload" "sender: no firewall chain"
elif [ "${SKIP_NFTABLES:-0}" = 1 ] || ! systemctl cat nftables.service >/dev/null 2>&1; then
    result SKIP "nftables restart/reload" "nftables.service not installed (or SKIP_NFTABLES=1)"
else
    for verb in restart reload; do
        since=$(date +%s); sleep 1
        rc=0; systemctl "$verb" nftables.service || rc=$?
        check "nftables $verb re-applies" "systemctl $verb nftables: exit $rc; our unit reloaded, chain back within 20 s" \
            eval '[ "$rc" = 0 ] && wait_for 20 reloaded_since "$since" && wait_for 20 chain_present'
    done
    # Its stop (also at every shutdown) runs `nft flush ruleset`; our ExecStopPost re-arms
    # before the stop returns, so the chain is there the moment it does.
    # (nftables stays stopped, as it was at boot: its start would ask our unit for a reload
    # that the stop below must not race.)
    rc=0; systemctl stop nftables.service || rc=$?
    check "nftables stop re-arms" "systemctl stop nftables: exit $rc; chain present right after" \
        eval '[ "$rc" = 0 ] && chain_present'

fi
if [ "$role" = target ] && systemctl cat netfilter-persistent.service >/dev/null 2>&1; then
    # Its unit has no ExecReload: our plugin in its plugins.d fires on every load of its
    # rules, through the unit (restart) or not (the CLI, which bypasses systemd).
    for how in "systemctl restart netfilter-persistent.service" "netfilter-persistent reload"; do
        since=$(date +%s); sleep 1
        rc=0; $how >/dev/null || rc=$?
        check "$how re-applies" "exit $rc; our unit reloaded, chain back within 20 s" \
            eval '[ "$rc" = 0 ] && wait_for 20 reloaded_since "$since" && wait_for 20 chain_present'
    done
fi

# --- stop runs down; start restores -------------------------------------------------------
systemctl stop "$UNIT"
state="$(systemctl is-active "$UNIT") / timer $(systemctl is-active "$TIMER")"
check "stop" "$state" [ "$state" = "inactive / timer inactive" ]
gone=yes
sas_present && gone="SAs still there"
[ "$role" = target ] && chain_present && gone="chain still there"
check "stop ran down" "${gone/yes/SAs and chain removed}" [ "$gone" = yes ]
# A manual apply with the unit enabled but stopped starts it, so the timer heals drift.
note=$(sysrq-appliance apply 2>&1 | grep -m1 '^drift healing')
check "manual apply turns healing on" "${note:-no 'drift healing' line}; $(systemctl is-active "$UNIT"), timer $(systemctl is-active "$TIMER")" \
    eval '[ "${note#drift healing on}" != "$note" ] && [ "$(systemctl is-active "$UNIT")" = active ] && [ "$(systemctl is-active "$TIMER")" = active ]'
systemctl start "$UNIT"
check "start again" "$(systemctl is-active "$UNIT"), timer $(systemctl is-active "$TIMER")" \
    eval '[ "$(systemctl is-active "$UNIT")" = active ] && [ "$(systemctl is-active "$TIMER")" = active ]'
kernel_state restart

finish

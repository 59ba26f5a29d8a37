#!/bin/bash
# Package tier: build the .deb (host release and, in a chroot, the other releases), lintian
# it, then install-test it in minimal Debian 13 and 12 roots (chroots; no service runs):
# dependencies resolve from the Debian mirror, Recommends pulls no kernel, --version and
# doctor run, the password is generated 0600 root:root in a 0700 directory, the units verify,
# the netfilter-persistent plugin asks systemd to re-apply when rules are loaded, every /usr
# path the docs name exists, an upgrade keeps the password and modified configs, and a purge
# leaves nothing of ours. One PASS/FAIL line per check, then
# "N passed, M failed"; exits 1 if anything failed.
#
#   tests/package/run.sh [--deb PATH] [RELEASE...]     (default releases: trixie bookworm)
#
# Without --deb the .deb is built on this host from this checkout (tests/package/build-deb.sh,
# lintian included); the higher version for the upgrade is always built from the checkout
# (+test1). For each RELEASE other than the host's, the package is also built and lintian'd
# in a RELEASE build root, and its file list compared with the host build's.
#
# Roots (`mmdebstrap --variant=apt`: for the install test plus systemd, for `systemd-analyze
# verify`; for the build plus the Build-Depends) are cached under $SYSRQ_ROOT_CACHE (default
# /var/cache/sysrq-appliance/roots/{pkgtest,pkgbuild}-RELEASE-<hash>), keyed by release,
# package list and ROOT_RECIPE below; apt lists and downloaded .debs are kept in apt/RELEASE.
# Delete a directory to rebuild it. Each run works on an overlay over the cached root, so the
# cache itself never changes. Only apt talks to the network (to the Debian mirror this host's
# apt sources name, tests/debian-mirror.sh, or $SYSRQ_ROOT_MIRROR: update, simulate,
# download-only); builds, maintainer scripts and our code run offline in a new network namespace with read-only /proc/sys and /sys and without
# CAP_SYS_MODULE, CAP_SYS_BOOT and CAP_SYS_TIME, so they cannot touch the host's network,
# kernel settings or modules. Every mount is made in a private mount namespace and
# unmounted by path when the run ends, failed or not.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8

ROOT_RECIPE=1     # bump when the way roots are built changes
TEST_PACKAGES=systemd
BUILD_PACKAGES=debhelper,dh-python,pybuild-plugin-pyproject,python3-all,python3-setuptools,python3-docutils,python3-yaml,python3-pytest,python3-hypothesis,python3-pyroute2,python3-iptables,python3-prometheus-client,python3-systemd,lintian
CACHE=${SYSRQ_ROOT_CACHE:-/var/cache/sysrq-appliance/roots}
here=$(cd "$(dirname "$0")" && pwd)
# The mirror (or proxy) this machine's apt uses, unless SYSRQ_ROOT_MIRROR names one.
MIRROR=${SYSRQ_ROOT_MIRROR:-$("$here/../debian-mirror.sh" archive)}
repo=$(cd "$here/../.." && pwd)

# ---------------------------------------------------------------------------------------------
# Inside a private mount and PID namespace (see the end of this file): an overlay over the
# cached root BASE with the API file systems; $root is where it is, $mounts what to undo.
enter_root() {   # enter_root BASE WORK
    root=$2/root mounts=()
    trap unmount_all EXIT
    mount --make-rprivate /
    mkdir -p "$2/upper" "$2/ovl" "$root"
    mnt -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/ovl" "$root"
    mnt -t proc proc "$root/proc"
    mnt --bind "$root/proc/sys" "$root/proc/sys"
    mount -o remount,bind,ro "$root/proc/sys"
    mnt -t sysfs -o ro sysfs "$root/sys"
    mnt --rbind /dev "$root/dev"
    mnt -t tmpfs -o mode=0755 tmpfs "$root/run"
    mnt -t tmpfs -o mode=1777 tmpfs "$root/tmp"
}
mnt() { mount "$@"; mounts=("${!#}" "${mounts[@]}"); }
unmount_all() {   # newest first; the namespace dies with us anyway, this is the tidy way
    local m
    for m in "${mounts[@]}"; do umount -R "$m" 2>/dev/null || umount -l "$m"; done
}
bind() {   # bind SRC DEST ro|rw
    mkdir -p "$2"; mnt --bind "$1" "$2"
    [ "$3" = rw ] || mount -o remount,bind,ro "$2"
}
env=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
     HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
online() { chroot "$root" "${env[@]}" "$@"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$results"; }   # RELEASE NAME RESULT DETAIL
offline() {
    unshare --net setpriv --bounding-set -sys_module,-sys_boot,-sys_time \
        chroot "$root" "${env[@]}" "$@"
}

if [ "${1:-}" = __build ]; then   # __build RELEASE BASE WORK SRC OUT
    enter_root "$3" "$4"
    bind "$5" "$root/srv/src" ro
    bind "$6" "$root/srv/out" rw
    offline /srv/src/tests/package/build-deb.sh /srv/out
    exit
fi

if [ "${1:-}" = __install ]; then   # __install RELEASE BASE WORK DEBS DEB DEB2 RESULTS
    release=$2 work=$4 debs=$5 deb=$6 deb2=$7 results=$8
    enter_root "$3" "$work"
    bind "$debs" "$root/srv/debs" ro
    mkdir -p "$CACHE/apt/$release/lists" "$CACHE/apt/$release/archives"
    bind "$CACHE/apt/$release/lists" "$root/var/lib/apt/lists" rw
    bind "$CACHE/apt/$release/archives" "$root/var/cache/apt/archives" rw
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    set +e    # from here on every outcome is recorded; a failing check must not end the run

    check() {   # check NAME DETAIL CONDITION-COMMAND...
        local name=$1 detail=$2; shift 2
        if "$@"; then record "$release" "$name" PASS "$detail"
        else record "$release" "$name" FAIL "$detail"; fi
    }
    log=$work/log; : >"$log"
    run_logged() { echo "+ $*" >>"$log"; "$@" >>"$log" 2>&1; }
    apt=(apt-get -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600)
    t0=$SECONDS
    pkg=/srv/debs/$(basename "$deb") pkg2=/srv/debs/$(basename "$deb2")

    # 1. With the network: apt only. The lists and .debs are cached between runs.
    exec 9>"$CACHE/apt/$release/.lock"; flock 9
    if run_logged online "${apt[@]}" update; then
        record "$release" "apt update" PASS "$MIRROR $release"
    else
        record "$release" "apt update" FAIL "$MIRROR $release (log: $log)"; exit 0
    fi
    # Our Recommends must not pull a kernel: linux-headers-amd64 depends on the current
    # linux-image-*. The headers for DKMS are xtables-addons-dkms's (dkms's) business.
    ours=$(dpkg-deb -f "$deb" Recommends)
    check "Recommends: no kernel package" "Recommends: ${ours:-none}" \
        eval '! grep -qE "linux-(image|headers)" <<<"$ours"'
    sim=$work/simulate
    if online "${apt[@]}" install -s -o APT::Install-Recommends=true "$pkg" >"$sim" 2>&1; then
        dkms=$(sed -n 's/^Inst xtables-addons-dkms (\([^ ]*\) .*/\1/p' "$sim")
        kernel=$(sed -n 's/^Inst \(linux-\(image\|headers\)-[^ ]*\) .*/\1/p' "$sim" | tr '\n' ' ')
        kernel="with Recommends apt also adds (xtables-addons-dkms, dkms): ${kernel:-no kernel package}"
        if [ "$release" = bookworm ]; then
            # Our "(>= 3.26)" cannot be met by bookworm's 3.23 (doctor FAILs there, apply
            # refuses the rule); apt still brings 3.23 because xtables-addons-common
            # recommends xtables-addons-dkms without a version.
            check "Recommends resolvable" "xtables-addons-dkms ${dkms:-none} (< 3.26: via xtables-addons-common's Recommends); $kernel" true
        else
            check "Recommends resolvable" "xtables-addons-dkms ${dkms:-MISSING}; $kernel" \
                eval 'dpkg --compare-versions "${dkms:-0}" ge 3.26'
        fi
    else
        record "$release" "Recommends resolvable" FAIL "apt-get install -s failed: $(tail -n 3 "$sim" | tr '\n' ' ')"
    fi
    if run_logged online "${apt[@]}" install -y --download-only --no-install-recommends "$pkg" "$pkg2" netfilter-persistent \
            python3-pytest python3-hypothesis; then
        record "$release" "dependencies resolve from Debian" PASS "apt install --download-only ./$(basename "$deb")"
    else
        record "$release" "dependencies resolve from Debian" FAIL "see $log"; exit 0
    fi
    online "${apt[@]}" autoclean -y >/dev/null 2>&1 || true    # keep the .deb cache bounded
    flock -u 9
    t_online=$((SECONDS - t0))

    # 2. Offline from here. Dependencies first, so that the file lists before and after
    # our package differ only by what is ours.
    deps="$(dpkg-deb -f "$deb" Depends), netfilter-persistent, python3-pytest, python3-hypothesis"   # our plugin; debian/tests
    run_logged offline "${apt[@]}" satisfy -y --no-download --no-install-recommends "$deps" \
        || { record "$release" "install dependencies" FAIL "apt-get satisfy '$deps' (log: $log)"; exit 0; }
    # /etc/group- and /etc/gshadow- are the shadow tools' backups of the last change (our
    # operators' group, added by postinst and removed by purge): left out.
    snapshot() {
        offline sh -c 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
                -o -path /tmp -o -path /srv/debs -o -path /var/lib/dpkg -o -path /var/lib/apt \
                -o -path /var/cache/apt -o -path /var/cache/debconf -o -path /var/cache/man \
                -o -path /var/cache/ldconfig -o -path /var/log -o -path /etc/group- \
                -o -path /etc/gshadow- \) -prune \
                -o -printf "%p %y %m %u:%g\n"; find /etc -xdev -type f ! -path /etc/group- \
                ! -path /etc/gshadow- -exec md5sum {} +' | sort
    }
    snapshot >"$work/before"

    out=$work/install
    if offline "${apt[@]}" install -y --no-install-recommends "$pkg" >"$out" 2>&1; then
        newly=$(sed -n 's/^\([0-9]*\) upgraded, \([0-9]*\) newly installed.*/\2/p' "$out")
        check "apt install ./deb" "$newly newly installed (dependencies were already there)" [ "$newly" = 1 ]
    else
        record "$release" "apt install ./deb" FAIL "$(tail -n 5 "$out" | tr '\n' ' ')"; exit 0
    fi
    cat "$out" >>"$log"

    upstream=$(dpkg-deb -f "$deb" Version); upstream=${upstream%%[+~-]*}
    v=$(offline sysrq-appliance --version 2>&1 || true)
    check "--version" "$v" [ "$v" = "sysrq-appliance $upstream" ]

    # The password: 0600 root:root regular file in a 0700 root:root directory, 32 characters
    # of the generator's alphabet, no newline; never printed.
    pw_state=$(offline stat -c '%n: %F %a %U:%G' /etc/sysrq-appliance /etc/sysrq-appliance/password 2>&1 | tr '\n' ' ')
    check "password generated" "$pw_state" [ "$pw_state" = \
        "/etc/sysrq-appliance: directory 700 root:root /etc/sysrq-appliance/password: regular file 600 root:root " ]
    pw=$(cat "$root/etc/sysrq-appliance/password" 2>/dev/null || true)
    check "password alphabet" "32 of [A-Za-z0-9-_.+=:@%^*], no comma or newline" \
        offline /usr/bin/python3 -c 'import sys; from sysrq_appliance import password as p
s = open("/etc/sysrq-appliance/password", "rb").read(); p.validate(s, "password")
sys.exit(len(s) != 32 or not set(s.decode()) <= set(p.ALPHABET))'
    check "password never printed" "not in the output of apt install" \
        eval '[ -n "$pw" ] && ! grep -qF -- "$pw" "$out"'

    conffiles=$(offline dpkg-query -W -f '${Conffiles}' sysrq-appliance | awk '{print $1}' | tr '\n' ' ')
    check "conffiles" "${conffiles:-none}" [ "$conffiles" = "/etc/sysrq-appliance/appliance.yaml.example " ]
    check "example config valid" "config.load(appliance.yaml.example) with the installed code" \
        offline /usr/bin/python3 -c 'from sysrq_appliance import config
config.load("/etc/sysrq-appliance/appliance.yaml.example", check_secrets=False)'
    missing=""
    for f in /usr/bin/sysrq-appliance /usr/share/man/man8/sysrq-appliance.8.gz \
             /usr/share/bash-completion/completions/sysrq-appliance \
             /usr/lib/systemd/system/sysrq-appliance.service \
             /usr/lib/systemd/system/sysrq-appliance-reapply.timer \
             /usr/lib/systemd/system/sysrq-appliance-reapply.service \
             /usr/lib/systemd/system/sysrq-appliance-helper.socket \
             /usr/lib/systemd/system/sysrq-appliance-helper.service \
             /usr/lib/systemd/system/sysrq-appliance-check.timer \
             /usr/lib/systemd/system/sysrq-appliance-check.service \
             /usr/lib/systemd/system/nftables.service.d/sysrq-appliance.conf \
             /usr/lib/systemd/system/netfilter-persistent.service.d/sysrq-appliance.conf \
             /usr/libexec/sysrq-appliance/rearm \
             /usr/share/netfilter-persistent/plugins.d/90-sysrq-appliance \
             /usr/share/doc/sysrq-appliance/README.Debian \
             /etc/systemd/system/multi-user.target.wants/sysrq-appliance.service; do
        [ -e "$root$f" ] || [ -L "$root$f" ] || missing="$missing $f"
    done
    check "files installed" "${missing:+missing:}${missing:-CLI, man page, completion, units, drop-ins, re-arm hook, plugin, README.Debian, enabled}" [ -z "$missing" ]
    verify=$(offline systemd-analyze verify --man=no sysrq-appliance.service sysrq-appliance-reapply.timer \
                 sysrq-appliance-reapply.service sysrq-appliance-helper.socket \
                 sysrq-appliance-helper.service sysrq-appliance-check.timer \
                 sysrq-appliance-check.service 2>&1) && rc=0 || rc=$?
    group=$(offline getent group sysrq-operators || true)
    check "operators' group" "${group:-missing}" eval 'grep -qE "^sysrq-operators:x:[0-9]+:$" <<<"$group"'
    enabled=$(offline sh -c 'ls /etc/systemd/system/*.wants/ 2>/dev/null' | grep -E "helper|check" || true)
    check "helper socket and check timer off" "${enabled:-not enabled}" [ -z "$enabled" ]
    check "systemd-analyze verify" "systemd $(offline dpkg-query -W -f '${Version}' systemd): ${verify:-clean}" \
        eval '[ "$rc" = 0 ] && [ -z "$verify" ]'
    # netfilter-persistent runs our plugin whenever it loads rules, also when called directly
    # (no systemd involved: nothing else would notice). No systemd here: /run/systemd/system
    # says "booted" and a stand-in systemctl records what the plugin asks for.
    offline sh -c 'mkdir -p /run/systemd/system && printf "#!/bin/sh\necho \"\$*\" >>/run/systemctl.calls\n" \
        >/usr/local/sbin/systemctl && chmod 755 /usr/local/sbin/systemctl'
    want="--no-block try-reload-or-restart sysrq-appliance.service"
    for how in "netfilter-persistent reload" "netfilter-persistent start" "netfilter-persistent save"; do
        rm -f "$root/run/systemctl.calls"
        offline $how >>"$log" 2>&1 && rc=0 || rc=$?
        calls=$(cat "$root/run/systemctl.calls" 2>/dev/null || true)
        if [ "$how" = "netfilter-persistent save" ]; then
            check "plugin: $how" "exit $rc; systemctl: ${calls:-not called}" eval '[ "$rc" = 0 ] && [ -z "$calls" ]'
        else
            check "plugin: $how" "exit $rc; systemctl ${calls:-not called}" eval '[ "$rc" = 0 ] && [ "$calls" = "$want" ]'
        fi
    done
    rm -f "$root/run/systemctl.calls"; rmdir "$root/run/systemd/system"
    offline netfilter-persistent reload >>"$log" 2>&1 && rc=0 || rc=$?
    calls=$(cat "$root/run/systemctl.calls" 2>/dev/null || true)
    check "plugin: without systemd" "exit $rc; systemctl: ${calls:-not called}" eval '[ "$rc" = 0 ] && [ -z "$calls" ]'
    rm -f "$root/usr/local/sbin/systemctl" "$root/run/systemctl.calls"

    compl=$(offline bash -c '. /usr/share/bash-completion/completions/sysrq-appliance
        COMP_WORDS=(sysrq-appliance pa); COMP_CWORD=1; _sysrq_appliance; echo "${COMPREPLY[*]}"
        COMP_WORDS=(sysrq-appliance apply --f); COMP_CWORD=2; _sysrq_appliance; echo "${COMPREPLY[*]}"' 2>&1 | tr '\n' ';')
    check "bash completion" "'pa' -> pair password; 'apply --f' -> --force: $compl" \
        [ "$compl" = "pair password;--force;" ]

    # doctor: without a config (one FAIL line), then with a target config made by `pair`
    # (keys and config only; the generated password stays). This kernel has no ESP, no
    # modules and maybe no magic SysRq: FAILs are expected, a crash is not. A missing config
    # is bad input (exit 2, one FAIL line); with the config, exit 2 would be a bug.
    d0=$(offline sysrq-appliance doctor 2>&1) && rc=0 || rc=$?
    check "doctor runs (no config)" "exit $rc: $(head -n 1 <<<"$d0")" \
        eval '[ "$rc" = 2 ] && grep -qE "^FAIL config" <<<"$d0"'
    offline sh -c 'sysrq-appliance pair --target web1=10.10.25.7 --sender admin1=10.10.25.1 \
            --out /root/bundle >/dev/null && cp -a /root/bundle/target/appliance.yaml \
            /root/bundle/target/keys /etc/sysrq-appliance/ && rm -r /root/bundle' >>"$log" 2>&1 \
        || record "$release" "pair" FAIL "see $log"
    d1=$(offline sysrq-appliance doctor 2>&1) && rc=0 || rc=$?
    echo "$d1" >>"$log"
    lines=$(grep -cE '^(PASS|WARN|FAIL) ' <<<"$d1" || true)
    other=$(grep -cvE '^(PASS|WARN|FAIL) ' <<<"$d1" || true)
    summary="exit $rc, $lines lines ($(grep -c '^PASS' <<<"$d1" || true) PASS, $(grep -c '^WARN' <<<"$d1" || true) WARN, $(grep -c '^FAIL' <<<"$d1" || true) FAIL)"
    check "doctor runs (target config)" "$summary" \
        eval '[ "$rc" -le 1 ] && [ "$lines" -ge 3 ] && [ "$other" = 0 ] && ! grep -qF -- "$pw" <<<"$d1"'
    xline=$(grep -E '^(PASS|FAIL) xt_SYSRQ' <<<"$d1" || true)
    if [ "$release" = bookworm ]; then
        check "doctor: xtables-addons" "${xline:-no xt_SYSRQ line}" eval 'grep -q "^FAIL xt_SYSRQ: xtables-addons 3.23" <<<"$xline"'
    else
        check "doctor: xtables-addons" "${xline:-no xt_SYSRQ line}" eval 'grep -q "^PASS xt_SYSRQ" <<<"$xline"'
    fi

    # Every path under /usr, and the example config, that the man page, README.Debian, the
    # example config and a config written by `pair` name is in the installed package.
    named=$(offline sh -c 'zcat /usr/share/man/man8/sysrq-appliance.8.gz | sed "s/\\\\-/-/g"
            cat /usr/share/doc/sysrq-appliance/README.Debian /etc/sysrq-appliance/appliance.yaml.example \
                /etc/sysrq-appliance/appliance.yaml' 2>&1 \
        | grep -oE '/usr/[A-Za-z0-9._/+-]*[A-Za-z0-9_/]|/etc/sysrq-appliance/appliance\.yaml\.example' | sort -u)
    absent=$(for f in $named; do [ -e "$root$f" ] || printf '%s ' "$f"; done)
    check "paths named in the docs exist" "${absent:+missing: }${absent:-$(wc -w <<<"$named") paths: $(tr '\n' ' ' <<<"$named")}" \
        eval '[ -z "$absent" ] && grep -q README.Debian <<<"$named"'

    # debian/tests (autopkgtest): the unit tier against the installed package, as nobody.
    # Its scratch under /run, not the 1777 /tmp: the program rightly refuses secrets on a path
    # that others can write to, and the tests write secrets.
    mkdir -p "$root/tmp/src" "$root/run/autopkgtest"
    cp -r "$repo/debian" "$repo/tests" "$repo/docs" "$root/tmp/src/"
    chown 65534 "$root/run/autopkgtest"; chmod 0700 "$root/run/autopkgtest"
    at=$(offline setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/run/autopkgtest \
             AUTOPKGTEST_TMP=/run/autopkgtest sh -c 'cd /tmp/src && debian/tests/unit' 2>&1) && rc=0 || rc=$?
    echo "$at" >>"$log"
    check "autopkgtest unit (installed package)" "exit $rc: $(grep -E '(passed|failed|error)' <<<"$at" | tail -n 1)" \
        eval '[ "$rc" = 0 ] && grep -q "^testing the installed package: /usr/lib/python3/dist-packages/" <<<"$at"'

    # 3. Upgrade to a rebuilt higher version: password, keys and modified configs stay.
    echo "# changed by the admin" >>"$root/etc/sysrq-appliance/appliance.yaml"
    echo "# changed by the admin" >>"$root/etc/sysrq-appliance/appliance.yaml.example"
    keep=(/etc/sysrq-appliance/password /etc/sysrq-appliance/appliance.yaml
          /etc/sysrq-appliance/appliance.yaml.example /etc/sysrq-appliance/keys/admin1.key)
    state() { offline sh -c 'for f; do printf "%s %s\n" "$(stat -c "%a %U:%G" "$f")" "$(md5sum <"$f")"; done' sh "${keep[@]}"; }
    before_upgrade=$(state)
    if run_logged offline "${apt[@]}" install -y --no-install-recommends "$pkg2"; then
        v2=$(offline dpkg-query -W -f '${Version}' sysrq-appliance)
        check "upgrade" "to $v2" [ "$v2" = "$(dpkg-deb -f "$deb2" Version)" ]
    else
        record "$release" "upgrade" FAIL "see $log"
    fi
    after_upgrade=$(state)
    check "upgrade keeps password, keys, configs" "${#keep[@]} files: same content and modes" \
        [ "$before_upgrade" = "$after_upgrade" ]
    leftovers=$(offline find /etc -name '*.dpkg-*' -o -name '*.ucf-*' | tr '\n' ' ')
    check "no conffile prompts" "${leftovers:-no .dpkg-new/.dpkg-dist}" [ -z "$leftovers" ]

    # 4. Purge: prerm's `down` is clean, and nothing of ours is left.
    out=$work/purge
    offline "${apt[@]}" purge -y sysrq-appliance >"$out" 2>&1 && rc=0 || rc=$?
    cat "$out" >>"$log"
    check "apt purge" "exit $rc" [ "$rc" = 0 ]
    # The CLI reports errors as "sysrq-appliance: ..." on stderr; prerm adds "'down' failed".
    downmsg=$(grep -E "^sysrq-appliance: |^Traceback|down' failed" "$out" | head -n 2 | tr '\n' ' ')
    check "prerm: down" "${downmsg:-ran cleanly (exit 0)}" [ -z "$downmsg" ]
    snapshot >"$work/after"
    left=$(diff "$work/before" "$work/after" | grep '^[<>]' || true)
    entries=$(wc -l <"$work/before")
    check "purge leaves nothing" "${left:-$entries entries (path, type, mode, owner; md5 of /etc) unchanged}" \
        eval '[ -z "$left" ] && [ "$entries" -gt 1000 ]'
    [ -z "$left" ] || echo "$left" >>"$log"
    record "$release" "timing" INFO "${t_online}s online (apt update, downloads), $((SECONDS - t0 - t_online))s offline"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Outside.
deb="" releases=()
while [ $# -gt 0 ]; do
    case $1 in
        --deb) deb=$(realpath "${2:?--deb needs a path}"); shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        -*) echo "run: unknown option $1" >&2; exit 2 ;;
        *) [[ $1 =~ ^[a-z]+$ ]] || { echo "run: bad release name: $1" >&2; exit 2; }
           releases+=("$1"); shift ;;
    esac
done
[ ${#releases[@]} -gt 0 ] || releases=(trixie bookworm)
[ "$(id -u)" = 0 ] || { echo "run: needs root (chroot, mounts, namespaces)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "run: run 'tests/install-deps.sh package' as root" >&2; exit 1; }
host_release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

start=$SECONDS
work=$(mktemp -d /var/tmp/sysrq-appliance-pkgtest.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
results=$work/results.tsv debs=$work/debs
: >"$results"; mkdir -p "$debs" "$CACHE"
lintian_line() { grep '^lintian ' "$1" | sed 's/ (on .*//'; }

# cached_root KIND RELEASE PACKAGES: the cached root's path; built (under a lock) if missing.
# Explicit error checks: set -e does not apply inside `base=$(cached_root ...) || ...`.
cached_root() {
    local key base
    key=$(printf '%s\n%s\n%s\n%s\n' "$1" "$2" "$3" "$ROOT_RECIPE" | sha256sum | cut -c1-16)
    base=$CACHE/$1-$2-$key
    (
        flock 9 || exit 1
        [ -d "$base" ] && exit 0
        t=$SECONDS tmp=$base.tmp.$$
        echo "run: building the $2 $1 root in $base" >&2
        trap 'rm -rf --one-file-system "$tmp"' EXIT
        mmdebstrap --quiet --variant=apt --include="$3" \
            --customize-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d"; chmod 755 "$1/usr/sbin/policy-rc.d"' \
            "$2" "$tmp" "$MIRROR" >&2 || exit 1
        [ -x "$tmp/usr/bin/apt-get" ] || exit 1
        mv -T "$tmp" "$base" || exit 1
        trap - EXIT
        record "$2" timing INFO "$1 root built in $((SECONDS - t))s (cold)"
    ) 9>"$CACHE/.lock-$1-$2" || return 1
    echo "$base"
}

if docs=$(PYTHONPATH="$repo/appliance" /usr/bin/python3 -B "$here/check-docs.py" 2>&1); then
    record all "man page + completion match CLI" PASS "every command and long option"
else
    record all "man page + completion match CLI" FAIL "$(tr '\n' ';' <<<"$docs")"
fi

t=$SECONDS
if [ -z "$deb" ]; then
    if deb=$("$here/build-deb.sh" "$debs" 2>"$work/build.log" | tail -n 1); then
        record "${host_release:-host}" "build + lintian" PASS "$(lintian_line "$work/build.log")"
    else
        cat "$work/build.log" >&2
        record "${host_release:-host}" "build + lintian" FAIL "see above"; deb=""
    fi
else
    cp "$deb" "$debs/"; deb=$debs/$(basename "$deb")
fi
deb2=$("$here/build-deb.sh" "$debs" --version-suffix +test1 --no-lintian 2>"$work/build2.log" | tail -n 1) \
    || { cat "$work/build2.log" >&2; record all "build +test1" FAIL "see above"; deb2=""; }
record all timing INFO "host builds (release, +test1): $((SECONDS - t))s"

for release in "${releases[@]}"; do
    [ "$release" != "$host_release" ] || continue
    t=$SECONDS
    base=$(cached_root pkgbuild "$release" "$BUILD_PACKAGES") \
        || { record "$release" "build + lintian" FAIL "mmdebstrap failed"; continue; }
    mkdir -p "$work/build-$release/out"
    "$here/build-deb.sh" --export "$work/build-$release/src"
    if unshare --mount --pid --fork --kill-child "$0" __build "$release" "$base" \
            "$work/build-$release" "$work/build-$release/src" "$work/build-$release/out" \
            >"$work/build-$release/log" 2>&1; then
        record "$release" "build + lintian" PASS "$(lintian_line "$work/build-$release/log")"
        if [ -n "$deb" ]; then
            # (the .dist-info files differ with dh-python's version: RECORD vs INSTALLER)
            files() { dpkg-deb -c "$1" | awk '$6 !~ /\.dist-info\/./ {print $1, $6}'; }
            if differ=$(diff <(files "$deb") <(files "$work/build-$release/out/$(basename "$deb")")); then
                record "$release" "same files as the host build" PASS "paths and modes (but .dist-info)"
            else
                record "$release" "same files as the host build" FAIL "$(grep '^[<>]' <<<"$differ" | head -n 5 | tr '\n' ' ')"
            fi
        fi
    else
        tail -n 40 "$work/build-$release/log" >&2
        record "$release" "build + lintian" FAIL "see above"
    fi
    record "$release" timing INFO "build in a $release root: $((SECONDS - t))s"
done

if [ -n "$deb" ] && [ -n "$deb2" ]; then
    for release in "${releases[@]}"; do
        t=$SECONDS
        base=$(cached_root pkgtest "$release" "$TEST_PACKAGES") \
            || { record "$release" "root" FAIL "mmdebstrap $release failed"; continue; }
        mkdir -p "$work/$release"
        unshare --mount --pid --fork --kill-child "$0" __install "$release" "$base" \
            "$work/$release" "$debs" "$deb" "$deb2" "$results" \
            || record "$release" "test run" FAIL "exit $? (log: $work/$release/log)"
        if awk -F'\t' -v r="$release" '$1 == r && $3 == "FAIL" {f = 1} END {exit !f}' "$results"; then
            echo "---- $release log (last 40 lines) ----" >&2; tail -n 40 "$work/$release/log" >&2
        fi
        record "$release" timing INFO "install tests: $((SECONDS - t))s"
    done
fi

# The table.
echo
printf '%-9s %-38s %-6s %s\n' RELEASE CHECK RESULT DETAIL
awk -F'\t' '{ printf "%-9s %-38s %-6s %s\n", $1, $2, $3, $4 }' "$results"
passed=$(awk -F'\t' '$3 == "PASS"' "$results" | wc -l)
failed=$(awk -F'\t' '$3 == "FAIL"' "$results" | wc -l)
echo "total time: $((SECONDS - start))s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

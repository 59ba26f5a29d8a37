#!/bin/bash
# Print the Debian archive this machine's apt uses, so that the test roots and boxes come
# from the same mirror or proxy as the host's own packages (no host name written anywhere).
#
#   tests/debian-mirror.sh [archive|security] [--apt-dir DIR]
#
# Reads DIR/sources.list, then DIR/sources.list.d/*.list and *.sources in name order, as apt
# does (DIR defaults to /etc/apt): one-line entries ("deb [opts] URI SUITE COMPONENT...") and
# deb822 stanzas ("Types: deb", "URIs:", "Suites:", "Enabled: no" skipped). Prints the first
# URI of a "deb" entry whose suite is a Debian release (codename or alias, optionally
# -updates/-backports/-proposed-updates); with "security", the first whose suite ends in
# -security. A "mirror+file:" URI is resolved to the first mirror its list names. Only
# http(s) URIs count: the roots' own apt must reach it. Exits 1, saying so, if none is found;
# callers let SYSRQ_ROOT_MIRROR, SYSRQ_DEBIAN_MIRROR and SYSRQ_DEBIAN_SECURITY_MIRROR win.
set -euo pipefail

kind=archive apt_dir=/etc/apt
while [ $# -gt 0 ]; do
    case $1 in
        archive|security) kind=$1; shift ;;
        --apt-dir) apt_dir=${2:?--apt-dir needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "debian-mirror: unknown argument $1" >&2; exit 2 ;;
    esac
done

files=()
[ -f "$apt_dir/sources.list" ] && files+=("$apt_dir/sources.list")
for f in "$apt_dir"/sources.list.d/*; do
    case $f in *.list|*.sources) [ -f "$f" ] && files+=("$f") ;; esac
done

# "URI SUITE" per deb entry, in apt's order. Comments and deb-src go; options in [...] go.
entries() {
    local f
    for f in "${files[@]}"; do
        case $f in
            *.list) sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }' ;;
            *.sources) awk '
                function flush(  i, j, nu, ns, us, ss) {
                    if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                        nu = split(uris, us, " "); ns = split(suites, ss, " ")
                        for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print us[i], ss[j]
                    }
                    types = uris = suites = enabled = ""; field = ""
                }
                /^#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { value = $0; sub(/^[ \t]+/, "", value); add(field, value); next }
                {
                    field = tolower($0); sub(/:.*/, "", field)
                    value = $0; sub(/^[^:]*:[ \t]*/, "", value); add(field, value)
                }
                function add(name, v) {
                    if (name == "types") types = types " " v
                    else if (name == "uris") uris = uris " " v
                    else if (name == "suites") suites = suites " " v
                    else if (name == "enabled") enabled = v
                }
                END { flush() }' "$f" ;;
        esac
    done
}

# mirror+file:/etc/apt/mirrors/debian.list -> its first URI (lines: "URI[<TAB>metadata]").
resolve() {
    local uri=$1 list
    case $uri in
        mirror+file:*)
            list=${uri#mirror+file:}; list=/${list#"${list%%[!/]*}"}   # file:///x and file:/x
            [ -r "$list" ] || return 1
            uri=$(sed -e 's/#.*//' -e 's/[[:space:]].*//' "$list" | grep -m1 . || true) ;;
    esac
    case $uri in http://*|https://*) echo "${uri%/}" ;; *) return 1 ;; esac
}

release='(oldoldstable|oldstable|stable|testing|unstable|sid|buster|bullseye|bookworm|trixie|forky|duke)'
if [ "$kind" = security ]; then
    wanted="^$release-security\$"
else
    wanted="^$release(-updates|-backports|-proposed-updates)?\$"
fi
while read -r uri suite; do
    [[ $suite =~ $wanted ]] || continue
    if found=$(resolve "$uri"); then echo "$found"; exit 0; fi
done < <(entries)

echo "debian-mirror: no http(s) Debian $kind source in $apt_dir/sources.list{,.d/*.list,.d/*.sources};" \
     "set SYSRQ_ROOT_MIRROR / SYSRQ_DEBIAN_MIRROR / SYSRQ_DEBIAN_SECURITY_MIRROR" >&2
exit 1

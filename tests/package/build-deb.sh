#!/bin/bash
# Build the source package and the .deb from this checkout, then lintian the .changes (which
# covers the .dsc, the .deb and the .buildinfo) with --pedantic -I: any tag not overridden in
# debian/ fails. The build runs in a scratch copy of the checkout
# (tracked and untracked-but-not-ignored files), so the checkout is never written to.
#
#   tests/package/build-deb.sh [OUTDIR] [--version-suffix SUFFIX] [--no-lintian]
#   tests/package/build-deb.sh --export DIR
#
# OUTDIR defaults to ./out. --version-suffix (e.g. +test1) builds a higher version with an
# extra changelog entry, for the upgrade test. The last line printed is the .deb's path.
# --export only writes the scratch copy to DIR (to build it elsewhere, e.g. in a chroot).
# Needs the Build-Depends of debian/control (tests/install-deps.sh package); not
# build-essential, which an Architecture: all Python package does not use.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin   # Debian's tools and python3, not a pyenv shim
export LC_ALL=C.UTF-8

out=out suffix="" lintian=yes export=""
while [ $# -gt 0 ]; do
    case $1 in
        --version-suffix) suffix=${2:?--version-suffix needs a value}; shift 2 ;;
        --no-lintian) lintian=no; shift ;;
        --export) export=${2:?--export needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "build-deb: unknown option $1" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[[ -z $suffix || $suffix =~ ^[+~][a-z0-9.+~]+$ ]] \
    || { echo "build-deb: bad --version-suffix '$suffix' (e.g. +test1)" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/sysrq-appliance-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=${export:-$work/src}

# The scratch copy.
mkdir -p "$src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard \
        | (cd "$repo" && while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done) \
        | tar -C "$repo" --null -T - -cf - | tar -C "$src" -xf -
else
    tar -C "$repo" --exclude=./out --exclude=./.git --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
fi
[ -z "$export" ] || exit 0
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$src"

version=$(dpkg-parsechangelog -S Version)
upstream=$(/usr/bin/python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
if [ "${version%%[+~-]*}" != "$upstream" ]; then
    echo "build-deb: debian/changelog is at $version but pyproject.toml at $upstream;" \
         "add a changelog entry for $upstream" >&2
    exit 1
fi
if [ -n "$suffix" ]; then
    version=$version$suffix
    { printf 'sysrq-appliance (%s) unstable; urgency=medium\n\n  * Test rebuild.\n\n -- %s  %s\n\n' \
          "$version" "$(dpkg-parsechangelog -S Maintainer)" "$(date -R)"
      cat debian/changelog; } > debian/changelog.new
    mv debian/changelog.new debian/changelog
fi

dpkg-checkbuilddeps -I || { echo "build-deb: run 'tests/install-deps.sh package' as root" >&2; exit 1; }
echo "build-deb: building sysrq-appliance $version" >&2
if ! dpkg-buildpackage -us -uc -d >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
fi
# dh_auto_test ran the unit tier (debian/rules): its summary, per python3.
grep -E '^[0-9]+ passed' "$work/build.log" | sed 's/^/build-deb: dh_auto_test: tests\/unit: /' >&2 || true
changes=$(ls "$work"/sysrq-appliance_"$version"_*.changes)
for f in $(awk '/^Files:/ {on=1; next} /^[^ ]/ {on=0} on {print $5}' "$changes") "$changes"; do
    cp "$work/$(basename "$f")" "$out/"
done
deb=$out/sysrq-appliance_${version}_all.deb
changes=$out/$(basename "$changes")

[ "$lintian" = yes ] || { echo "$deb"; exit 0; }

# lintian --pedantic -I on the source and the binary: no tag of any severity (E W I P) but
# those overridden in debian/, each with its reason (listed as O). The verdict is read from
# the listing: lintian's --fail-on counts overridden info tags inconsistently (2.116).
# Two tags are about an older lintian rather than the package, and are suppressed only by a
# lintian that does not know our Standards-Version (Debian 12's knows Policy up to 4.6.2):
# "newer-standards-version" (it has not heard of it), and
# "package-supports-alternative-init-but-no-init.d-script" (a systemd-only package; Debian
# 13's lintian no longer has that tag and calls an override for it an error, alien-tag).
# The summary says when this happened.
opts=(--pedantic --display-info --show-overrides)
sv=$(sed -n 's/^Standards-Version: *//p' debian/control)
policy=/usr/share/lintian/data/debian-policy/releases.json
if [ -f "$policy" ] && ! grep -q "\"version\" : \"$sv" "$policy"; then
    old_tags=newer-standards-version,package-supports-alternative-init-but-no-init.d-script
    opts+=(--suppress-tags "$old_tags")
    note=", suppressed as this lintian does not know Policy $sv: $old_tags"
fi
lintian_log=$work/lintian.log
status=0
lintian "${opts[@]}" "$changes" >"$lintian_log" 2>&1 || status=$?
grep -v '^running with root privileges' "$lintian_log" | sed 's/^/  /' >&2
count() { grep -c "^$1: " "$lintian_log" || true; }
echo "lintian $(dpkg-query -W -f '${Version}' lintian) --pedantic -I: $(count E) errors, $(count W) warnings," \
     "$(count I) info, $(count P) pedantic, $(count O) overridden${note:-} (on $(basename "$changes"): source and .deb)" >&2
[ "$status" = 0 ] || { echo "build-deb: lintian did not run (exit $status)" >&2; exit 1; }
[ "$(count E)$(count W)$(count I)$(count P)" = 0000 ] \
    || { echo "build-deb: lintian tags above (fix them, or override them with the reason)" >&2; exit 1; }
echo "$deb"

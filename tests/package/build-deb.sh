#!/bin/bash
# Build the .deb from this checkout, then lintian the .changes (which covers the .deb and the
# .buildinfo): any error or warning fails. The build runs in a scratch copy of the checkout
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
if ! dpkg-buildpackage -us -uc -b -d >"$work/build.log" 2>&1; then
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

# lintian: 0 errors and 0 warnings. The verdict is lintian's own exit status; the listing
# also shows info tags and the overrides (each has its reason in debian/), which would make
# lintian exit non-zero by themselves, hence two runs.
status=0
lintian --fail-on error,warning "$changes" >/dev/null 2>&1 || status=$?
lintian_log=$work/lintian.log
lintian --display-info --show-overrides "$changes" >"$lintian_log" 2>&1 || true
grep -v '^running with root privileges' "$lintian_log" | sed 's/^/  /' >&2
count() { grep -c "^$1: " "$lintian_log" || true; }
echo "lintian $(dpkg-query -W -f '${Version}' lintian): $(count E) errors, $(count W) warnings," \
     "$(count I) info, $(count O) overridden (on $(basename "$changes") and its .deb)" >&2
[ "$status" = 0 ] || { echo "build-deb: lintian failed (exit $status)" >&2; exit 1; }
echo "$deb"

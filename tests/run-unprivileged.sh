#!/bin/sh
# Run a command as an unprivileged user (nobody), as a Debian build or a user would run the
# unit tier, with a private HOME and TMPDIR that are removed afterwards. Run by a user who is
# not root already, it just runs the command. A checkout that user cannot read (one under
# /root, say) is copied into the scratch directory first and the command runs there.
#   tests/run-unprivileged.sh CMD...
set -eu
if [ "$(id -u)" != 0 ]; then exec "$@"; fi
user=${SYSRQ_TEST_USER:-nobody}
group=$(id -gn "$user")
as_user() { setpriv --reuid="$user" --regid="$group" --clear-groups "$@"; }
# Under /run, not the 1777 /tmp: the program rightly refuses secrets on a path that others
# can write to, and the tests write secrets (tests/conftest.py reads SYSRQ_TEST_TMP).
scratch=$(mktemp -d /run/sysrq-unit.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chmod 0755 "$scratch"
mkdir "$scratch/tmp"
chown "$user" "$scratch/tmp"
chmod 0700 "$scratch/tmp"
here=$(pwd)
if ! as_user test -r "$here" -a -x "$here" -a -r "$here/tests/conftest.py"; then
    mkdir "$scratch/src"
    tar -C "$here" --exclude=./.git --exclude=./out -cf - . | tar -C "$scratch/src" -xf -
    chmod -R a+rX "$scratch/src"
    here=$scratch/src
fi
cd "$here"
as_user env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$scratch/tmp" TMPDIR="$scratch/tmp" \
    SYSRQ_TEST_TMP="$scratch/tmp" LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"

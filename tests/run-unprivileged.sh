#!/bin/sh
# Run a command as an unprivileged user (nobody), as a Debian build or a user would run the
# unit tier, with a private HOME and TMPDIR that are removed afterwards. Run by a user who is
# not root already, it just runs the command.
#   tests/run-unprivileged.sh CMD...
set -eu
if [ "$(id -u)" != 0 ]; then exec "$@"; fi
user=${SYSRQ_TEST_USER:-nobody}
here=$(pwd)
setpriv --reuid="$user" --regid="$(id -gn "$user")" --clear-groups test -r "$here" -a -x "$here" \
    || { echo "run-unprivileged: $user cannot read $here; use a checkout others can read" >&2; exit 1; }
# Under /run, not the 1777 /tmp: the program rightly refuses secrets on a path that others
# can write to, and the tests write secrets (tests/conftest.py reads SYSRQ_TEST_TMP).
scratch=$(mktemp -d /run/sysrq-unit.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chown "$user" "$scratch"
setpriv --reuid="$user" --regid="$(id -gn "$user")" --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$scratch" TMPDIR="$scratch" \
    SYSRQ_TEST_TMP="$scratch" LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 "$@"

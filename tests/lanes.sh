#!/bin/bash
# Run lanes of make targets side by side, each lane's targets one after another, every output
# line tagged with its lane; then one line per lane, and exit 1 if any lane failed.
#
#   tests/lanes.sh 'NAME: TARGET...' 'NAME: TARGET...' ...
#
# Why: `make check` on this machine kind (two cores) is mostly single-threaded work — pytest,
# a package build, lintian — or guests waiting for ssh; run one after another, a core sits
# idle for most of an hour. A failing lane does not stop the others (their results are still
# worth having); TERM or INT stops every lane (each runs in its own process group).
set -uo pipefail
[ $# -gt 0 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
MAKE=${MAKE:-make}

pids=() names=()
stop() { local p; for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; }
trap 'stop; wait; exit 130' INT TERM

for spec in "$@"; do
    name=${spec%%:*} targets=${spec#*:}
    [ "$name" != "$spec" ] && [ -n "${targets// }" ] \
        || { echo "lanes: '$spec' is not 'NAME: TARGET...'" >&2; stop; exit 2; }
    # setsid: a process group of its own, so that stop() reaches make and everything under it.
    # shellcheck disable=SC2086
    setsid bash -o pipefail -c '
        start=$(date +%s)
        "$1" --no-print-directory $3 2>&1 | sed -u "s/^/[$2] /"
        rc=$?
        echo "[$2] lane ended: exit $rc after $(( $(date +%s) - start )) s"
        exit $rc' lane "$MAKE" "$name" "$targets" &
    pids+=("$!") names+=("$name")
done

failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "lanes: failed: ${failed[*]}" >&2
    exit 1
fi
echo "lanes: all passed (${names[*]})"

#!/bin/bash
# Run lanes of make targets side by side, each lane's targets one after another (make -k: a
# failed tier does not skip the rest of its lane), every output line tagged with its lane; then
# one line per lane, and exit 1 if any lane failed.
#
#   tests/lanes.sh 'NAME: TARGET...' 'NAME: TARGET...' ...     (NAME: letters, digits, - _)
#
# Why: `make check` on this machine kind (two cores) is mostly single-threaded work — pytest,
# a package build, lintian — or guests waiting for ssh; run one after another, a core sits
# idle for most of an hour. A failing lane does not stop the others (their results are still
# worth having). INT, TERM or HUP is passed on to every lane (each is a process group of its
# own), and we wait for the lanes' own clean-up (VMs, namespaces) before exiting.
set -uo pipefail
MAKE=${MAKE:-make}
CLEANUP_WAIT=600   # seconds a lane may take to clean up after a signal before it is killed

[ $# -gt 0 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
names=() lanes=()
for spec in "$@"; do   # all checked before any lane starts
    name=${spec%%:*} targets=${spec#*:}
    [[ $spec == *:* && $name =~ ^[A-Za-z0-9_-]+$ && $targets =~ [^[:space:]] ]] ||
        { echo "lanes: '$spec' is not 'NAME: TARGET...' (NAME: letters, digits, - and _)" >&2; exit 2; }
    names+=("$name") lanes+=("$targets")
done

pids=()
stop() {   # stop SIGNAL: pass it on to every lane, then wait (bounded) for each group to be gone
    local p waited=0
    for p in "${pids[@]}"; do kill -s "$1" -- "-$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        while kill -0 -- "-$p" 2>/dev/null; do
            if [ $waited -ge $CLEANUP_WAIT ]; then kill -KILL -- "-$p" 2>/dev/null; break; fi
            sleep 1; waited=$((waited + 1))
        done
    done
}
trap 'stop INT; exit 130' INT
trap 'stop TERM; exit 143' TERM
trap 'stop HUP; exit 129' HUP

set -m   # every background job a process group of its own (set in parent and child: no race)
for i in "${!names[@]}"; do
    # The lane's shell waits for make's own clean-up after a signal (a trap defers to the
    # running pipeline); the tagger ignores signals so that clean-up's lines still get out.
    # shellcheck disable=SC2016
    bash -o pipefail -c '
        trap : INT TERM HUP
        start=$(date +%s)
        "$1" -k --no-print-directory $3 2>&1 | { trap "" INT TERM HUP; exec sed -u "s/^/[$2] /"; }
        rc=$?
        echo "[$2] lane ended: exit $rc after $(( $(date +%s) - start )) s"
        exit $rc' lane "$MAKE" "${names[$i]}" "${lanes[$i]}" </dev/null &
    pids+=("$!")
done
set +m

failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "lanes: failed: ${failed[*]}" >&2
    exit 1
fi
echo "lanes: all passed (${names[*]})"

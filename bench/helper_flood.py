#!/usr/bin/env python3
"""root's request through the operators' helper while one operator floods it, against the
same request with no flood (target: median ratio <= 3).

The flood: one operator (nobody, holding a throwaway operators' group) connects as fast as
the backlog lets it and never sends, reads or closes: its first MAX_PER_UID connections
take its slots (each until READ_TIMEOUT), every further one must be refused. A refusal that
the accept loop tells itself holds the loop up to DRAIN_SECONDS (and its audit entry up to
JOURNAL_WAIT), so the next operator's rescue waits behind the whole queue.

The helper runs as systemd starts it (the socket on fd 3) in a throwaway namespace with
loopback only, so root's `send web1 h` ends at once (no route, nothing leaves: exit 1). Each
request is the real client (opsocket.request), timed from connect to the helper's exit line.

    bench/helper_flood.py [--runs 10]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from netns import netns, scratch as scratch_dir, sender_etc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "appliance"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from operators import NOBODY, Helper, remove_socket_dir, socket_dir, unused_gid  # noqa: E402
from sysrq_appliance import opsocket  # noqa: E402
from sysrq_appliance.errors import ApplianceError  # noqa: E402

PYTHON = "/usr/bin/python3"
FLOODER = """
import select, socket, sys, time
held = []
while not select.select([sys.stdin], [], [], 0)[0]:   # until the bench closes our stdin
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:          # the backlog is full
        s.close()
    else:
        held.append(s)
        if len(held) == 20:
            print("flooding", flush=True)
        if len(held) > 400:          # our own descriptors: the oldest go
            held.pop(0).close()
    time.sleep(0.005)
"""


def round_trip(path):
    """Seconds from connect to the helper's exit line, and that exit (or the client's error)."""
    start = time.perf_counter()
    try:
        outcome = opsocket.request(path, ["--", "web1", "h"], lambda line: None,
                                   lambda line: None, "root", 60)
    except ApplianceError as exc:
        outcome = str(exc)
    return time.perf_counter() - start, outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("helper_flood.py: run as root (a namespace, and the flood as another user)")
    with scratch_dir() as scratch, netns() as ns:
        gid, directory = unused_gid(), socket_dir()
        helper = Helper(directory, sender_etc(scratch), os.path.join(scratch, "state"), gid,
                        prefix=("ip", "netns", "exec", ns))
        try:
            round_trip(helper.path)   # the helper up, the page cache warm
            quiet = [round_trip(helper.path) for _ in range(args.runs)]
            flooder = subprocess.Popen([PYTHON, "-c", FLOODER, helper.path], user=NOBODY,
                                       group=NOBODY, extra_groups=[gid], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE)
            try:
                if flooder.stdout.readline() != b"flooding\n":
                    sys.exit("helper_flood.py: the flooder did not start")
                flooded = [round_trip(helper.path) for _ in range(args.runs)]
            finally:
                flooder.communicate(b"", timeout=60)
        finally:
            out, err = helper.stop()
            remove_socket_dir(directory)
    for name, runs in (("quiet", quiet), ("flooded", flooded)):
        outcomes = sorted({str(outcome) for _, outcome in runs})
        print(f"{name}: median {statistics.median(t for t, _ in runs) * 1000:.1f} ms, "
              f"max {max(t for t, _ in runs) * 1000:.1f} ms, outcomes {outcomes}")
    ratio = statistics.median(t for t, _ in flooded) / statistics.median(t for t, _ in quiet)
    print(f"{args.runs} requests each: ratio of the medians {ratio:.2f} (target <= 3)")
    if out or err:
        print("the helper printed:", out + err)


if __name__ == "__main__":
    main()

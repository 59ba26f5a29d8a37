#!/usr/bin/env python3
"""apply / no-op re-apply / down wall times for N peers, against `ip -batch` (+ iptables-restore).

Each measurement runs in a fresh network namespace. This host's kernel has no ESP, so here
the controller runs with --without-esp (policies and rules, no SAs) and the baseline adds the
same policies; in a guest of the two-VM harness (a kernel with ESP) --with-esp measures the
SAs too (make bench-guest).

    bench/apply_scale.py [--sizes 1,10,100,1000] [--repeat 3] [--role sender|target] [--with-esp]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from fleet import baseline_batch, baseline_restore, scratch_install
from netns import netns, scratch as scratch_dir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = {"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]}


def timed(argv, stdin=None):
    start = time.perf_counter()
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(argv[:8])}...\n{result.stdout}{result.stderr}")
    return elapsed, result.stdout


def controller_run(n, role, with_sa):
    with scratch_dir() as scratch, netns() as ns:
        base = scratch_install(scratch, ns, n, role, with_sa)
        force = ["--force"] if role == "target" else []
        apply_s, _ = timed(base + ["apply", *force])
        noop_s, out = timed(base + ["apply", *force])
        assert "nothing to change" in out, out
        down_s, _ = timed(base + ["down"])
        return apply_s, noop_s, down_s


def baseline_run(n, role, with_sa):
    with netns() as ns:
        seconds, _ = timed(["ip", "-n", ns, "-batch", "-"], baseline_batch(n, role, with_sa=with_sa))
        if role == "target":
            more, _ = timed(["ip", "netns", "exec", ns, "iptables-nft-restore", "--noflush"],
                            baseline_restore(n))
            seconds += more
        return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--role", choices=("sender", "target"), default="sender")
    parser.add_argument("--with-esp", action="store_true", help="SAs too (a kernel with ESP)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    print(f"role {args.role}, {'SAs and ' if args.with_esp else ''}policies"
          f"{' and rules' if args.role == 'target' else ''}, median of {args.repeat}, seconds "
          "(ratio = apply / baseline)")
    print(f"{'N':>6} {'baseline':>9} {'apply':>8} {'ratio':>6} {'no-op':>7} {'down':>7}")
    medians = {}
    for n in sizes:
        runs = [controller_run(n, args.role, args.with_esp) for _ in range(args.repeat)]
        base = statistics.median(baseline_run(n, args.role, args.with_esp)
                                 for _ in range(args.repeat))
        apply_s, noop_s, down_s = (statistics.median(r[i] for r in runs) for i in range(3))
        medians[n] = apply_s
        print(f"{n:>6} {base:>9.3f} {apply_s:>8.3f} {apply_s / base:>6.2f} {noop_s:>7.3f} "
              f"{down_s:>7.3f}", flush=True)
    if len(sizes) > 1:
        lo, hi = sizes[1] if len(sizes) > 2 else sizes[0], sizes[-1]
        per = (medians[hi] - medians[lo]) / (hi - lo) * 1000
        print(f"per-target apply cost between N={lo} and N={hi}: {per:.2f} ms")


if __name__ == "__main__":
    main()

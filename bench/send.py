#!/usr/bin/env python3
"""`sysrq-appliance send --dry-run` start-to-exit time against `python3 -c pass`.

Both on the same interpreter (/usr/bin/python3), interleaved, RUNS times each; prints the
medians and their ratio (target: <= 1.3).

    bench/send.py [--runs 20]
"""

import argparse
import os
import statistics
import subprocess
import time

from netns import scratch as scratch_dir, sender_etc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = {"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]}
PYTHON = "/usr/bin/python3"


def wall(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with scratch_dir() as scratch:
        send = [PYTHON, "-m", "sysrq_appliance", "--config", sender_etc(scratch),
                "--state-dir", os.path.join(scratch, "state"), "send", "web1", "s", "--dry-run"]
        bare = [PYTHON, "-c", "pass"]
        wall(send), wall(bare)   # warm the page cache
        pairs = [(wall(bare), wall(send)) for _ in range(args.runs)]
    base = statistics.median(p[0] for p in pairs)
    ours = statistics.median(p[1] for p in pairs)
    print(f"{args.runs} runs: python3 -c pass {base * 1000:.1f} ms, send --dry-run "
          f"{ours * 1000:.1f} ms, ratio {ours / base:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()

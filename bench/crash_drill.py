#!/usr/bin/env python3
"""Crash-consistency drill: SIGKILL the controller at random points of `apply` and `down`.

For a target config with N peers (policies, firewall chain, password, kernel.sysrq; no SAs
on this host's kernel), repeat KILLS times, alternating apply and down: start it, kill it
after a random delay within its measured duration, then check that the next `apply`
converges (status in sync) and that `down` leaves nothing of ours behind.

    bench/crash_drill.py [--peers 100] [--kills 50] [--seed S]
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

from fleet import scratch_install
from netns import netns, scratch as scratch_dir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = {"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]}


class Target:
    def __init__(self, ns, scratch, peers):
        self.ns, self.scratch = ns, scratch
        self.sysctl = os.path.join(scratch, "sysrq")
        self.base = scratch_install(scratch, ns, peers, "target")

    def argv(self, verb, *extra):
        return self.base + [verb, *(["--force"] if verb == "apply" else []), *extra]

    def run(self, verb, *extra):
        result = subprocess.run(self.argv(verb, *extra), capture_output=True, text=True,
                                env=ENV)
        drift = verb == "status" and result.returncode == 4   # a report all the same
        if result.returncode != 0 and not drift:
            raise AssertionError(f"{verb} failed: {result.stderr.strip()}")
        return result.stdout

    def killed_run(self, verb, delay):
        # A process group of its own, so the kill reaches python behind `ip netns exec`.
        proc = subprocess.Popen(self.argv(verb), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def classify(self, verb):
        """Where the kill caught the run: before its first change, midway, or done."""
        if self.nothing_left():
            return "untouched" if verb == "apply" else "complete"
        in_sync = json.loads(self.run("status", "--json"))["in_sync"]
        if in_sync:
            return "complete" if verb == "apply" else "untouched"
        return "partial"

    def nothing_left(self):
        policies = subprocess.run(["ip", "-n", self.ns, "xfrm", "policy"], capture_output=True,
                                  text=True).stdout
        rules = subprocess.run(["ip", "netns", "exec", self.ns, "iptables-nft-save"],
                               capture_output=True, text=True).stdout
        with open(self.sysctl) as f:
            sysctl = f.read().strip()
        return policies == "" and "SYSRQ-APPLIANCE" not in rules and sysctl == "1"


def measure(target, verb):
    start = time.perf_counter()
    target.run(verb)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    converged = clean = 0
    outcomes = {"untouched": 0, "partial": 0, "complete": 0}
    with scratch_dir() as scratch, netns() as ns:
        target = Target(ns, scratch, args.peers)
        # Start-up and observation take most of a run: aim the kills at the changes.
        reading = measure(target, "plan")
        durations = {"apply": measure(target, "apply"), "down": measure(target, "down")}
        print(f"seed {seed}; {args.peers} peers; uninterrupted: plan {reading:.2f} s, apply "
              f"{durations['apply']:.2f} s, down {durations['down']:.2f} s; kills land in "
              f"[{0.8 * reading:.2f} s, the run's duration]")
        for i in range(args.kills):
            verb = "apply" if i % 2 == 0 else "down"
            if verb == "down":
                target.run("apply")
            target.killed_run(verb, rng.uniform(0.8 * reading, durations[verb]))
            outcomes[target.classify(verb)] += 1
            target.run("apply")
            converged += json.loads(target.run("status", "--json"))["in_sync"]
            target.run("down")
            clean += target.nothing_left()
    print(f"{args.kills} kills: apply converged after {converged}, down left nothing after "
          f"{clean}; the kill found the kernel " + ", ".join(f"{k} {v}" for k, v in
                                                          outcomes.items()))
    sys.exit(0 if converged == clean == args.kills else 1)


if __name__ == "__main__":
    main()

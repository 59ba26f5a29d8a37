#!/usr/bin/env python3
"""`sysrq-appliance fleet render` for an inventory of N targets (and A admin hosts).

Measured, one run each, in a scratch directory: a render from scratch, a second render with
nothing changed, one target added, one removed. Baselines in the same run: `cp -a` of the
rendered tree into a new directory (the same files and directories made by one C program,
without fsync) and `cat` of every file (reading what an unchanged render must read).
Targets: from scratch <= 10 s, unchanged <= 1 s at N=1000.

    bench/fleet_render.py [--targets 1000] [--admins 1]
"""

import argparse
import ipaddress
import os
import subprocess
import time

from netns import scratch as scratch_dir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = {"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]}


def inventory(path, targets, admins, extra=0):
    lines = ["admins:"]
    lines += [f"  - {{name: admin{i + 1}, address: {ipaddress.ip_address('10.63.0.1') + i}}}"
              for i in range(admins)]
    lines.append("targets:")
    lines += [f"  - {{name: t{i}, address: {ipaddress.ip_address('10.64.0.1') + i}}}"
              for i in range(targets + extra)]
    lines.append("groups:")
    lines.append("  half: [" + ", ".join(f"t{i}" for i in range(targets // 2 or 1)) + "]")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def wall(argv, **kwargs):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV, **kwargs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--admins", type=int, default=1)
    args = parser.parse_args()
    with scratch_dir() as scratch:
        inv, out = os.path.join(scratch, "fleet.yaml"), os.path.join(scratch, "out")
        render = ["/usr/bin/python3", "-m", "sysrq_appliance", "fleet", "render", inv,
                  "--out", out]
        inventory(inv, args.targets, args.admins)
        rows = [("from scratch", wall(render), 10.0)]
        copy = wall(["cp", "-a", out, os.path.join(scratch, "copy")])
        read = wall(["sh", "-c", f"find {out} -type f -exec cat {{}} + >/dev/null"])
        rows.append(("unchanged", wall(render), 1.0))
        inventory(inv, args.targets, args.admins, extra=1)
        rows.append(("one target added", wall(render), None))
        inventory(inv, args.targets, args.admins)
        rows.append(("one target removed", wall(render), None))
        files = sum(len(f) for _, _, f in os.walk(out))
    print(f"fleet render: {args.targets} targets, {args.admins} admin host(s), {files} files")
    print(f"baselines: cp -a of the tree {copy:.3f} s, cat of every file {read:.3f} s")
    print(f"{'run':20} {'seconds':>8} {'target':>7} {'vs cp -a':>9} {'vs cat':>7}")
    for name, seconds, target in rows:
        shown = f"{target:g}" if target else "-"
        print(f"{name:20} {seconds:8.3f} {shown:>7} {seconds / copy:9.1f} "
              f"{seconds / read:7.1f}" + ("" if not target or seconds <= target
                                           else "  not met"))


if __name__ == "__main__":
    main()

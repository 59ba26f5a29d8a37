#!/usr/bin/env python3
"""`sysrq-appliance send --all h` to N targets: one process, all requests out before any
wait, so the whole send takes about --wait, not N waits in a row (target: <= --wait + 0.5 s).

Three throwaway namespaces, no link outside: the admin host (the fleet's admin1 half, from
`fleet render`), one that holds the first half of the targets' addresses and answers (the
ICMP port-unreachable that confirms), one that holds the rest and drops UDP port 9 silently
(they wait the full --wait). This host's kernel may have no ESP, so two runs:

- policies: `apply --without-esp` on the admin host (2 policies per target), then the CLI
  as is: the kernel refuses every request without our SA (nothing leaves in plaintext), so
  this is the fixed cost — start-up, config, N passwords, N sequence numbers, N sockets;
- answers: the same CLI code in one process with the one change a kernel without ESP needs,
  no IPsec requirement on the sending sockets (and no policies): the waits for real.

    bench/send_fleet.py [--targets 1000] [--wait 1]
"""

import argparse
import ipaddress
import os
import subprocess
import time
import uuid

from netns import scratch as scratch_dir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = {"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]}
PYTHON = "/usr/bin/python3"
ADMIN = "10.63.0.1"
# The CLI, except that the sending sockets require no SA (reqid None): the kernel has no ESP.
WITHOUT_IPSEC = ("import sys; from sysrq_appliance import cli, plan; "
                 "plan.reqids = lambda peers: dict.fromkeys((p.name for p in peers)); "
                 "sys.exit(cli.main(sys.argv[1:]))")


def target_address(i):
    return str(ipaddress.ip_address("10.64.0.1") + i)


def ns_run(ns, *argv, check=True, **kwargs):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=check, env=ENV, **kwargs)


def star(names, count):
    """admin <-> answering (targets 0..count/2-1), admin <-> silent (the rest), each pair
    joined by one veth; the targets' addresses on the far side's loopback."""
    admin, answering, silent = names
    half = count // 2
    for i, (far, net) in enumerate(((answering, "10.65.0"), (silent, "10.66.0"))):
        link = f"sra{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "-n", admin, "link", "add", f"eth{i}", "type", "veth", "peer",
                        "name", link, "netns", far], check=True)
        ns_run(far, "ip", "link", "set", link, "name", "eth0")
        ns_run(admin, "ip", "addr", "add", f"{net}.1/30", "dev", f"eth{i}")
        ns_run(far, "ip", "addr", "add", f"{net}.2/30", "dev", "eth0")
        for ns, dev in ((admin, f"eth{i}"), (far, "eth0")):
            ns_run(ns, "ip", "link", "set", dev, "up")
        ns_run(far, "ip", "route", "add", f"{ADMIN}/32", "via", f"{net}.1")
        members = range(half) if far == answering else range(half, count)
        batch = "".join(f"addr add {target_address(t)}/32 dev lo\n" for t in members)
        ns_run(far, "ip", "-batch", "-", input=batch.encode())
        ns_run(admin, "ip", "-batch", "-", input="".join(
            f"route add {target_address(t)}/32 via {net}.2\n" for t in members).encode())
    ns_run(admin, "ip", "addr", "add", f"{ADMIN}/32", "dev", "lo")
    # One sender asks each target once; here one namespace answers for half the fleet, so
    # its ICMP rate limits (per peer and per namespace) must not stand in for a real fleet's.
    for key, value in (("icmp_ratelimit", 0), ("icmp_msgs_per_sec", 1000000),
                       ("icmp_msgs_burst", 1000000)):
        ns_run(answering, "sysctl", "-q", "-w", f"net.ipv4.{key}={value}")
    ns_run(silent, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP")


def render(scratch, count):
    inv = os.path.join(scratch, "fleet.yaml")
    etc = os.path.join(scratch, "fleet", "admin1")
    with open(inv, "w") as f:
        f.write(f"admins:\n  - {{name: admin1, address: {ADMIN}}}\ntargets:\n")
        f.write("".join(f"  - {{name: t{i}, address: {target_address(i)}}}\n"
                        for i in range(count)))
        f.write(f"sysrq: {{allow: [sync, remount, reboot, dump]}}\netc_dir: {etc}\n")
    subprocess.run([PYTHON, "-m", "sysrq_appliance", "fleet", "render", inv, "--out",
                    os.path.join(scratch, "fleet")], check=True, stdout=subprocess.DEVNULL,
                   env=ENV)
    return os.path.join(etc, "appliance.yaml")


def timed(ns, argv):
    start = time.perf_counter()
    result = ns_run(ns, *argv, check=False, capture_output=True, text=True)
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=1.0)
    args = parser.parse_args()
    names = [f"sra-bench-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with scratch_dir() as scratch:
        try:
            for name in names:
                subprocess.run(["ip", "netns", "add", name], check=True)
                ns_run(name, "ip", "link", "set", "lo", "up")
            star(names, args.targets)
            config = render(scratch, args.targets)
            common = ["--config", config, "--state-dir", os.path.join(scratch, "state")]
            ns_run(names[0], PYTHON, "-m", "sysrq_appliance", *common, "--sysfs-dir",
                   scratch, "--without-esp", "apply", stdout=subprocess.DEVNULL)
            send = [*common, "send", "--all", "h", "--wait", f"{args.wait:g}"]
            refused, r1 = timed(names[0], [PYTHON, "-m", "sysrq_appliance", *send])
            ns_run(names[0], PYTHON, "-m", "sysrq_appliance", *common, "--sysfs-dir",
                   scratch, "--without-esp", "down", stdout=subprocess.DEVNULL)
            answered, r2 = timed(names[0], [PYTHON, "-c", WITHOUT_IPSEC, *send])
        finally:
            for name in names:
                subprocess.run(["ip", "netns", "delete", name], check=False)
    budget = args.wait + 0.5
    print(f"send --all to {args.targets} targets, --wait {args.wait:g} (target: <= "
          f"{budget:g} s; one wait after another would take {args.targets // 2 * args.wait:g} s "
          "for the silent half alone)")
    for name, seconds, result in (("policies (refused)", refused, r1),
                                  ("answers", answered, r2)):
        print(f"  {name:20} {seconds:7.3f} s  ratio to the target {seconds / budget:5.2f}  "
              f"exit {result.returncode}  {result.stdout.splitlines()[-1] if result.stdout else ''}")


if __name__ == "__main__":
    main()

"""The sender, for real, between two throwaway namespaces.

This host's kernel has no ESP, so no SA can exist here. What is proven: `send` never lets a
request out in plaintext (the kernel refuses it: the sending socket requires our SA), and
the mechanism the confirmation rests on — a UDP packet that reaches a closed port comes back
as ICMP port-unreachable (confirmed), one a firewall drops silently does not — using the
sender's socket code without the IPsec requirement. The real-kernel tier proves the same
through real ESP.
"""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _sender_config(tmp_path, sender, target):
    etc = tmp_path / "etc"
    subprocess.run(["/usr/bin/python3", "-m", "sysrq_appliance", "pair",
                    "--target", f"web1={target.address}", "--sender", f"admin1={sender.address}",
                    "--out", str(tmp_path / "bundle"), "--etc-dir", str(etc)],
                   check=True, capture_output=True, env=_env())
    subprocess.run(["cp", "-a", f"{tmp_path}/bundle/sender/.", str(etc)], check=True)
    return etc / "appliance.yaml"


def _env():
    return {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}


def _send(ns, cfg, tmp_path, *extra):
    return subprocess.run(["ip", "netns", "exec", ns.name, "/usr/bin/python3", "-m",
                           "sysrq_appliance", "--config", str(cfg), "--state-dir",
                           str(tmp_path / "state"), "send", "web1", "h", *extra],
                          capture_output=True, text=True, env=_env())


def _mechanism(ns, *args):
    """sender.send() without the IPsec requirement (reqid None), inside `ns`."""
    code = ("import sys; from sysrq_appliance import sender; "
            f"o = sender.send(b'h,1,x,00', '10.10.25.1', '10.10.25.7', 9, {args[0]}, "
            f"{args[1]}); print(o.confirmed)")
    return ns.run("env", f"PYTHONPATH={ROOT / 'appliance'}", "/usr/bin/python3", "-c", code)


def _udp9_packets(target):
    counted = target.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    return int(counted.splitlines()[2].split()[0])


def test_send_never_leaves_in_plaintext_without_our_sa(linked_netns, tmp_path):
    sender, target = linked_netns
    target.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9")   # a counter
    cfg = _sender_config(tmp_path, sender, target)
    result = _send(sender, cfg, tmp_path, "--wait", "0.3", "--count", "3")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ("sysrq-appliance: cannot send from 10.10.25.1 to 10.10.25.7:9: "
                             "the kernel has no ESP SA of ours to send it through and refuses "
                             "to send it in plaintext; run 'sysrq-appliance apply' on this "
                             "host (and check 'status')\n")
    assert result.stdout == ""
    assert _udp9_packets(target) == 0
    # The same packets without the socket's IPsec requirement do arrive: the counter works.
    assert _mechanism(sender, 1, 0.3).stdout.strip() == "True"
    assert _udp9_packets(target) == 1


def test_closed_port_answer_is_a_confirmation(linked_netns):
    sender, _ = linked_netns
    assert _mechanism(sender, 1, 1.0).stdout.strip() == "True"


def test_silent_drop_is_not_confirmed(linked_netns):
    sender, target = linked_netns
    target.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP")
    assert _mechanism(sender, 3, 0.3).stdout.strip() == "False"
    assert _udp9_packets(target) == 3   # all three copies reached the target's INPUT


def test_send_from_an_address_not_on_this_host_fails_cleanly(make_netns, tmp_path):
    lonely = make_netns()
    lonely.address = "10.10.25.1"

    class Target:
        address = "10.10.25.7"
    cfg = _sender_config(tmp_path, lonely, Target)
    result = _send(lonely, cfg, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == ("sysrq-appliance: cannot send from 10.10.25.1 to "
                                     "10.10.25.7:9: Cannot assign requested address")

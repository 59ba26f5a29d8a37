"""The sender's confirmation, for real, between two throwaway namespaces.

No xt_SYSRQ or IPsec here: what is proven is the mechanism the confirmation rests on. A UDP
packet that reaches a closed port comes back as ICMP port-unreachable (confirmed); one that
a firewall drops silently does not (not confirmed).
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


def test_closed_port_answer_is_a_confirmation(linked_netns, tmp_path):
    sender, target = linked_netns
    cfg = _sender_config(tmp_path, sender, target)
    result = _send(sender, cfg, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("confirmed: web1 accepted 'h'"), result.stdout


def test_silent_drop_is_not_confirmed(linked_netns, tmp_path):
    sender, target = linked_netns
    target.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP")
    cfg = _sender_config(tmp_path, sender, target)
    result = _send(sender, cfg, tmp_path, "--wait", "0.3", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent, not confirmed: no answer from web1 within 0.3 s")
    counted = target.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    assert " 3 " in counted.splitlines()[2]  # all three copies reached the target's INPUT


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

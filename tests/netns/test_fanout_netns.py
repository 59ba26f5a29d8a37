"""send to several targets at once, for real, between throwaway namespaces: one admin
namespace joined to each target namespace by a veth of its own (a star, no other link).

Without ESP (this host's kernel may lack it): the fan-out's mechanism — every request out
before any wait, each answer reported as it arrives — through sender.send_many without the
socket's IPsec requirement, and `send --all` refusing plaintext for every target. With ESP
(the kernel is asked first; tests/realkernel runs them): `send --all` and a group sequence
confirmed through a real tunnel per target, and a target that does not answer named.
"""

import json
import pathlib
import subprocess
import sys
import uuid

import pytest

from appliance_env import ROOT, Installation, env

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))
from journal_sink import JournalSink  # noqa: E402
from operators import NOBODY, Helper, remove_socket_dir, socket_dir, unused_gid  # noqa: E402

INVENTORY = """\
admins:
  - {{name: admin1, address: 10.10.25.1}}
targets:
{targets}
groups:
  web: [web1, web3]
sysrq: {{allow: [{allow}]}}
etc_dir: /@ETC@
"""


@pytest.fixture
def star(make_netns):
    """(admin, [target, ...]): the admin namespace holds 10.10.25.1 and one veth per
    target, each target 10.10.25.(11+i)/24 on its end. No default route anywhere."""
    def build(count):
        admin = make_netns()
        admin.address = "10.10.25.1"
        admin.run("ip", "addr", "add", "10.10.25.1/32", "dev", "lo")
        targets = []
        for i in range(count):
            target = make_netns()
            target.address, target.name_in_fleet = f"10.10.25.{11 + i}", f"web{i + 1}"
            link = f"sra{uuid.uuid4().hex[:8]}"
            subprocess.run(["ip", "-n", admin.name, "link", "add", f"eth{i}", "type", "veth",
                            "peer", "name", link, "netns", target.name], check=True)
            target.run("ip", "link", "set", link, "name", "eth0")
            target.run("ip", "addr", "add", f"{target.address}/24", "dev", "eth0")
            target.run("ip", "link", "set", "eth0", "up")
            admin.run("ip", "link", "set", f"eth{i}", "up")
            admin.run("ip", "route", "add", f"{target.address}/32", "dev", f"eth{i}", "src",
                      admin.address)
            targets.append(target)
        return admin, targets
    return build


def fleet(tmp_path, targets, allow="sync, remount, reboot, signal"):
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(INVENTORY.format(allow=allow, targets="\n".join(
        f"  - {{name: {t.name_in_fleet}, address: {t.address}}}" for t in targets)))
    out = tmp_path / "fleet"
    subprocess.run(["/usr/bin/python3", "-m", "sysrq_appliance", "fleet", "render",
                    str(inventory), "--out", str(out)], check=True, capture_output=True,
                   env=env())
    return out


def udp9_packets(ns):
    counted = ns.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    return int(counted.splitlines()[2].split()[0])


def test_every_request_leaves_before_any_wait_and_answers_come_as_they_arrive(star):
    admin, targets = star(3)
    targets[1].run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP")
    code = (
        "import json; from sysrq_appliance import sender\n"
        "order = []\n"
        f"requests = [sender.Request(a, b'h,1,x,00', None) for a in {[t.address for t in targets]}]\n"
        "results = sender.send_many(requests, '10.10.25.1', 9, 2, 1.0,\n"
        "                           lambda i, r: order.append(i))\n"
        "print(json.dumps({'order': order, 'confirmed': [r.confirmed for r in results]}))\n")
    result = admin.run("env", f"PYTHONPATH={ROOT / 'appliance'}", "/usr/bin/python3", "-c",
                       code)
    found = json.loads(result.stdout)
    assert found["confirmed"] == [True, False, True]
    assert sorted(found["order"][:2]) == [0, 2] and found["order"][2] == 1
    assert udp9_packets(targets[1]) == 2      # both copies reached the silent one


def test_send_all_never_leaves_in_plaintext_without_our_sas(star, tmp_path):
    admin, targets = star(3)
    for target in targets:
        target.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9")   # a counter
    sender = Installation(admin, tmp_path, "sender", half="admin1",
                          bundle=fleet(tmp_path, targets))
    sender.cli("apply", check=True)               # policies, no SAs
    sent = sender.cli("send", "--all", "h", "--wait", "0.3")
    assert sent.returncode == 1, sent.stdout + sent.stderr
    lines = sent.stdout.splitlines()
    assert sorted(line.split(":")[1] for line in lines[:3]) == [" web1", " web2", " web3"]
    assert all(line.startswith("not sent: ") and "no ESP SA of ours" in line
               for line in lines[:3])
    assert lines[3] == "summary: 3 targets: 3 not sent (web1, web2, web3)"
    assert sent.stderr == ("sysrq-appliance: nothing was sent to any of the 3 targets (see "
                           "the lines above)\n")
    assert [udp9_packets(t) for t in targets] == [0, 0, 0]
    group = sender.cli("send", "--group", "web", "--sequence", "thaw", "--wait", "0.3")
    assert group.returncode == 1
    assert group.stdout.splitlines()[0] == "thaw on group web (2 targets): j"
    sender.cli("down", check=True)


def test_send_all_through_the_operators_helper_is_audited_per_target(star, tmp_path):
    """A member's `send --all` through the helper ends as root's own does (lines, exit code),
    and each writes one audit entry per target, naming that target and its address."""
    admin, targets = star(3)
    sender = Installation(admin, tmp_path, "sender", half="admin1",
                          bundle=fleet(tmp_path, targets))
    sender.cli("apply", check=True)               # policies, no SAs: nothing can leave
    sink, gid, directory = JournalSink(tmp_path), unused_gid(), socket_dir()
    helper = Helper(directory, sender.config, sender.state, gid,
                    prefix=("ip", "netns", "exec", admin.name, *sink.wrap()))
    try:
        argv = ("send", "--all", "h", "--wait", "0.3")
        root = subprocess.run(["ip", "netns", "exec", admin.name, *sink.wrap(),
                               "/usr/bin/python3", "-m", "sysrq_appliance", "--config",
                               str(sender.config), "--state-dir", str(sender.state), *argv],
                              capture_output=True, env=env())
        operator = helper.client(*argv, user=NOBODY, groups=[gid])
        entries = sink.entries()
    finally:
        out, err = helper.stop()
        remove_socket_dir(directory)
        sink.close()
    assert out == err == ""
    assert (operator.returncode, operator.stdout, operator.stderr) == \
        (root.returncode, root.stdout, root.stderr)
    assert root.returncode == 1 and root.stdout.decode().splitlines()[-1] == \
        "summary: 3 targets: 3 not sent (web1, web2, web3)"
    found = sorted((e["SYSRQ_VIA"].decode(), e["SYSRQ_TARGET"].decode(),
                    e["SYSRQ_TARGET_ADDRESS"].decode(), e["SYSRQ_OUTCOME"].decode())
                   for e in entries)
    assert found == sorted((via, t.name_in_fleet, t.address, "not-sent")
                           for via in ("helper", "root") for t in targets)
    assert all(e["SYSRQ_KEYS"] == b"h" and "SYSRQ_SEQNO" in e for e in entries)
    sender.cli("down", check=True)


def test_send_all_and_a_group_sequence_are_confirmed_through_real_esp(star, tmp_path, esp):
    admin, targets = star(3)
    out = fleet(tmp_path, targets)
    sender = Installation(admin, tmp_path, "sender", half="admin1", bundle=out)
    installed = [Installation(t, tmp_path, t.name_in_fleet, bundle=out) for t in targets]
    for target in installed:
        target.cli("apply", "--force", esp=True, check=True)
    sender.cli("apply", esp=True, check=True)

    sent = sender.cli("send", "--all", "h", "--wait", "5", esp=True)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    lines = sent.stdout.splitlines()
    assert sorted(line.split()[1] for line in lines[:3]) == ["web1", "web2", "web3"]
    assert all(line.startswith("confirmed: web") for line in lines[:3]), lines
    assert lines[3] == "summary: 3 targets: 3 confirmed"

    group = sender.cli("send", "--group", "web", "--sequence", "thaw", "--wait", "5", esp=True)
    assert group.returncode == 0, group.stdout + group.stderr
    assert group.stdout.splitlines()[0] == "thaw on group web (2 targets): j"
    assert group.stdout.splitlines()[-1] == "summary: 2 targets: 2 confirmed"

    installed[1].cli("down", esp=True, check=True)     # web2 stops answering
    again = sender.cli("send", "web1,web2,web3", "h", "--wait", "1", esp=True)
    assert again.returncode == 3, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == ("summary: 3 targets: 2 confirmed, "
                                             "1 not confirmed (web2)")
    assert "sent, not confirmed: no answer from web2 within 1 s" in again.stdout
    # (the namespaces go with their SAs and policies: no `down` needed, and each CLI call
    # costs seconds under TCG in the real-kernel tier)


def test_a_sequence_goes_on_only_to_targets_whose_step_was_sent(star, tmp_path, esp):
    """web2's first step cannot leave (the admin has no SA to it any more): it gets none of
    the later steps, as a send to web2 alone would stop there, and web1 gets them all."""
    admin, targets = star(3)   # the inventory's group names web3; web3 itself plays no part
    out = fleet(tmp_path, targets, allow="dump")      # diagnose: w, l, m (only logs)
    sender = Installation(admin, tmp_path, "sender", half="admin1", bundle=out)
    for target in targets[:2]:
        Installation(target, tmp_path, target.name_in_fleet, bundle=out).cli(
            "apply", "--force", esp=True, check=True)
    sender.cli("apply", esp=True, check=True)
    admin.run("ip", "xfrm", "state", "deleteall", "dst", targets[1].address)

    sent = sender.cli("send", "web1,web2", "--sequence", "diagnose", "--wait", "5", esp=True)
    assert sent.returncode == 3, sent.stdout + sent.stderr
    lines = sent.stdout.splitlines()
    assert lines[0] == "diagnose on web1, web2: w, wait 1 s, l, wait 1 s, m"
    first = [line for line in lines if line.startswith("  1/5 ")]
    assert any(line.startswith("  1/5 confirmed: web1 accepted 'w'") for line in first)
    assert any(line.startswith("  1/5 not sent: web2: ") for line in first), first
    assert first[-1] == ("  1/5 web2: the rest of the sequence is skipped for it (this step "
                         "was not sent)")
    later = [line for line in lines[1:-1] if not line.startswith("  1/5 ")]
    assert [line.split()[0] for line in later] == ["2/5", "3/5", "4/5", "5/5"]
    assert not any("web2" in line for line in later), later
    assert lines[-1] == "summary: 2 targets: 1 confirmed, 1 not sent (web2)"

"""apply / plan / status / down for real in throwaway namespaces, on both firewall backends."""

import json
import pathlib

import pytest

from appliance_env import Installation, make_bundle

BACKENDS = ["nft", "legacy"]
INJECTOR = pathlib.Path(__file__).with_name("inject_failure.py")


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path)


def _foreign_state(ns):
    """Someone else's rules, chain and xfrm policy, there before we arrive."""
    ns.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    ns.run("iptables", "-N", "FOREIGN")
    ns.run("iptables", "-A", "FOREIGN", "-s", "10.10.25.1", "-m", "policy", "--dir", "in",
           "--pol", "ipsec", "-j", "RETURN")
    for tool in ("iptables-legacy",):
        ns.run(tool, "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT")
    ns.run("ip", "xfrm", "policy", "add", "src", "10.10.25.1/32", "dst", "10.10.25.7/32",
           "proto", "tcp", "dport", "22", "dir", "in", "tmpl", "src", "10.10.25.1", "dst",
           "10.10.25.7", "proto", "esp", "reqid", "77", "mode", "tunnel")


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_twice_status_down_leaves_foreign_state_alone(netns, tmp_path, bundle, backend):
    _foreign_state(netns)
    target = Installation(netns, tmp_path, "target", backend, bundle=bundle)
    before = target.snapshot()

    plan = target.cli("plan", check=True)
    assert "add policy in 10.10.25.1 -> 10.10.25.7 udp dport 9" in plan.stdout
    assert target.snapshot() == before, "plan changed something"

    applied = target.cli("apply", "--force", check=True)
    assert "set kernel.sysrq 1 -> 176" in applied.stdout
    save = netns.run(f"iptables-{backend}-save").stdout
    assert ("-A SYSRQ-APPLIANCE -s 10.10.25.1/32 -d 10.10.25.7/32 -p udp -m udp --dport 9 "
            "-m policy --dir in --pol ipsec --proto esp --mode tunnel --tunnel-dst 10.10.25.7 "
            "--tunnel-src 10.10.25.1 -m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 20 "
            "--hashlimit-mode srcip,srcport --hashlimit-name sysrq-appliance --hashlimit-htable-expire 10000 -j ACCEPT") in save
    assert "-A SYSRQ-APPLIANCE -p udp -m udp --dport 9 -j DROP" in save
    assert save.index("-A INPUT -j SYSRQ-APPLIANCE") < save.index("-A INPUT -p tcp")
    policies = netns.run("ip", "xfrm", "policy").stdout
    assert "proto udp dport 9" in policies and "proto icmp type 3 code 3" in policies
    assert target.sysctl.read_text().strip() == "176"
    assert (target.sysfs / "password").read_bytes() == (target.etc / "password").read_bytes()

    again = target.cli("apply", "--force", check=True)
    assert "nothing to change" in again.stdout

    report = json.loads(target.cli("status", "--json", check=True).stdout)
    assert report["in_sync"] and report["password_set"] and report["backend"] == backend
    assert report["peers"][0]["policies"] == {"in": True, "out": True}
    assert report["peers"][0]["rule"]["present"] and report["drop_rule"]["present"]
    assert report["kernel_sysrq"]["allows"] == ["sync", "remount", "reboot"]
    assert "without-esp" in report["esp"]
    assert (target.etc / "password").read_text() not in json.dumps(report)

    down = target.cli("down", check=True)
    assert "restore kernel.sysrq 1" in down.stdout
    after = target.snapshot()
    assert _without_password(after) == _without_password(before)
    _assert_password_disarmed(after["password"], before["password"], target)
    assert "nothing of ours" in target.cli("down", check=True).stdout


def test_drift_is_reported_and_healed(netns, tmp_path, bundle):
    target = Installation(netns, tmp_path, "target", bundle=bundle)
    target.cli("apply", "--force", check=True)
    netns.run("iptables", "-F", "SYSRQ-APPLIANCE")
    netns.run("ip", "xfrm", "policy", "flush")
    drifted = target.cli("status", "--json")
    assert drifted.returncode == 4, drifted.stderr     # a monitor sees drift in the exit code
    report = json.loads(drifted.stdout)
    assert not report["in_sync"]
    assert report["peers"][0]["policies"] == {"in": False, "out": False}
    assert any("install IPv4 chain" in d for d in report["drift"])
    assert "applying 3 change(s)" in target.cli("apply", "--force", check=True).stdout
    assert json.loads(target.cli("status", "--json", check=True).stdout)["in_sync"]
    target.cli("down", check=True)


def test_apply_refuses_without_force_when_doctor_fails(netns, tmp_path, bundle):
    target = Installation(netns, tmp_path, "target", bundle=bundle)
    # A FAIL on any host: the (stand-in) module runs with another hash than the config's.
    (target.sysfs / "hash").write_text("sha256\n")
    before = target.snapshot()
    result = target.cli("apply")
    assert result.returncode == 1
    assert result.stderr.startswith("sysrq-appliance: doctor FAILs, nothing changed: FAIL ")
    assert target.snapshot() == before
    doctor = target.cli("doctor")
    assert doctor.returncode == 1
    assert "PASS config" in doctor.stdout
    assert "FAIL hash: xt_SYSRQ runs with hash=sha256 but the config says sha1" in doctor.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_failure_at_each_step_leaves_everything_as_before(netns, tmp_path, bundle, backend):
    _foreign_state(netns)
    target = Installation(netns, tmp_path, "target", backend, bundle=bundle)
    before = target.snapshot()
    lines = target.cli("plan", check=True).stdout.strip().splitlines()
    count = len([line for line in lines[1:] if not line.lstrip().startswith("[#]")])
    assert count == 5   # password, sysctl, 2 policies, chain
    for failing in range(count):
        result = target.cli("apply", "--force", program=(str(INJECTOR), str(failing)))
        assert result.returncode == 1, result.stdout
        assert "injected failure" in result.stderr and "the kernel is as before" in result.stderr
        after = target.snapshot()
        assert _without_password(after) == _without_password(before), \
            f"step {failing} left changes behind"
        _assert_password_disarmed(after["password"], before["password"], target)


def _without_password(snapshot):
    return {k: v for k, v in snapshot.items() if k != "password"}


def _assert_password_disarmed(now, before, target):
    """An empty module password cannot be written back (sysfs ignores empty writes, and a
    lone newline would let one request with an empty password through): the rollback
    leaves a random one instead. Either way, ours is no longer there."""
    assert now != (target.etc / "password").read_bytes()
    assert now == before or (before == b"" and len(now) == 63)


def test_plaintext_never_reaches_the_rule_and_is_dropped(linked_netns, tmp_path, bundle):
    sender_ns, target_ns = linked_netns
    target = Installation(target_ns, tmp_path, "target", bundle=bundle)
    target.cli("apply", "--force", check=True)
    # No policy on the sender's side: its request leaves in plaintext.
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('10.10.25.1', 0)); [s.sendto(b's,1,salt,00', ('10.10.25.7', 9)) "
            "for _ in range(5)]")
    sender_ns.run("/usr/bin/python3", "-c", code)
    report = json.loads(target.cli("status", "--json", check=True).stdout)
    assert report["peers"][0]["rule"]["packets"] == 0
    assert report["drop_rule"]["packets"] == 5
    target.cli("down", check=True)



def test_sender_policy_never_lets_the_request_out_in_plaintext(linked_netns, tmp_path, bundle):
    """With the sender's out-policy in place but no SA (--without-esp), the request is held
    back by the kernel instead of leaving unencrypted."""
    sender_ns, target_ns = linked_netns
    target = Installation(target_ns, tmp_path, "target", bundle=bundle)
    sender = Installation(sender_ns, tmp_path, "sender", bundle=bundle)
    target.cli("apply", "--force", check=True)
    applied = sender.cli("apply", check=True)
    assert "add policy out 10.10.25.1 -> 10.10.25.7 udp dport 9" in applied.stdout
    assert "add policy in 10.10.25.7 -> 10.10.25.1 icmp type 3 code 3" in applied.stdout
    sent = sender.cli("send", "web1", "s", "--wait", "0.3", "--count", "3")
    assert sent.returncode == 1 and "refuses to send it in plaintext" in sent.stderr
    report = json.loads(target.cli("status", "--json", check=True).stdout)
    assert report["drop_rule"]["packets"] == 0 and report["peers"][0]["rule"]["packets"] == 0
    # Other traffic between the two hosts is untouched by our policies.
    assert sender_ns.run("ping", "-c1", "-W2", "10.10.25.7", check=False).returncode == 0
    assert "nothing to change" in sender.cli("apply", check=True).stdout
    sender.cli("down", check=True)
    assert sender_ns.run("ip", "xfrm", "policy").stdout == ""
    target.cli("down", check=True)


@pytest.mark.without_esp
def test_kernel_without_esp_is_reported_clearly_and_changes_nothing(netns, tmp_path, bundle,
                                                                   kernel_esp):
    """On a kernel without ESP a real apply (SAs included) stops at the first SA, undoes
    what it did, and says why; status and doctor say the same."""
    if kernel_esp[0]:
        pytest.skip("this kernel has ESP (the probe added an SA), so the no-ESP path cannot "
                    "be taken here; tests/realkernel runs it with the ESP modules refused")
    target = Installation(netns, tmp_path, "target", bundle=bundle)
    before = target.snapshot()
    applied = target.cli("apply", "--force", esp=True)
    assert applied.returncode == 1
    assert "this kernel has no ESP support" in applied.stderr
    assert "the kernel is as before" in applied.stderr
    after = target.snapshot()
    assert _without_password(after) == _without_password(before)
    drifted = target.cli("status", "--json", esp=True)
    assert drifted.returncode == 4, drifted.stderr
    report = json.loads(drifted.stdout)
    assert report["peers"][0]["sas"]["in"]["present"] is False
    assert report["esp"] == "no SA present (0 of 2)"
    assert any(d.startswith("add SA 10.10.25.1 -> 10.10.25.7") for d in report["drift"])
    doctor = target.cli("doctor", esp=True)
    assert "FAIL esp: the kernel has no ESP support" in doctor.stdout

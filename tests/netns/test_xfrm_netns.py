"""sysrq_appliance.xfrm against this host's kernel, inside throwaway network namespaces.

Nothing here touches the root namespace's xfrm state: every socket is opened inside the
test's namespace, and test_root_namespace_untouched checks that our addresses never show up
outside it.  The only packet sent goes between two veth ends that both live in the namespace.
"""

import contextlib
import errno
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pyroute2 import netns as pyroute2_netns

from sysrq_appliance import xfrm as X
from sysrq_appliance.xfrm import Algorithm, Policy, Selector, State, Template

APPLIANCE = str(Path(__file__).resolve().parents[2] / "appliance")
OURS = 0x53520001

P_UDP = Policy(Selector("198.51.100.1", "198.51.100.2", 17, dport=9), "out", Template("198.51.100.1", "198.51.100.2", OURS))
P_ICMP = Policy(Selector("198.51.100.2", "198.51.100.1", 1, sport=3, dport=3), "in",
                Template("198.51.100.2", "198.51.100.1", OURS))
P_UDP6 = Policy(Selector("2001:db8:5352::1", "2001:db8:5352::2", 17, dport=9), "out",
                Template("2001:db8:5352::1", "2001:db8:5352::2", OURS + 1), priority=50)
P_ICMP6 = Policy(Selector("2001:db8:5352::2", "2001:db8:5352::1", 58, sport=1, dport=4), "in",
                 Template("2001:db8:5352::2", "2001:db8:5352::1", OURS + 1))
POLICIES = [P_UDP, P_ICMP, P_UDP6, P_ICMP6]

# What iproute2 prints for each of them (`ip -o xfrm policy`), read independently of our decoder.
IPROUTE2_VIEW = {
    P_UDP: "src 198.51.100.1/32 dst 198.51.100.2/32 proto udp dport 9 \\\tdir out priority 100",
    P_ICMP: "src 198.51.100.2/32 dst 198.51.100.1/32 proto icmp type 3 code 3 \\\tdir in priority 100",
    P_UDP6: "src 2001:db8:5352::1/128 dst 2001:db8:5352::2/128 proto udp dport 9 \\\tdir out priority 50",
    P_ICMP6: "src 2001:db8:5352::2/128 dst 2001:db8:5352::1/128 proto ipv6-icmp type 1 code 4 \\\tdir in priority 100",
}

K_AEAD, K_CBC, K_HMAC, K_SHA1 = bytes(range(1, 21)), bytes(range(0x20, 0x30)), bytes(range(0x40, 0x60)), bytes(range(21))
S_AEAD = State("198.51.100.1", "198.51.100.2", 0x53520001, OURS, aead=Algorithm("rfc4106(gcm(aes))", K_AEAD, 128))
S_CBC6 = State("2001:db8:5352::1", "2001:db8:5352::2", 0x53520002, OURS + 1,
               crypt=Algorithm("cbc(aes)", K_CBC), auth=Algorithm("hmac(sha256)", K_HMAC, 128))
S_ODD = State("198.51.100.1", "198.51.100.2", 0x53520003, OURS,
              crypt=Algorithm("cbc(aes)", K_CBC), auth=Algorithm("hmac(sha1)", K_SHA1, 96))
STATE_ARGS = {  # the same SAs as `ip xfrm state add` arguments
    S_AEAD: f"aead rfc4106(gcm(aes)) 0x{K_AEAD.hex()} 128",
    S_CBC6: f"enc cbc(aes) 0x{K_CBC.hex()} auth-trunc hmac(sha256) 0x{K_HMAC.hex()} 128",
    S_ODD: f"enc cbc(aes) 0x{K_CBC.hex()} auth-trunc hmac(sha1) 0x{K_SHA1.hex()} 96",
}


def ip_policy_args(p):
    sel, t = p.selector, p.template
    bits = 32 if "." in sel.src else 128
    words = ("type", "code") if sel.proto in (1, 58) else ("sport", "dport")
    ports = "".join(f" {w} {v}" for w, v in zip(words, (sel.sport, sel.dport)) if v is not None)
    return (f"src {sel.src}/{bits} dst {sel.dst}/{bits} proto {sel.proto}{ports} dir {p.dir} priority {p.priority}"
            f" tmpl src {t.src} dst {t.dst} proto esp reqid {t.reqid} mode tunnel")


def ip_state_args(s):
    return f"src {s.src} dst {s.dst} proto esp spi {s.spi} reqid {s.reqid} mode tunnel replay-window 32 {STATE_ARGS[s]}"


@pytest.fixture
def xfrm(netns):
    """An XfrmSocket opened inside the test's namespace (a socket stays in its namespace)."""
    pyroute2_netns.pushns(netns.name)
    try:
        sock = X.XfrmSocket()
    finally:
        pyroute2_netns.popns()
    yield sock
    sock.close()


def ip_xfrm(ns, *words):
    return ns.run("ip", "-o", "xfrm", *words).stdout


def assert_root_namespace_untouched():
    for what in ("policy", "state"):
        out = subprocess.run(["ip", "xfrm", what], capture_output=True, text=True, check=True).stdout
        assert "198.51.100." not in out and "2001:db8:5352:" not in out


def test_policies_round_trip_field_by_field(xfrm, netns):
    for p in POLICIES:
        xfrm.add_policy(p)
    dumped = {(p.selector, p.dir): p for p in xfrm.dump_policies()}
    assert len(dumped) == len(POLICIES)
    for p in POLICIES:
        got = dumped[(p.selector, p.dir)]
        assert (got.selector.src, got.selector.dst, got.selector.proto, got.selector.sport, got.selector.dport) \
            == (p.selector.src, p.selector.dst, p.selector.proto, p.selector.sport, p.selector.dport)
        assert (got.dir, got.priority) == (p.dir, p.priority)
        assert (got.template.src, got.template.dst, got.template.reqid) == (p.template.src, p.template.dst,
                                                                            p.template.reqid)
        assert got == p and X.is_ours(got.template.reqid)
    listing = ip_xfrm(netns, "policy")
    for p, text in IPROUTE2_VIEW.items():
        assert text in listing, listing
        assert f"tmpl src {p.template.src} dst {p.template.dst}" in listing
    assert "proto esp reqid 1397882881 mode tunnel" in listing and "reqid 1397882882 mode tunnel" in listing
    assert_root_namespace_untouched()


def test_add_update_delete(xfrm, netns):
    xfrm.add_policy(P_UDP)
    with pytest.raises(X.XfrmExists) as info:
        xfrm.add_policy(P_UDP)
    assert info.value.errno == 17 and "ip xfrm policy add src 198.51.100.1/32" in str(info.value)
    changed = Policy(P_UDP.selector, "out", Template("198.51.100.1", "198.51.100.2", OURS + 7), priority=10)
    xfrm.update_policy(changed)
    assert xfrm.dump_policies() == [changed]
    assert "priority 10" in ip_xfrm(netns, "policy") and "reqid 1397882888 mode tunnel" in ip_xfrm(netns, "policy")
    xfrm.update_policy(P_ICMP)  # update adds what is absent, like `ip xfrm policy update`
    assert sorted(xfrm.dump_policies(), key=repr) == sorted([changed, P_ICMP], key=repr)
    xfrm.delete_policy(P_UDP)  # by selector and dir: the template may differ
    xfrm.delete_policy(P_ICMP)
    assert xfrm.dump_policies() == [] and ip_xfrm(netns, "policy").strip() == ""
    with pytest.raises(X.XfrmNotFound):
        xfrm.delete_policy(P_UDP)


def test_foreign_policies_survive(xfrm, netns):
    ns_ip = lambda args: netns.run("ip", "xfrm", "policy", "add", *args.split())  # noqa: E731
    ns_ip("src 198.51.100.1/32 dst 198.51.100.2/32 proto udp dport 53 dir out "
          "tmpl src 198.51.100.1 dst 198.51.100.2 proto esp reqid 7 mode tunnel")
    ns_ip("src 198.51.100.2/32 dst 198.51.100.1/32 proto icmp type 3 code 3 dir in action block")
    ns_ip("src 198.51.100.0/24 dst 198.51.100.2/32 dir fwd tmpl src 198.51.100.9 dst 198.51.100.2 proto esp reqid 8")
    before = ip_xfrm(netns, "policy")
    xfrm.add_policy(P_UDP)

    dumped = xfrm.dump_policies()
    foreign = Policy(Selector("198.51.100.1", "198.51.100.2", 17, dport=53), "out",
                     Template("198.51.100.1", "198.51.100.2", 7), priority=0)
    block = Policy(P_ICMP.selector, "in", None, priority=0)  # no template: a shape we can't represent
    assert sorted(dumped, key=repr) == sorted([P_UDP, foreign, block], key=repr)  # the /24 one is left out
    assert [p for p in dumped if p.template and X.is_ours(p.template.reqid)] == [P_UDP]

    for attempt in (lambda: xfrm.delete_policy(foreign), lambda: xfrm.delete_policy(block),
                    lambda: xfrm.delete_policy(P_ICMP),  # ours in shape, but the kernel's one there is foreign
                    lambda: xfrm.update_policy(P_ICMP),
                    lambda: xfrm.update_policy(Policy(foreign.selector, "out", P_UDP.template))):
        with pytest.raises(X.XfrmError, match="refusing, what the kernel has there is not ours"):
            attempt()
    xfrm.delete_policy(P_UDP)
    assert ip_xfrm(netns, "policy") == before


def test_esp_state(xfrm, netns):
    """On this dev host (no INET_ESP) the kernel refuses ESP SAs; on a kernel with ESP
    (the VMs) the same test checks the SA round trip instead."""
    for s in STATE_ARGS:
        try:
            xfrm.add_state(s)
        except X.EspUnsupported as e:
            assert str(e).startswith("this kernel has no ESP support (ip xfrm state add src ")
            assert e.errno in X.ESP_ERRNOS
            assert all(alg.key.hex() not in str(e) for alg in (s.aead, s.crypt, s.auth) if alg)
            assert ip_xfrm(netns, "state").strip() == ""
            continue
        states = dict(xfrm.dump_states())
        assert states[s] == X.StateCounters(0, 0, 0, 0, 0)
        assert f"spi 0x{s.spi:08x} reqid {s.reqid} mode tunnel" in ip_xfrm(netns, "state")
        rekeyed = State(s.src, s.dst, s.spi, s.reqid, aead=s.aead and Algorithm(s.aead.name, bytes(20), 128),
                        crypt=s.crypt and Algorithm(s.crypt.name, bytes(16)), auth=s.auth)
        xfrm.update_state(rekeyed)
        assert [st for st, _ in xfrm.dump_states()] == [rekeyed]
        xfrm.delete_state(rekeyed)
        assert xfrm.dump_states() == []
    assert_root_namespace_untouched()


def test_deleting_a_missing_sa_says_not_found(xfrm):
    with pytest.raises(X.XfrmNotFound, match="ip xfrm state delete src 198.51.100.1 dst 198.51.100.2 proto esp"):
        xfrm.delete_state(S_AEAD)


def test_larval_states_are_skipped(xfrm, netns):
    """With a key manager listening, traffic that hits our out policy without an SA makes the
    kernel add a larval SA (spi 0, our reqid, no keys).  Dumps must survive and skip it."""
    for cmd in ("ip link add sra0 type veth peer name sra1", "ip link set sra0 up", "ip link set sra1 up",
                "ip addr add 198.51.100.1/24 dev sra0"):
        netns.run(*cmd.split())
    xfrm.add_policy(P_UDP)
    pyroute2_netns.pushns(netns.name)
    try:
        key_manager = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6)  # NETLINK_XFRM
        key_manager.bind((0, 1))  # XFRMGRP_ACQUIRE
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"s", ("198.51.100.2", 9))  # stays in the namespace; xfrm drops it anyway
    finally:
        pyroute2_netns.popns()
    key_manager.close()
    udp.close()
    assert "spi 0x00000000 reqid 1397882881 mode tunnel" in ip_xfrm(netns, "state")
    assert xfrm.dump_states() == []


# --- the requests, byte for byte, against iproute2's -----------------------------------------

def captured(ns, *argv):
    """The netlink messages argv sends inside ns, from `strace -e write=all` hex dumps."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        ns.run("strace", "-qq", "-o", out.name, "-e", "trace=sendmsg,sendto", "-e", "write=all", *argv, check=False)
        messages = []
        for line in out.read().splitlines():
            if line.startswith(("sendmsg(", "sendto(")):
                messages.append(bytearray())
            elif line.startswith(" | ") and messages:
                messages[-1] += bytes.fromhex(line[10:58].replace(" ", ""))
    return [bytes(m[:8] + bytes(8) + m[16:]) for m in messages]  # sequence number and port zeroed


def ours_sent(ns, call):
    """What XfrmSocket itself writes to the kernel for `call` (errors ignored)."""
    code = (f"import sys; sys.path.insert(0, {APPLIANCE!r})\n"
            "from sysrq_appliance.xfrm import *\n"
            f"with XfrmSocket() as x:\n    try:\n        x.{call}\n    except XfrmError:\n        pass\n")
    return captured(ns, sys.executable, "-c", code)


def state_expr(s):  # repr() hides keys on purpose, so spell the State out for the subprocess
    algs = ", ".join(f"{name}=Algorithm({a.name!r}, {a.key!r}, {a.bits})"
                     for name, a in (("aead", s.aead), ("crypt", s.crypt), ("auth", s.auth)) if a)
    return f"State({s.src!r}, {s.dst!r}, {s.spi}, {s.reqid}, {algs})"


needs_strace = pytest.mark.skipif(not shutil.which("strace"), reason="needs strace (apt-get install strace)")


@needs_strace
@pytest.mark.parametrize("state", list(STATE_ARGS), ids=["aead-ipv4", "cbc-hmac-ipv6", "odd-key"])
def test_newsa_bytes_equal_iproute2(netns, state):
    theirs = captured(netns, "ip", "xfrm", "state", "add", *ip_state_args(state).split())[-1]
    assert X.request_bytes(X.state_msg(state), X.XFRM_MSG_NEWSA).hex() == theirs.hex()
    assert ours_sent(netns, f"add_state({state_expr(state)})")[-1].hex() == theirs.hex()


@needs_strace
def test_delsa_bytes_equal_iproute2(netns):
    theirs = captured(netns, "ip", "xfrm", "state", "delete", *f"src {S_AEAD.src} dst {S_AEAD.dst} proto esp spi "
                      f"{S_AEAD.spi}".split())[-1]
    assert X.request_bytes(X.state_id_msg(S_AEAD), X.XFRM_MSG_DELSA).hex() == theirs.hex()


@needs_strace
@pytest.mark.parametrize("policy", POLICIES, ids=["udp", "icmp", "udp6", "icmp6"])
def test_policy_bytes_equal_iproute2(netns, policy):
    args = ip_policy_args(policy).split()
    for verb, msg, msg_type, ip_args in (
            ("add", X.policy_msg(policy), X.XFRM_MSG_NEWPOLICY, args),
            ("update", X.policy_msg(policy), X.XFRM_MSG_UPDPOLICY, args),
            ("delete", X.policy_id_msg(policy), X.XFRM_MSG_DELPOLICY, args[:args.index("priority")])):
        ours = ours_sent(netns, f"{verb}_policy({policy!r})")[-1]  # first: ours refuses a missing delete
        theirs = captured(netns, "ip", "xfrm", "policy", verb, *ip_args)[-1]
        assert X.request_bytes(msg, msg_type).hex() == theirs.hex(), verb
        assert ours.hex() == theirs.hex(), verb


def _many_policies(n):
    """n narrow out-policies of ours to 10.64.x.y, as a sender with n targets has."""
    result = []
    for i in range(n):
        peer = f"10.64.{i // 250}.{i % 250 + 1}"
        result.append(Policy(Selector("10.63.0.1", peer, 17, dport=9), "out",
                             Template("10.63.0.1", peer, OURS)))
    return result


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging (what a lost netlink ACK used to cause)."""
    def expired(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_batches_fit_the_receive_buffer(xfrm, netns):
    """With a small receive buffer (Debian's default net.core.rmem_max is 208 KiB, where a
    64 KiB batch of SA deletes once overflowed it and `down` waited forever for the dropped
    ACKs), batches shrink so every ACK arrives: 600 deletes, 600 answers."""
    xfrm._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)   # the kernel doubles it
    policies = _many_policies(600)
    with deadline(120):
        assert xfrm.add_policies(policies) == [None] * 600
        assert xfrm.delete_policies(policies) == [None] * 600
    assert "dir out" not in ip_xfrm(netns, "policy")


def test_a_dropped_ack_is_an_error_for_its_request_not_a_wait(xfrm, netns, monkeypatch):
    """If ACKs are dropped anyway (batches larger than the buffer, forced here), each request
    whose answer was lost gets an error and the call returns; running again converges."""
    xfrm._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    monkeypatch.setattr(X.XfrmSocket, "ACK_BYTES", 1)
    policies = _many_policies(600)
    with deadline(120):
        errors = xfrm.add_policies(policies)
    lost = [e for e in errors if e is not None]
    assert lost, "a 4 KiB buffer cannot hold 600 ACKs: some must have been dropped"
    assert all(e.errno == errno.ENOBUFS and "answer was dropped" in str(e) for e in lost)
    assert str(lost[0]).startswith("ip xfrm policy add src 10.63.0.1/32 dst 10.64.")
    monkeypatch.undo()
    with deadline(120):   # the kernel did add them: the next run sees each one there
        again = xfrm.add_policies(policies)
    assert all(isinstance(e, X.XfrmExists) for e in again)
    with deadline(120):
        assert xfrm.delete_policies(policies) == [None] * 600


def test_many_requests_per_sendmsg_each_with_its_own_answer(xfrm, netns):
    """600 policies go out in several sendmsg calls (BATCH_BYTES); one collides with a
    policy already there and is refused on its own, the others are added."""
    policies = _many_policies(600)
    netns.run("ip", "xfrm", "policy", "add", "src", "10.63.0.1/32", "dst", "10.64.1.51/32",
              "proto", "udp", "dport", "9", "dir", "out", "tmpl", "src", "10.63.0.1", "dst",
              "10.64.1.51", "proto", "esp", "reqid", "7", "mode", "tunnel")
    errors = xfrm.add_policies(policies)
    refused = [i for i, e in enumerate(errors) if e is not None]
    assert refused == [300]
    assert isinstance(errors[300], X.XfrmExists)
    assert str(errors[300]) == ("ip xfrm policy add src 10.63.0.1/32 dst 10.64.1.51/32 proto 17 "
                                "dport 9 dir out: File exists")
    ours = [p for p in xfrm.dump_policies() if X.is_ours(p.template.reqid)]
    assert len(ours) == 599
    # and a single request after a batch still gets its own answer
    with pytest.raises(X.XfrmExists):
        xfrm.add_policy(policies[0])
    assert xfrm.delete_policies(ours) == [None] * 599
    errors = xfrm.delete_policies(policies[:2])
    assert all(isinstance(e, X.XfrmNotFound) for e in errors)
    remaining = ip_xfrm(netns, "policy")
    assert remaining.count("dir out") == 1 and "reqid 7 " in remaining
    assert_root_namespace_untouched()

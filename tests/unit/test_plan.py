"""The planner: config -> SAs, narrow policies, firewall chain, password, mask."""

import pytest

from sysrq_appliance import config, esp_keys, plan, xfrm

GCM = "rfc4106(gcm(aes))"


def _config(role, local, peer, **sysrq):
    raw = {"role": role, "local": local,
           "peers": [{"name": "p1", "address": peer, "spi_in": 0x1001, "spi_out": 0x1002,
                      "key_file": "/k/p1.key",
                      **({"password_file": "/k/pw"} if role == "sender" else {})}],
           "sysrq": sysrq}
    return config.parse(raw)


KEYS = {"p1": esp_keys.KeyPair(b"\x01" * 36, b"\x02" * 36)}


def test_target_plan():
    cfg = _config("target", "10.10.25.7", "10.10.25.1", allow=["sync", "reboot"])
    d = plan.plan(cfg, KEYS, b"pw")
    reqid = plan.reqids(cfg.peers)["p1"]
    assert xfrm.is_ours(reqid)
    assert d.states == (
        xfrm.State("10.10.25.1", "10.10.25.7", 0x1001, reqid, aead=xfrm.Algorithm(GCM, b"\x01" * 36, 128)),
        xfrm.State("10.10.25.7", "10.10.25.1", 0x1002, reqid, aead=xfrm.Algorithm(GCM, b"\x02" * 36, 128)),
    )
    assert d.policies == (
        xfrm.Policy(xfrm.Selector("10.10.25.1", "10.10.25.7", xfrm.IPPROTO_UDP, None, 9), "in",
                    xfrm.Template("10.10.25.1", "10.10.25.7", reqid)),
        xfrm.Policy(xfrm.Selector("10.10.25.7", "10.10.25.1", xfrm.IPPROTO_ICMP, 3, 3), "out",
                    xfrm.Template("10.10.25.7", "10.10.25.1", reqid)),
    )
    assert d.chain.family == 4 and d.chain.rules[0].peer == "10.10.25.1"
    assert d.chain.target == "SYSRQ" and d.chain.drop_other
    assert (d.password, d.sysrq_mask, d.module_hash) == (b"pw", 0x90, "sha1")


def test_sender_plan_mirrors_the_target():
    target = plan.plan(_config("target", "10.10.25.7", "10.10.25.1"), KEYS, b"pw")
    sender_cfg = config.parse({
        "role": "sender", "local": "10.10.25.1",
        "peers": [{"name": "p1", "address": "10.10.25.7", "spi_in": 0x1002, "spi_out": 0x1001,
                   "key_file": "/k", "password_file": "/p"}]})
    sender = plan.plan(sender_cfg, {"p1": KEYS["p1"].swapped()})
    # Same SAs on both ends (reqids are local and may differ)
    strip = lambda states: {(s.src, s.dst, s.spi, s.aead) for s in states}  # noqa: E731
    assert strip(sender.states) == strip(target.states)
    # The sender's out policy is the target's in policy, and vice versa.
    t = {p.dir: p.selector for p in target.policies}
    s = {p.dir: p.selector for p in sender.policies}
    assert s["out"] == t["in"] and s["in"] == t["out"]
    assert sender.chain is None and sender.password is None and sender.sysrq_mask is None


def test_ipv6_uses_icmpv6_port_unreachable():
    d = plan.plan(_config("target", "2001:db8::7", "2001:db8::1"), KEYS, b"pw")
    out = [p for p in d.policies if p.dir == "out"][0]
    assert (out.selector.proto, out.selector.sport, out.selector.dport) == (58, 1, 4)
    assert d.chain.family == 6


def test_cbc_hmac_splits_the_key():
    cfg = config.parse({"role": "target", "local": "10.0.0.2", "ipsec": {
        "algorithm": "cbc(aes)+hmac(sha256)"}, "peers": [{"name": "p1", "address": "10.0.0.1",
        "spi_in": 0x1001, "spi_out": 0x1002, "key_file": "/k"}]})
    keys = {"p1": esp_keys.KeyPair(bytes(range(64)), bytes(range(1, 65)))}
    state = plan.plan(cfg, keys, b"pw").states[0]
    assert state.crypt == xfrm.Algorithm("cbc(aes)", bytes(range(32)))
    assert state.auth == xfrm.Algorithm("hmac(sha256)", bytes(range(32, 64)), 128)
    assert state.aead is None


def test_reqids_are_stable_unique_and_ours():
    peers = [config.Peer(f"peer{i}", f"10.0.{i // 250}.{i % 250 + 1}", 0x1000 + 2 * i,
                         0x1001 + 2 * i, "/k") for i in range(2000)]
    ids = plan.reqids(peers)
    assert len(set(ids.values())) == 2000
    assert all(xfrm.is_ours(r) for r in ids.values())
    assert plan.reqids(list(reversed(peers))) == ids


def test_mac_and_port_reach_the_chain():
    cfg = config.parse({"role": "target", "local": "10.0.0.2", "sysrq": {"port": 4000,
                        "drop_other": False},
                        "peers": [{"name": "p1", "address": "10.0.0.1", "spi_in": 0x1001,
                                   "spi_out": 0x1002, "key_file": "/k",
                                   "mac": "aa:bb:cc:dd:ee:ff"}]})
    chain = plan.plan(cfg, KEYS, b"pw", sysrq_target="ACCEPT").chain
    assert chain.rules[0].mac == "aa:bb:cc:dd:ee:ff" and chain.port == 4000
    assert not chain.drop_other and chain.target == "ACCEPT"


@pytest.mark.parametrize("role", ["target", "sender"])
def test_no_secret_in_repr(role):
    cfg = _config(role, "10.10.25.7", "10.10.25.1")
    assert "0101010101" not in repr(plan.plan(cfg, KEYS, b"hunter2-pw"))
    assert "hunter2" not in repr(plan.plan(cfg, KEYS, b"hunter2-pw"))

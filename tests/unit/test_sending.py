"""The sender's use-case (sending.send) without a network: dry runs are reproducible and
reported line by line; what cannot be sent is refused before anything is."""

import pytest

from sysrq_appliance import config, sending, wire
from sysrq_appliance.errors import InputError


def _sender(secrets_dir, **peer):
    return config.parse({"role": "sender", "local": "10.10.25.1", "peers": [{
        "name": "web1", "address": "10.10.25.7", "spi_in": 0x5A000102, "spi_out": 0x5A000101,
        "key_file": str(secrets_dir / "keys" / "admin1.key"),
        "password_file": str(secrets_dir / "password"), **peer}]})


def test_a_dry_run_of_a_sequence_numbers_each_request_and_never_waits(secrets_dir):
    lines = []
    options = sending.Options(dry_run=True, seqno=1000, salt="s1",
                              state_dir=str(secrets_dir / "state"))
    unconfirmed = sending.send(_sender(secrets_dir), "web1", None, "reboot-safely", options,
                               report=lines.append)
    assert unconfirmed == 0
    assert lines[0] == "reboot-safely on web1: s, wait 10 s, u, wait 5 s, b"
    assert lines[2:5:2] == ["  2/5 wait 10 s", "  4/5 wait 5 s"]
    requests = [line for line in lines if "would send" in line]
    assert [r.split("10.10.25.1: ", 1)[1].split(",")[:2] for r in requests] == [
        ["s", "1000"], ["u", "1001"], ["b", "1002"]]
    digest = wire.build("u", 1001, "s1", "10.10.25.7", b"correct-horse-battery", "sha1")
    assert any(line.endswith(digest.encode().decode()) for line in lines)
    assert not (secrets_dir / "state").exists()     # a dry run records nothing


def test_keys_the_target_does_not_allow_are_refused_before_sending(secrets_dir):
    cfg = _sender(secrets_dir, allow=["sync"])
    with pytest.raises(InputError) as refused:
        sending.send(cfg, "web1", "b", None, sending.Options(dry_run=True), report=print)
    assert "web1" in str(refused.value)


@pytest.mark.parametrize("keys, sequence", [(None, None), ("s", "reisub")])
def test_keys_or_a_sequence_exactly_one(keys, sequence):
    with pytest.raises(InputError) as refused:
        sending.check_request(keys, sequence, None)
    assert str(refused.value).startswith("send: give KEYS or --sequence NAME, not both or neither")


def test_a_target_config_cannot_send(secrets_dir):
    target = config.parse({"role": "target", "local": "10.10.25.7", "peers": [{
        "name": "admin1", "address": "10.10.25.1", "spi_in": 0x1001, "spi_out": 0x1002,
        "key_file": "/k"}]})
    with pytest.raises(InputError, match="'send' needs a sender config"):
        sending.send(target, "admin1", "s", None, sending.Options(dry_run=True))


def _fleet(secrets_dir, names=("web1", "web2", "web3"), groups=None):
    doc = {"role": "sender", "local": "10.10.25.1", "peers": []}
    for i, name in enumerate(names):
        password_file = secrets_dir / f"password-{name}"
        password_file.write_bytes(b"correct-horse-battery")
        password_file.chmod(0o600)
        doc["peers"].append({
            "name": name, "address": f"10.10.25.{11 + i}", "spi_in": 0x5A000200 + 2 * i,
            "spi_out": 0x5A000201 + 2 * i, "key_file": str(secrets_dir / "keys" / "admin1.key"),
            "password_file": str(password_file)})
    if groups:
        doc["groups"] = groups
    return config.parse(doc)


def test_several_targets_by_list_group_or_all(secrets_dir):
    cfg = _fleet(secrets_dir, groups={"web": ["web3", "web1"]})
    names = lambda peers: [p.name for p in peers]   # noqa: E731
    assert names(sending.select(cfg, "web2,web1,web2")) == ["web2", "web1"]
    assert names(sending.select(cfg, "10.10.25.13")) == ["web3"]
    assert names(sending.select(cfg, None, group="web")) == ["web3", "web1"]
    assert names(sending.select(cfg, None, everyone=True)) == ["web1", "web2", "web3"]
    for target, group, message in (("web1,db1", None, "TARGET: 'db1' is not a peer"),
                                   ("web1,", None, "has an empty name"),
                                   (None, "db", "--group: 'db' is not a group")):
        with pytest.raises(InputError, match=message):
            sending.select(cfg, target, group)


def test_a_group_sequence_sends_each_step_to_all_before_its_wait(secrets_dir):
    lines = []
    options = sending.Options(dry_run=True, seqno=7, salt="s1",
                              state_dir=str(secrets_dir / "state"))
    cfg = _fleet(secrets_dir, groups={"web": ["web1", "web2"]})
    assert sending.send(cfg, None, None, "reboot-safely", options, report=lines.append,
                        group="web") == 0
    assert lines[0] == "reboot-safely on group web (2 targets): s, wait 10 s, u, wait 5 s, b"
    steps = [(line.split()[0], line.split()[4 if "would" in line else 1]) for line in lines[1:]]
    assert steps == [("1/5", "web1"), ("1/5", "web2"), ("2/5", "wait"), ("3/5", "web1"),
                     ("3/5", "web2"), ("4/5", "wait"), ("5/5", "web1"), ("5/5", "web2")]
    assert not (secrets_dir / "state").exists()


def test_a_masked_key_for_one_target_stops_the_whole_send(secrets_dir):
    cfg = _fleet(secrets_dir)
    cfg = config.parse({**_doc_of(cfg), "peers": [
        {**p, "allow": ["sync"]} if p["name"] == "web2" else p for p in _doc_of(cfg)["peers"]]})
    with pytest.raises(InputError, match="web2 allows only sync"):
        sending.send(cfg, None, "b", None, sending.Options(dry_run=True), report=print,
                     everyone=True)


def _doc_of(cfg):
    return {"role": cfg.role, "local": cfg.local, "peers": [
        {"name": p.name, "address": p.address, "spi_in": p.spi_in, "spi_out": p.spi_out,
         "key_file": p.key_file, "password_file": p.password_file} for p in cfg.peers]}


def test_the_summary_names_who_is_not_done():
    peers = [type("P", (), {"name": f"web{i}"}) for i in range(1, 15)]
    state = {p.name: "confirmed" for p in peers}
    assert sending.summary(peers, state) == "summary: 14 targets: 14 confirmed"
    state.update(web2="sent", web3="not-sent")      # each target's worst Sent.outcome
    state.update({f"web{i}": "not-confirmed" for i in range(4, 15)})
    assert sending.summary(peers, state) == (
        "summary: 14 targets: 1 confirmed, 1 sent, cannot confirm, 11 not confirmed (web4, "
        "web5, web6, web7, web8, web9, web10, web11, web12, web13, ...), 1 not sent (web3)")


def test_a_target_whose_step_was_not_sent_gets_no_later_step():
    peers = [type("P", (), {"name": name}) for name in ("web1", "web2", "web3")]
    tally = sending.Tally(peers)
    assert [p.name for p in tally.going()] == ["web1", "web2", "web3"]
    assert not tally.record("web1", "confirmed")
    assert tally.record("web2", "not-sent")          # leaves the sequence here
    assert not tally.record("web3", "not-confirmed")
    assert [p.name for p in tally.going()] == ["web1", "web3"]
    assert tally.record("web1", "not-sent")          # a later step can drop it too
    assert [p.name for p in tally.going()] == ["web3"]
    assert tally.anything_left and sorted(tally.not_done()) == ["web1", "web2", "web3"]
    assert sending.summary(peers, tally.state) == (
        "summary: 3 targets: 1 not confirmed (web3), 2 not sent (web1, web2)")


def test_nothing_sent_means_no_request_to_any_target_ever_left():
    peers = [type("P", (), {"name": name}) for name in ("web1", "web2")]
    tally = sending.Tally(peers)
    tally.record("web1", "not-sent")
    tally.record("web2", "not-sent")
    assert not tally.anything_left and tally.going() == []
    later = sending.Tally(peers)
    later.record("web1", "sent")                     # b left: cannot confirm, but it left
    later.record("web2", "not-sent")
    later.record("web1", "not-sent")                 # ... and a later step did not
    assert later.anything_left                       # so not NothingSent: exit 3, not 1


def test_a_sequence_to_several_stops_for_each_target_whose_step_was_not_sent(secrets_dir):
    """For real, without a tunnel: no request can leave (no SA of ours, no privilege to
    require one), so reboot-safely's s is not sent to either target, and neither u nor b is
    tried, nor any wait slept."""
    lines = []
    options = sending.Options(wait=0.1, state_dir=str(secrets_dir / "state"))
    cfg = _fleet(secrets_dir, names=("web1", "web2"), groups={"web": ["web1", "web2"]})
    with pytest.raises(sending.NothingSent, match="nothing was sent to any of the 2 targets"):
        sending.send(cfg, None, None, "reboot-safely", options, report=lines.append,
                     group="web")
    assert lines[0] == "reboot-safely on group web (2 targets): s, wait 10 s, u, wait 5 s, b"
    assert sorted(line.split(":")[1] for line in lines[1:3]) == [" web1", " web2"]
    assert all(line.startswith("  1/5 not sent: ") for line in lines[1:3]), lines
    assert lines[3:] == [
        "  1/5 web1: the rest of the sequence is skipped for it (this step was not sent)",
        "  1/5 web2: the rest of the sequence is skipped for it (this step was not sent)",
        "summary: 2 targets: 2 not sent (web1, web2)"]

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

"""Wire format: digests against independent computations, including the man page's recipe."""

import hashlib
import subprocess

import pytest

from sysrq_appliance import wire
from sysrq_appliance.errors import InputError

PASSWORD = b"cookies-and-cream"


def test_ipv4_digest_matches_independent_sha1():
    request = wire.build("s", 1700000000, "abcDEF123_-", "10.10.25.7", PASSWORD)
    text = b"s,1700000000,abcDEF123_-,10.10.25.7," + PASSWORD
    assert request.digest == hashlib.sha1(text).hexdigest()
    assert request.encode() == b"s,1700000000,abcDEF123_-," + hashlib.sha1(text).hexdigest().encode()


def test_ipv6_destination_is_fully_expanded():
    request = wire.build("sub", 42, "salt", "2001:db8::7", PASSWORD, "sha256")
    expanded = "2001:0db8:0000:0000:0000:0000:0000:0007"
    text = f"sub,42,salt,{expanded},".encode() + PASSWORD
    assert request.digest == hashlib.sha256(text).hexdigest()


@pytest.mark.parametrize("address", ["10.10.25.7", "192.0.2.200"])
def test_digest_matches_man_page_shell_recipe(address):
    """xtables-addons' man page: echo -n "$req,$ipaddr,$password" | sha1sum"""
    request = wire.build("s", 1732400000, "Zm9vYmFy", address, PASSWORD)
    req = "s,1732400000,Zm9vYmFy"
    out = subprocess.run(
        ["sh", "-c", 'echo -n "$req,$ipaddr,$(cat)" | sha1sum | cut -c1-40'],
        input=PASSWORD, capture_output=True, check=True,
        env={"req": req, "ipaddr": address, "PATH": "/usr/bin:/bin"})
    assert request.digest == out.stdout.decode().strip()


def test_salts_are_random_and_comma_free():
    salts = {wire.new_salt() for _ in range(200)}
    assert len(salts) == 200
    assert all(wire.SALT_RE.match(s) and "," not in s for s in salts)


@pytest.mark.parametrize("keys,message", [
    ("", "KEYS: empty"),
    ("S", "KEYS: 'S' is not a SysRq key"),
    ("s,b", "KEYS: ',' is not a SysRq key"),
])
def test_bad_keys_are_refused(keys, message):
    with pytest.raises(InputError, match=message):
        wire.build(keys, 1, "salt", "10.10.25.7", PASSWORD)


def test_bad_salt_and_seqno_are_refused():
    with pytest.raises(InputError, match="--salt: 'a,b' is not allowed"):
        wire.build("s", 1, "a,b", "10.10.25.7", PASSWORD)
    with pytest.raises(InputError, match="--seqno: 0 is out of range; use 1 to 9223372036854775807"):
        wire.build("s", 0, "salt", "10.10.25.7", PASSWORD)


def test_plain_format_is_one_key_then_password():
    assert wire.build_plain("s", PASSWORD) == b"s" + PASSWORD
    with pytest.raises(InputError, match="exactly one"):
        wire.build_plain("su", PASSWORD)


def test_parse_round_trip_and_kernel_acceptance_rules():
    request = wire.build("h", 100, "salt", "10.10.25.7", PASSWORD)
    parsed = wire.parse(request.encode() + b"\n")
    assert parsed == request
    assert wire.accepted(parsed, "10.10.25.7", PASSWORD, "sha1", last_seqno=99)
    assert not wire.accepted(parsed, "10.10.25.7", PASSWORD, "sha1", last_seqno=100)  # replay
    assert not wire.accepted(parsed, "10.10.25.8", PASSWORD, "sha1", last_seqno=0)    # other dst
    assert not wire.accepted(parsed, "10.10.25.7", b"wrong", "sha1", last_seqno=0)


@pytest.mark.parametrize("payload,message", [
    (b"\xff\xfe", "not ASCII"),
    (b"s,1,salt", "3 comma-separated fields"),
    (b"s,x,salt,abcd", "seqno is not a number"),
    (b"s,1,salt,ABCD", "digest is not lowercase hex"),
])
def test_parse_rejects_malformed_packets(payload, message):
    with pytest.raises(InputError, match=message):
        wire.parse(payload)

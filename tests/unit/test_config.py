"""Config validation: the bad-config corpus, each with its exact one-line error."""

import os
import pathlib

import pytest

from sysrq_appliance import config
from sysrq_appliance.errors import InputError

CORPUS = pathlib.Path(__file__).parent / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


def _instantiate(case, directory):
    text = case.read_text().replace("@DIR@", str(directory))
    expect_line, body = text.split("\n", 1)
    path = directory / case.name
    path.write_text(body)
    return path, expect_line.removeprefix("# expect: ").replace("@PATH@", str(path))


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config_gives_exact_error(case, secrets_dir):
    path, expected = _instantiate(case, secrets_dir)
    with pytest.raises(InputError) as info:
        config.load(str(path), secret_owner=os.geteuid())
    assert str(info.value) == expected
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_errors_never_show_the_password(secrets_dir):
    for case in CASES:
        path, _ = _instantiate(case, secrets_dir)
        try:
            config.load(str(path), secret_owner=os.geteuid())
        except InputError as exc:
            assert "correct-horse" not in str(exc)


VALID_TARGET = """role: target
local: 10.10.25.7
peers:
  - name: admin1
    address: 10.10.25.1
    spi_in: 0x5a000101
    spi_out: 0x5a000102
    key_file: {d}/keys/admin1.key
    mac: AA:BB:CC:DD:EE:FF
sysrq:
  password_file: {d}/password
  allow: [sync, remount, reboot, dump]
"""


def test_valid_target_config_with_defaults(secrets_dir):
    path = secrets_dir / "ok.yaml"
    path.write_text(VALID_TARGET.format(d=secrets_dir))
    cfg = config.load(str(path), secret_owner=os.geteuid())
    assert cfg.role == "target" and cfg.local == "10.10.25.7"
    assert cfg.peers[0].spi_out == 0x5A000102
    assert cfg.peers[0].mac == "aa:bb:cc:dd:ee:ff"
    assert (cfg.port, cfg.hash, cfg.wire, cfg.backend, cfg.drop_other) == (
        9, "sha1", "hashed", "auto", True)
    assert cfg.algorithm == "rfc4106(gcm(aes))"
    assert cfg.sysrq_mask == 0x10 | 0x20 | 0x80 | 0x8
    assert cfg.find_peer("admin1") is cfg.peers[0]
    assert cfg.find_peer("10.10.25.1") is cfg.peers[0]


def test_ipv6_addresses_are_normalised(secrets_dir):
    text = VALID_TARGET.format(d=secrets_dir).replace("10.10.25.7", "2001:DB8:0::7").replace(
        "10.10.25.1", "2001:db8::1")
    path = secrets_dir / "v6.yaml"
    path.write_text(text)
    cfg = config.load(str(path), secret_owner=os.geteuid())
    assert cfg.local == "2001:db8::7" and cfg.family == 6
    assert cfg.find_peer("2001:0db8::0001").name == "admin1"


def test_unknown_peer_lists_known_ones(secrets_dir):
    path = secrets_dir / "ok.yaml"
    path.write_text(VALID_TARGET.format(d=secrets_dir))
    cfg = config.load(str(path), secret_owner=os.geteuid())
    with pytest.raises(InputError, match=r"TARGET: 'web9' is not a peer in .*; known: admin1"):
        cfg.find_peer("web9")


def test_secret_owned_by_someone_else_is_refused(secrets_dir):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root (CI runs as root)")
    os.chown(secrets_dir / "password", 65534, 65534)
    path = secrets_dir / "ok.yaml"
    path.write_text(VALID_TARGET.format(d=secrets_dir))
    with pytest.raises(InputError) as info:
        config.load(str(path), secret_owner=0)
    assert str(info.value) == (f"{path}: sysrq.password_file: {secrets_dir}/password is owned "
                               f"by uid 65534; run: chown 0:0 {secrets_dir}/password")


def test_missing_config_file_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="no such config file; copy .*appliance.yaml.example"):
        config.load(str(tmp_path / "nope.yaml"))

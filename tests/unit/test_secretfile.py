"""secretfile.TrustedDirs: each directory checked once per pass, with the same verdicts and
the same resolved paths as checking every file on its own."""

import os

import pytest

from sysrq_appliance import config, esp_keys
from sysrq_appliance.errors import InputError
from sysrq_appliance.secretfile import TrustedDirs, check_ancestors, read_secret


def _tree(root):
    """real/keys/a.key, a symlinked directory to it, a symlinked file, a '..' path."""
    keys = root / "real" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    (keys / "a.key").write_bytes(b"x")
    os.chmod(keys / "a.key", 0o600)
    (root / "link").symlink_to(root / "real")
    (keys / "b.key").symlink_to(keys / "a.key")
    return [str(keys / "a.key"), str(root / "link" / "keys" / "a.key"), str(keys / "b.key"),
            str(root / "link" / ".." / "real" / "keys" / "a.key"), str(keys / "missing"),
            str(root / "nowhere" / "x"), str(keys) + "/", str(root / "link" / "keys" / "..")]


def test_realpath_is_os_realpath(tmp_path):
    paths = _tree(tmp_path)
    trusted = TrustedDirs()
    for path in paths + paths:   # the second time from what the first resolved
        assert trusted.realpath(path) == os.path.realpath(path), path


def test_one_pass_still_refuses_every_unsafe_directory(tmp_path):
    safe, unsafe = tmp_path / "safe", tmp_path / "open"
    safe.mkdir(mode=0o700)
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    (safe / "to-open").symlink_to(unsafe)
    trusted = TrustedDirs()
    check_ancestors(str(safe / "a"), "f", trusted)
    check_ancestors(str(safe / "b"), "f", trusted)
    for path in (unsafe / "c", safe / "to-open" / "c"):   # directly, and through a symlink
        with pytest.raises(InputError, match="has mode 0777"):
            check_ancestors(str(path), "f", trusted)


def test_a_refused_parent_leaves_no_child_trusted(tmp_path):
    unsafe = tmp_path / "open"
    (unsafe / "keys").mkdir(parents=True, mode=0o700)
    os.chmod(unsafe, 0o777)
    trusted = TrustedDirs()
    for name in ("a.key", "b.key"):   # the second file, in the same pass, is refused too
        with pytest.raises(InputError, match="has mode 0777"):
            check_ancestors(str(unsafe / "keys" / name), "f", trusted)


def test_a_new_pass_checks_again(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    material = esp_keys.render(esp_keys.generate("rfc4106(gcm(aes))"), "p", "rfc4106(gcm(aes))")
    for name in ("a.key", "b.key"):
        (keys / name).write_bytes(material)
        os.chmod(keys / name, 0o600)
    trusted = TrustedDirs()
    read_secret(str(keys / "a.key"), "key_file", trusted=trusted)
    os.chmod(keys, 0o770)
    # The same pass keeps its verdict (only the owner could have changed it)...
    read_secret(str(keys / "b.key"), "key_file", trusted=trusted)
    # ...every new one looks again.
    with pytest.raises(InputError, match="has mode 0770"):
        read_secret(str(keys / "b.key"), "key_file", trusted=TrustedDirs())


def test_each_config_load_is_a_pass_of_its_own(tmp_path):
    etc = tmp_path / "etc"
    (etc / "keys").mkdir(parents=True, mode=0o700)
    lines = ["role: sender", "local: 192.0.2.1", "peers:"]
    material = esp_keys.render(esp_keys.generate("rfc4106(gcm(aes))"), "p", "rfc4106(gcm(aes))")
    for i in range(3):
        for name, data in ((f"keys/p{i}.key", material), (f"p{i}.password", b"pw")):
            (etc / name).write_bytes(data)
            os.chmod(etc / name, 0o600)
        lines += [f"  - name: p{i}", f"    address: 192.0.2.{10 + i}", f"    spi_in: {0x1000 + 2 * i}",
                  f"    spi_out: {0x1001 + 2 * i}", f"    key_file: {etc}/keys/p{i}.key",
                  f"    password_file: {etc}/p{i}.password"]
    (etc / "appliance.yaml").write_text("\n".join(lines) + "\n")
    os.chmod(etc / "appliance.yaml", 0o600)
    assert len(config.load(str(etc / "appliance.yaml")).peers) == 3
    os.chmod(etc / "keys", 0o777)
    with pytest.raises(InputError, match=r"peers\[0\]\.key_file: directory .*keys has mode 0777"):
        config.load(str(etc / "appliance.yaml"))

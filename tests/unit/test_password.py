"""Password rules, the atomic 0600 store and the `echo -n` sysfs write (against a temp dir)."""

import os
import stat

import pytest

from sysrq_appliance import password
from sysrq_appliance.errors import ApplianceError, InputError


def test_generated_passwords_fit_the_module():
    for _ in range(100):
        p = password.generate()
        assert len(p) == 32 and password.validate(p, "x") == p
        assert not set(p.decode()) & set(",\n\"'\0")
    assert len(password.generate(63)) == 63
    with pytest.raises(InputError, match="--length: 64 is out of range"):
        password.generate(64)


@pytest.mark.parametrize("value,message", [
    (b"", "is empty"),
    (b"x" * 64, "has more than 63 bytes; xt_SYSRQ keeps at most 63"),
    (b"secret\n", "contains a newline"),
    (b"sec\0ret", "contains a NUL byte"),
    (b"sec,ret", "contains a comma"),
])
def test_bad_passwords_are_refused_without_echoing_them(value, message):
    with pytest.raises(InputError, match=message) as info:
        password.validate(value, "stdin")
    assert value.decode(errors="replace").strip() not in str(info.value) or not value


def test_store_is_atomic_0600_in_0700_dir(tmp_path):
    path = tmp_path / "etc" / "password"
    password.store(str(path), b"first-secret")
    password.store(str(path), b"second-secret")
    assert path.read_bytes() == b"second-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(os.listdir(path.parent)) == ["password"]  # no temp file left behind


def _fake_sysfs(tmp_path):
    """A directory standing in for /sys/module/xt_SYSRQ/parameters."""
    d = tmp_path / "parameters"
    d.mkdir()
    (d / "password").write_bytes(b"")
    return str(d)


def test_kernel_write_is_exact_bytes_without_newline(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    password.write_kernel_password(b"exact-bytes", sysfs)
    assert (tmp_path / "parameters" / "password").read_bytes() == b"exact-bytes"
    assert password.kernel_password_matches(b"exact-bytes", sysfs)


def test_kernel_write_failure_is_reported(tmp_path):
    with pytest.raises(ApplianceError, match="cannot write .*/password"):
        password.write_kernel_password(b"x", str(tmp_path / "missing"))


def test_activate_rolls_back_file_when_kernel_refuses(tmp_path, monkeypatch):
    sysfs = _fake_sysfs(tmp_path)
    path = tmp_path / "password"
    password.store(str(path), b"old-secret")

    def refuse(new, sysfs_dir):
        raise ApplianceError("the kernel did not take the password")
    monkeypatch.setattr(password, "write_kernel_password", refuse)
    with pytest.raises(ApplianceError):
        password.activate(str(path), b"new-secret", sysfs)
    assert path.read_bytes() == b"old-secret"


def test_activate_without_module_only_stores(tmp_path):
    path = tmp_path / "password"
    assert password.activate(str(path), b"new-secret", str(tmp_path / "not-loaded")) is False
    assert path.read_bytes() == b"new-secret"

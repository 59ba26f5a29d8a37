import os

import pytest

from sysrq_appliance import esp_keys


@pytest.fixture
def secrets_dir(tmp_path):
    """A directory with valid (and some deliberately broken) secret files, owned by us."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    material = esp_keys.render(esp_keys.generate("rfc4106(gcm(aes))"), "admin1",
                               "rfc4106(gcm(aes))")
    for name, mode in (("admin1.key", 0o600), ("open.key", 0o644)):
        (keys / name).write_bytes(material)
        os.chmod(keys / name, mode)
    for name, mode in (("password", 0o600), ("password-0640", 0o640)):
        (tmp_path / name).write_bytes(b"correct-horse-battery")
        os.chmod(tmp_path / name, mode)
    return tmp_path

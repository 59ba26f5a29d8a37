import pytest

from sysrq_appliance import esp_keys
from sysrq_appliance.errors import InputError

GCM = "rfc4106(gcm(aes))"


def test_render_parse_round_trip_and_swap():
    keys = esp_keys.generate(GCM)
    assert len(keys.inbound) == 36 and keys.inbound != keys.outbound
    assert esp_keys.parse(esp_keys.render(keys, "web1", GCM), "f", GCM) == keys
    assert keys.swapped().inbound == keys.outbound
    assert keys.inbound.hex() not in repr(keys)


@pytest.mark.parametrize("text,message", [
    ("in 00\nout 11\n", r"the in key has 8 bits; rfc4106\(gcm\(aes\)\) takes 160 or 224 or 288"),
    ("in zz\n", "line 1: the in key is not hex"),
    ("in " + "00" * 36 + "\n", "no 'out' key"),
    ("in " + "00" * 36 + "\nout " + "00" * 36 + "\n", "in and out keys are equal"),
    ("inbound 00\n", "line 1: expected 'in HEX' and 'out HEX'"),
])
def test_bad_key_material(text, message):
    with pytest.raises(InputError, match=message) as info:
        esp_keys.parse(text.encode(), "f", GCM)
    assert "00" * 20 not in str(info.value)


def test_cbc_hmac_lengths():
    keys = esp_keys.generate("cbc(aes)+hmac(sha256)")
    assert len(keys.outbound) == 64

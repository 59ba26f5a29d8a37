"""Outbound ESP counters continue across re-adds: no GCM nonce is ever used twice."""

import struct

import pytest

from sysrq_appliance import sa_sequence, xfrm
from sysrq_appliance.errors import ApplianceError

SPI = 0x5A000102


def floors(tmp_path):
    return sa_sequence.Floors(str(tmp_path))


def test_each_add_gets_a_fresh_range(tmp_path):
    assert floors(tmp_path).allocate([SPI, SPI + 1]) == {SPI: 0, SPI + 1: 0}
    # e.g. after a crash, no settle: the next add starts above everything reserved
    assert floors(tmp_path).allocate([SPI]) == {SPI: sa_sequence.RESERVE}
    assert floors(tmp_path).floor(SPI + 1) == sa_sequence.RESERVE


def test_settle_reclaims_only_what_was_unused(tmp_path):
    start = floors(tmp_path).allocate([SPI])[SPI]
    floors(tmp_path).settle({SPI: start + 40})             # the SA sent 40 packets
    resumed = start + 40 + sa_sequence.SETTLE_MARGIN
    assert floors(tmp_path).allocate([SPI]) == {SPI: resumed}
    floors(tmp_path).settle({SPI: 0})                      # unknown: never lowers the floor
    assert floors(tmp_path).floor(SPI) == resumed + sa_sequence.RESERVE


def test_keep_ahead_of_a_busy_sa(tmp_path):
    start = floors(tmp_path).allocate([SPI])[SPI]
    live = start + sa_sequence.RESERVE // 2 + 1
    floors(tmp_path).keep_ahead({SPI: live})
    assert floors(tmp_path).floor(SPI) == live + sa_sequence.RESERVE


def _floors_file(tmp_path, text, mode=0o600):
    path = tmp_path / "esp-seq.json"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_exhausted_sequence_space_asks_for_new_keys(tmp_path):
    _floors_file(tmp_path, f'{{"{SPI}": {sa_sequence.LIMIT - 10}}}')
    with pytest.raises(ApplianceError, match="used up its sequence numbers; make new keys"):
        floors(tmp_path).allocate([SPI])


def test_oseq_travels_as_xfrma_replay_val_and_round_trips():
    state = xfrm.State("10.10.25.7", "10.10.25.1", SPI, xfrm.REQID_BASE | 1,
                       aead=xfrm.Algorithm("rfc4106(gcm(aes))", bytes(36), 128), oseq=1 << 20)
    data = xfrm.request_bytes(xfrm.state_msg(state), xfrm.XFRM_MSG_NEWSA)
    offset, found = 16 + 224, None
    while offset < len(data):
        length, kind = struct.unpack_from("HH", data, offset)
        if kind == xfrm.XFRMA_REPLAY_VAL:
            found = struct.unpack_from("III", data, offset + 4)
            assert length == 16
        offset += (length + 3) & ~3
    assert found == (1 << 20, 0, 0)
    plain = xfrm.request_bytes(xfrm.state_msg(
        xfrm.State(state.src, state.dst, SPI, state.reqid, aead=state.aead)), xfrm.XFRM_MSG_NEWSA)
    assert len(plain) == len(data) - 16      # no attribute when there is nothing to continue
    assert state == xfrm.State(state.src, state.dst, SPI, state.reqid, aead=state.aead)


@pytest.mark.parametrize("content", [
    "", "{", "garbage", "[]", '{"x": 1}', f'{{"{SPI}": -1}}', f'{{"{SPI}": "5"}}',
    f'{{"{SPI}": true}}', f'{{"{SPI}": 1.5}}', f'{{"{SPI}": {2**32}}}', '{"0": 5}',
    f'{{"{2**32}": 5}}', '{"\u0661": 5}', "\udcff",
    f'{{"{SPI}": 5, "{SPI}": 1}}',                 # a duplicate key must not lower a floor
    "[" * 100000 + "]" * 100000,                  # deep enough to exhaust the recursion limit
])
def test_damaged_floors_fail_closed_and_stay_as_they_are(tmp_path, content):
    """A damaged file never reads as 'no floors' (that restarts counters: nonce reuse)."""
    path = _floors_file(tmp_path, content.encode("utf-8", "surrogateescape").decode(
        "latin-1"))
    before = path.read_bytes()
    with pytest.raises(sa_sequence.FloorsDamaged) as info:
        floors(tmp_path)
    message = str(info.value)
    assert "no outbound SA is added" in message and "make new keys and SPIs" in message
    assert info.value.exit_code == 2 and "\n" not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o400])
def test_floors_with_loose_mode_are_refused(tmp_path, mode):
    _floors_file(tmp_path, f'{{"{SPI}": 5}}', mode)
    with pytest.raises(sa_sequence.FloorsDamaged, match=f"has mode {mode:04o}; run: chmod"):
        floors(tmp_path)


def test_floors_symlink_and_fifo_are_refused(tmp_path):
    import os
    target = _floors_file(tmp_path, f'{{"{SPI}": 5}}')
    os.rename(target, tmp_path / "real.json")
    (tmp_path / "esp-seq.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(sa_sequence.FloorsDamaged, match="is a symlink"):
        floors(tmp_path)
    (tmp_path / "esp-seq.json").unlink()
    os.mkfifo(tmp_path / "esp-seq.json", 0o600)
    with pytest.raises(sa_sequence.FloorsDamaged, match="not a regular file"):
        floors(tmp_path)


def test_missing_floors_file_is_a_first_apply(tmp_path):
    assert floors(tmp_path).allocate([SPI]) == {SPI: 0}

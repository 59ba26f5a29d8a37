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


def test_exhausted_sequence_space_asks_for_new_keys(tmp_path):
    (tmp_path / "esp-seq.json").write_text(f'{{"{SPI}": {sa_sequence.LIMIT - 10}}}')
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

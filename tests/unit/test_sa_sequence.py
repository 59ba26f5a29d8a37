"""Outbound ESP counters continue across re-adds: no GCM nonce is ever used twice."""

import struct

import pytest

from sysrq_appliance import sa_sequence, xfrm
from sysrq_appliance.errors import ApplianceError

SPI = 0x5A000102


def test_each_add_gets_a_fresh_range(tmp_path):
    first = sa_sequence.allocate(str(tmp_path), SPI)
    second = sa_sequence.allocate(str(tmp_path), SPI)     # e.g. after a crash, no settle
    assert first == 0 and second == sa_sequence.RESERVE
    assert sa_sequence.allocate(str(tmp_path), SPI + 1) == 0   # per SPI


def test_settle_reclaims_only_what_was_unused(tmp_path):
    start = sa_sequence.allocate(str(tmp_path), SPI)
    sa_sequence.settle(str(tmp_path), SPI, start + 40)    # the SA sent 40 packets
    assert sa_sequence.allocate(str(tmp_path), SPI) == start + 41
    sa_sequence.settle(str(tmp_path), SPI, 0)             # unknown: never lowers the floor
    assert sa_sequence.floor(str(tmp_path), SPI) == start + 41 + sa_sequence.RESERVE


def test_keep_ahead_of_a_busy_sa(tmp_path):
    start = sa_sequence.allocate(str(tmp_path), SPI)
    live = start + sa_sequence.RESERVE // 2 + 1
    sa_sequence.keep_ahead(str(tmp_path), SPI, live)
    assert sa_sequence.floor(str(tmp_path), SPI) == live + sa_sequence.RESERVE


def test_exhausted_sequence_space_asks_for_new_keys(tmp_path):
    (tmp_path / f"esp-seq.{SPI:08x}").write_text(f"{sa_sequence.LIMIT - 10}\n")
    with pytest.raises(ApplianceError, match="used up its sequence numbers; make new keys"):
        sa_sequence.allocate(str(tmp_path), SPI)


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

import stat

from sysrq_appliance import seqno


def test_next_is_clock_or_last_plus_one():
    ahead = seqno.CLOCK_ALLOWANCE
    assert seqno.next_seqno(1000.7, 0) == 1000 + ahead  # a target that just loaded xt_SYSRQ
    assert seqno.next_seqno(1000, 1000 + ahead) == 1001 + ahead   # two sends in one second
    assert seqno.next_seqno(900, 2000) == 2001         # clock stepped backwards


def test_reserve_persists_per_target(tmp_path):
    ahead = seqno.CLOCK_ALLOWANCE
    assert seqno.reserve(str(tmp_path), "web1", 5000) == 5000 + ahead
    assert seqno.reserve(str(tmp_path), "web1", 5000) == 5001 + ahead
    assert seqno.reserve(str(tmp_path), "web2", 5000) == 5000 + ahead
    assert seqno.read_last(str(tmp_path), "web1") == 5001 + ahead
    mode = stat.S_IMODE((tmp_path / "seqno.web1").stat().st_mode)
    assert mode == 0o600


def test_damaged_state_falls_back_to_clock(tmp_path):
    (tmp_path / "seqno.web1").write_text("garbage")
    assert seqno.reserve(str(tmp_path), "web1", 7000) == 7000 + seqno.CLOCK_ALLOWANCE


def test_explicit_seqno_is_recorded_so_later_sends_stay_above(tmp_path):
    seqno.record(str(tmp_path), "web1", 9000)
    assert seqno.reserve(str(tmp_path), "web1", 5000) == 9001
    seqno.record(str(tmp_path), "web1", 10)          # never goes backwards
    assert seqno.read_last(str(tmp_path), "web1") == 9001


def test_reserve_many_takes_one_number_per_target_above_its_last(tmp_path):
    state = str(tmp_path / "state")
    seqno.reserve(state, "web1", 5000)               # web1's last: 5010
    numbers = seqno.reserve_many(state, ["web1", "web2"], 1000)
    assert numbers == {"web1": 5011, "web2": 1010}
    assert seqno.read_last(state, "web2") == 1010
    assert seqno.reserve_many(state, ["web1", "web2"], 1000, fixed=3000) == {
        "web1": 3000, "web2": 3000}
    assert (seqno.read_last(state, "web1"), seqno.read_last(state, "web2")) == (5011, 3000)

"""The audit entry's fields, the operators' socket protocol and the helper's credential
rule: pure parts, without a socket or a journal (tests/netns runs the real processes)."""

import pytest
from hypothesis import given, settings, strategies as st

import shipped
from sysrq_appliance import audit, cli, helper, opsocket
from sysrq_appliance.errors import InputError

CALLER = audit.Caller(1001, "alice", "helper", 4242)
FUZZ = settings(derandomize=True, database=None, max_examples=200, deadline=None)


def _entry(**changes):
    values = dict(caller=CALLER, admin_host="admin1", admin_address="10.10.25.1",
                  target="web1", target_address="10.10.25.7", keys="h", sequence=None,
                  seqno=1764380000, outcome="confirmed",
                  detail="confirmed: web1 accepted 'h' (answer through the tunnel after 3 ms)")
    values.update(changes)
    return audit.Entry(**values)


def test_an_entry_names_who_where_what_and_how_it_ended():
    fields = audit.fields(_entry())
    assert fields["SYSLOG_IDENTIFIER"] == "sysrq-appliance-audit"
    assert fields["MESSAGE"] == "alice (uid 1001, helper): keys 'h' to web1 seqno 1764380000: confirmed"
    assert {k: fields[k] for k in ("SYSRQ_UID", "SYSRQ_USER", "SYSRQ_VIA", "SYSRQ_CALLER_PID",
                                   "SYSRQ_ADMIN_HOST", "SYSRQ_TARGET", "SYSRQ_KEYS",
                                   "SYSRQ_SEQNO", "SYSRQ_OUTCOME", "PRIORITY")} == {
        "SYSRQ_UID": "1001", "SYSRQ_USER": "alice", "SYSRQ_VIA": "helper",
        "SYSRQ_CALLER_PID": "4242", "SYSRQ_ADMIN_HOST": "admin1", "SYSRQ_TARGET": "web1",
        "SYSRQ_KEYS": "h", "SYSRQ_SEQNO": "1764380000", "SYSRQ_OUTCOME": "confirmed",
        "PRIORITY": "5"}
    assert "SYSRQ_SEQUENCE" not in fields      # empty fields are left out


def test_a_refusal_is_a_warning_without_a_number():
    fields = audit.fields(_entry(outcome="refused", seqno=None, keys=None, sequence="diagnose",
                                 detail="--sequence diagnose: web1 allows only sync"))
    assert fields["PRIORITY"] == "4" and "SYSRQ_SEQNO" not in fields
    assert fields["MESSAGE"] == "alice (uid 1001, helper): sequence 'diagnose' to web1: refused"


def test_hostile_values_are_quoted_and_cut():
    fields = audit.fields(_entry(target="x\nMESSAGE=forged" + "y" * 500))
    assert "\n" not in fields["SYSRQ_TARGET"] and len(fields["SYSRQ_TARGET"]) == audit.VALUE_LIMIT
    assert fields["SYSRQ_TARGET"].startswith("'x\\nMESSAGE=forged")


def test_an_unknown_outcome_is_a_bug():
    with pytest.raises(ValueError):
        audit.fields(_entry(outcome="maybe"))


def test_a_journal_that_cannot_be_written_is_one_warning_and_the_send_goes_on():
    warnings = []

    def broken(entry):
        raise OSError(13, "Permission denied")
    trail = audit.Trail(CALLER, "web1", "h", None, warn=warnings.append, writer=broken,
                        host="admin1")
    trail.failed(InputError("KEYS: empty"), refused=True)
    assert warnings == ["sysrq-appliance: warning: no audit entry written (Permission denied); "
                        "install python3-systemd and check journald"]


def test_a_failure_a_request_entry_told_already_is_not_told_twice():
    written = []
    trail = audit.Trail(CALLER, "web1", "h", None, warn=print, writer=written.append, host="a")

    class Sent:
        keys, seqno, outcome, detail = "h", 7, "not-sent", "no SA"
    trail.request(Sent)
    trail.failed(Exception("no SA"), refused=False)
    assert [(e.outcome, e.seqno) for e in written] == [("not-sent", 7)]


def test_a_call_blocked_on_journald_ends_within_the_bound_as_one_warning():
    """libc's pause() blocks until a signal and reports the interruption as libsystemd's
    sendmsg() does (an EINTR error). The first alarm may ring before pause() starts on a
    busy machine: bounded() repeats it."""
    import ctypes
    import os
    libc = ctypes.CDLL(None, use_errno=True)   # loaded outside the bounded call

    def blocked_in_the_kernel():
        if libc.pause() == -1:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def late_block():   # the alarm rings before the call blocks
        import time
        time.sleep(0.2)
        blocked_in_the_kernel()
    for call in (blocked_in_the_kernel, late_block):
        with pytest.raises(TimeoutError):
            audit.bounded(call, 0.05)
    warnings = []
    trail = audit.Trail(CALLER, "web1", "h", None, warn=warnings.append, host="admin1",
                        writer=lambda entry: audit.bounded(blocked_in_the_kernel, 0.05))
    trail.failed(InputError("KEYS: empty"), refused=True)
    assert warnings == ["sysrq-appliance: warning: no audit entry written (journald took "
                        "nothing within 0.05 s); install python3-systemd and check journald"]


def test_a_bounded_call_that_returns_in_time_leaves_no_alarm_behind():
    import signal
    before = signal.getsignal(signal.SIGALRM)
    assert audit.bounded(lambda: 42, 5.0) == 42
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


# ------------------------------------------------------------------ the socket's protocol

@FUZZ
@given(st.lists(st.text(st.characters(blacklist_characters="\0",
                                      blacklist_categories=("Cs",)), max_size=30), max_size=8))
def test_requests_round_trip(argv):
    assert opsocket.decode_request(opsocket.encode_request(argv)) == argv


@pytest.mark.parametrize("data, error", [
    (b"send\0web1\0h", "request: not NUL-terminated arguments; refused"),
    (b"apply\0", "request: the helper only sends; b'apply' refused"),
    (b"send\0" + b"x" * 5000 + b"\0", "request: longer than 4096 bytes; refused"),
    (b"", "request: not NUL-terminated arguments; refused"),
])
def test_malformed_requests_are_refused_in_one_line(data, error):
    with pytest.raises(InputError) as refused:
        opsocket.decode_request(data)
    assert str(refused.value) == error


@FUZZ
@given(target=st.text(min_size=1, max_size=20).filter(lambda t: "\0" not in t),
       keys=st.one_of(st.none(), st.text("0123456789abcdefghijklmnopqrstuvwxyz-", min_size=1,
                                          max_size=5)),
       sequence=st.one_of(st.none(), st.text("abcdefz-", min_size=1, max_size=9)),
       count=st.integers(1, 1000),
       wait=st.sampled_from([0.0, 0.001, 0.5, 1.0, 2.25, 59.999, 60.0]))
def test_the_helper_parses_what_the_client_sends_into_the_same_arguments(target, keys, sequence,
                                                                          count, wait):
    """The client rebuilds send's arguments from what it parsed; the helper's parser gets
    them back unchanged, whatever they start with."""
    args = cli._OperatorParser().parse_args(
        opsocket.operator_argv(target, keys, sequence, count, wait))
    assert (args.target, args.keys, args.sequence, args.count, args.wait) == \
        (target, keys, sequence, count, wait)


@pytest.mark.parametrize("argv", [["--dry-run", "web1", "h"], ["--seqno=5", "web1", "h"],
                                  ["--salt", "x", "web1", "h"], ["--config=/x", "web1", "h"],
                                  ["web1", "h", "-h"], ["web1", "h", "--help"]])
def test_the_helper_parser_knows_nothing_but_sends_arguments(argv):
    with pytest.raises(cli._Usage) as refused:
        cli._OperatorParser().parse_args(argv)
    assert str(refused.value).startswith("sysrq-appliance send: error: unrecognized arguments: ")


def test_the_helper_parser_says_what_the_cli_says():
    result = cli.main(["send", "web1", "h", "--count", "0"])
    with pytest.raises(cli._Usage) as refused:
        cli._OperatorParser().parse_args(["web1", "h", "--count", "0"])
    assert result == 2 and str(refused.value) == (
        "sysrq-appliance send: error: argument --count: '0' is not a whole number from 1 to "
        "1000 (see 'sysrq-appliance send --help')")


# ------------------------------------------------------------------ who may use the helper

@pytest.mark.parametrize("peer, ok", [
    (helper.Peer(1, 0, 0, ()), True),                    # root
    (helper.Peer(1, 1001, 990, ()), True),               # primary group
    (helper.Peer(1, 1001, 1001, (27, 990)), True),       # supplementary group
    (helper.Peer(1, 1001, 1001, (27, 100)), False),
    (helper.Peer(1, 1001, 1001, None), False),           # too many groups to read, no database
])
def test_root_or_a_holder_of_the_group(peer, ok):
    assert helper.allowed(peer, 990) is ok


def test_too_many_groups_to_read_falls_back_to_the_group_database():
    peer = helper.Peer(1, 1001, 1001, None)
    assert helper.allowed(peer, 990, member_of=lambda uid, gid: (uid, gid) == (1001, 990))


def test_without_the_helper_a_non_root_send_says_how_to_get_it(tmp_path):
    import os
    import subprocess
    import sys
    if os.geteuid() == 0:
        pytest.skip("root sends itself; the unit tier runs as nobody")
    path = tmp_path / "none.sock"
    result = subprocess.run([sys.executable, "-m", "sysrq_appliance", "--helper-socket",
                             str(path), "send", "web1", "h"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(pytest.importorskip(
                                "sysrq_appliance").__path__[0].rsplit("/", 1)[0])})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"sysrq-appliance: send: not root, and the operators' helper is not listening on {path} "
        "(No such file or directory); run as root, or have an admin run 'systemctl enable --now "
        "sysrq-appliance-helper.socket'\n")


# ------------------------------------------------------------------ a helper that never answers

def test_the_clients_deadline_covers_every_wait_a_request_may_take():
    assert opsocket.answer_deadline(2.0, None) == 2.0 + opsocket.ANSWER_MARGIN
    longest = opsocket.answer_deadline(2.0, "reboot-safely")
    assert longest > opsocket.sequences.MAX_TOTAL_WAIT + opsocket.sequences.MAX_STEPS * 2.0


@pytest.fixture
def silent_helper(tmp_path):
    """A real operators' socket whose server accepts, reads the request, and never answers."""
    import os
    import socket
    import threading
    if os.geteuid() == 0:   # before the server starts: it would wait for a client for good
        pytest.skip("root sends itself, never through the helper; the unit tier runs as nobody")
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(60)   # a test that never connects fails, it does not hang the tier
    held, stop = [], threading.Event()

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        conn.recv(opsocket.MAX_REQUEST)
        stop.wait()   # never answers, never closes: until the test is over
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(timeout=90)
    for conn in held:
        conn.close()
    listener.close()


def test_a_helper_whose_queue_stays_full_costs_one_line_and_exit_1(tmp_path, monkeypatch,
                                                                    capsys):
    """connect() to an AF_UNIX socket whose backlog is full fails at once (EAGAIN): the
    client tries again for CONNECT_WAIT, then says so in one line; nothing was sent."""
    import os
    import socket
    if os.geteuid() == 0:
        pytest.skip("root sends itself, never through the helper; the unit tier runs as nobody")
    path = str(tmp_path / "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(0)   # never accepts
    queued = []
    try:
        for _ in range(64):   # fill the backlog, whatever the kernel rounds it to
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
        else:
            pytest.fail("the backlog never filled")
        monkeypatch.setattr(opsocket, "CONNECT_WAIT", 0.3)
        code = cli.main(["--helper-socket", path, "send", "--wait", "0", "web1", "h"])
    finally:
        for s in queued:
            s.close()
        listener.close()
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (f"sysrq-appliance: send: the operators' helper on {path} took no new request "
                   "within 0.3 s (its queue is full: other requests are being served); nothing "
                   "was sent: try again in a moment\n")


def test_a_helper_that_never_answers_costs_one_line_and_exit_1(silent_helper, monkeypatch,
                                                                capsys):
    monkeypatch.setattr(opsocket, "ANSWER_MARGIN", 0.2)
    code = cli.main(["--helper-socket", silent_helper, "send", "--wait", "0", "web1", "h"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (f"sysrq-appliance: send: the operators' helper on {silent_helper} did not "
                   "answer within 0.2 s; whether anything was sent is unknown: see "
                   "'journalctl -u sysrq-appliance-helper'\n")


@pytest.mark.parametrize("helper_does", ["hangs up before the request",
                                         "hangs up after reading it",
                                         "answers before the request",
                                         "answers, leaving it unread"])
def test_a_helper_that_closes_early_costs_its_line_or_one_line_of_ours(monkeypatch, capsys,
                                                                       helper_does):
    """However the helper ends a connection (helper.serve: a flood's line is told at once), the
    client prints its answer when there is one (also after EPIPE on its request, or after
    the reset a close on unread data causes), and otherwise one line; exit 1, no hang."""
    import os
    import socket
    import threading
    if os.geteuid() == 0:
        pytest.skip("root sends itself, never through the helper; the unit tier runs as nobody")
    client, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def answer():
        helper_end.send(opsocket.STDERR + b"sysrq-appliance: flooded")
        helper_end.send(opsocket.EXIT + b"1")
        helper_end.close()
    if helper_does == "hangs up before the request":
        helper_end.close()
    elif helper_does == "answers before the request":
        answer()
    elif helper_does == "hangs up after reading it":
        threading.Thread(target=lambda: (helper_end.recv(opsocket.MAX_REQUEST),
                                         helper_end.close()), daemon=True).start()
    else:   # the answer and the close right after the request arrived, before any read
        class AnsweredOnSend:
            def __init__(self, sock):
                self.sock = sock

            def __getattr__(self, name):
                return getattr(self.sock, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.sock.close()

            def send(self, data):
                sent = self.sock.send(data)
                answer()
                return sent
        client = AnsweredOnSend(client)
    monkeypatch.setattr(opsocket, "_connect", lambda path, user, seconds: client)
    code = cli.main(["--helper-socket", "/nonexistent/helper.sock", "send", "--wait", "0",
                     "web1", "h"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    if helper_does.startswith("answers"):
        assert err == "sysrq-appliance: flooded\n"
    else:
        assert err == ("sysrq-appliance: send: the operators' helper ended without an answer; "
                       "see 'journalctl -u sysrq-appliance-helper'\n")


# ------------------------------------------------------------------ the helper's slots

@pytest.mark.parametrize("serving, uid, refused", [
    ([], 1001, None),
    ([1001, 1001], 1001, None),
    ([1001, 1001, 1001], 1002, None),                 # another operator is still served
    ([1001, 1001, 1001], 1001, "per user"),
    ([0, 0, 0], 0, "per user"),                       # root through the helper too
    ([1, 2, 3, 4, 5, 6, 7, 8], 9, "serving 8 requests already"),
])
def test_one_user_cannot_take_every_slot(serving, uid, refused):
    line = helper.busy(serving, uid, max_clients=8, max_per_uid=3)
    assert line is None if refused is None else refused in line


# ------------------------------------------------------------------ how the trail is read

def test_every_documented_audit_query_matches_a_field_only_journald_sets():
    """Anyone can log with SYSLOG_IDENTIFIER=sysrq-appliance-audit; only root's entries
    carry _UID=0, only the helper's _SYSTEMD_UNIT=sysrq-appliance-helper.service."""
    import re
    root = shipped.ROOT
    sources = [*shipped.documents(), root / "docs" / "sysrq-appliance.8.rst", *shipped.units(),
               *sorted((root / "tests" / "vagrant" / "scenarios").glob("*.scn"))]
    assert len(shipped.units()) >= 4
    queries = [line for path in sources for line in shipped.text(path).splitlines()
               if re.search(r"journalctl\b.*sysrq-appliance-audit", line)]
    assert len(queries) >= 6
    untrusted = [q for q in queries if not re.search(r"\b_UID=0\b|\b_SYSTEMD_UNIT=", q)
                 and ":: !contains" not in q]   # an absence check reads forgeries too
    assert untrusted == []


def test_journalds_rate_limit_never_drops_the_helpers_audit_entries():
    import configparser
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(shipped.unit("sysrq-appliance-helper.service").read_text())
    assert unit["Service"]["LogRateLimitIntervalSec"] == "0"

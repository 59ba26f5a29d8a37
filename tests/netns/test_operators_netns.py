"""Operators and the audit trail, for real: a `sysrq-appliance helper` process in the
sender's namespace, handed its listening socket as systemd hands it (fd 3, LISTEN_FDS), a
client running `send` as nobody (with or without a throwaway operators' group id), and the
journal entries libsystemd writes, read from a socket of our own (tests/lib/journal_sink.py).

This host's kernel has no ESP, so a send ends with the kernel refusing plaintext (exit 1):
through the helper it must end exactly as root's own send does, line for line, and nothing
may reach the target. With ESP (the real-kernel tier) the operator's `h` is confirmed.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from appliance_env import Installation, env, make_bundle

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))
from journal_sink import JournalSink  # noqa: E402
from operators import NOBODY, Helper, remove_socket_dir, socket_dir, unused_gid  # noqa: E402

PYTHON = "/usr/bin/python3"


class Setup:
    def __init__(self, linked, tmp_path, mode=0o660, esp=False):
        self.sender_ns, self.target_ns = linked
        bundle = make_bundle(tmp_path)
        self.sender = Installation(self.sender_ns, tmp_path, "sender", bundle=bundle)
        self.target = Installation(self.target_ns, tmp_path, "target", bundle=bundle)
        self.sink = JournalSink(tmp_path)
        self.gid = unused_gid()
        self.dir = socket_dir()
        self.helper = Helper(self.dir, self.sender.config, self.sender.state, self.gid, mode,
                             prefix=("ip", "netns", "exec", self.sender_ns.name,
                                     *self.sink.wrap()))
        self.secrets = [p.read_bytes() for p in self.sender.etc.rglob("*")
                        if p.is_file() and p.parent.name in ("keys", "passwords")]

    def root_send(self, *argv):
        """root's own `send` in the sender's namespace, its journal entries to the sink."""
        return subprocess.run(["ip", "netns", "exec", self.sender_ns.name, *self.sink.wrap(),
                               PYTHON, "-m", "sysrq_appliance", "--config",
                               str(self.sender.config), "--state-dir", str(self.sender.state),
                               "send", *argv], capture_output=True, env=env(), timeout=60)

    def operator_send(self, *argv, member=True):
        return self.helper.client("send", *argv, user=NOBODY,
                                  groups=[self.gid] if member else [])

    def udp9_at_target(self):
        counted = self.target_ns.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
        return int(counted.splitlines()[2].split()[0])

    def close(self):
        out, err = self.helper.stop()
        remove_socket_dir(self.dir)
        self.sink.close()
        return out, err


@pytest.fixture
def setup(linked_netns, tmp_path):
    s = Setup(linked_netns, tmp_path)
    s.target_ns.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9")   # a counter
    yield s
    out, err = s.close()
    assert err == "" and out == "", "the helper printed something: " + out + err


def field(entry, name):
    return entry[name].decode()


def test_root_send_is_one_audit_entry_per_request_and_never_a_secret(setup):
    done = setup.root_send("web1", "h")
    assert done.returncode == 1
    (entry,) = setup.sink.entries()
    assert {k: field(entry, k) for k in ("SYSRQ_UID", "SYSRQ_USER", "SYSRQ_VIA", "SYSRQ_TARGET",
                                          "SYSRQ_TARGET_ADDRESS", "SYSRQ_ADMIN_ADDRESS",
                                          "SYSRQ_KEYS", "SYSRQ_OUTCOME", "PRIORITY")} == {
        "SYSRQ_UID": "0", "SYSRQ_USER": "root", "SYSRQ_VIA": "root", "SYSRQ_TARGET": "web1",
        "SYSRQ_TARGET_ADDRESS": "10.10.25.7", "SYSRQ_ADMIN_ADDRESS": "10.10.25.1",
        "SYSRQ_KEYS": "h", "SYSRQ_OUTCOME": "not-sent", "PRIORITY": "4"}
    assert "sysrq-appliance: " + field(entry, "SYSRQ_DETAIL") == done.stderr.decode().strip()
    seqno = int(field(entry, "SYSRQ_SEQNO"))
    assert seqno == int((setup.sender.state / "seqno.web1").read_text().split()[0])
    assert field(entry, "SYSRQ_ADMIN_HOST") == os.uname().nodename

    masked = setup.root_send("web1", "w")          # dump: outside the target's allow list
    assert masked.returncode == 2
    refused = setup.sink.entries()[1]
    assert field(refused, "SYSRQ_OUTCOME") == "refused" and "SYSRQ_SEQNO" not in refused
    assert "sysrq-appliance: " + field(refused, "SYSRQ_DETAIL") == masked.stderr.decode().strip()
    dry = setup.root_send("web1", "h", "--dry-run")
    assert dry.returncode == 0 and len(setup.sink.entries()) == 2   # a dry run sends nothing
    for secret in setup.secrets:
        assert all(secret not in datagram for datagram in setup.sink.raw)


@pytest.mark.parametrize("argv", [
    ["web1", "h"],
    ["web1", "h", "--count", "3", "--wait", "0.2"],
    ["web1", "--sequence", "reboot-safely"],
    ["web1", "w"],                      # masked: refused before sending
    ["web9", "h"],                      # not a peer
    ["10.10.25.7", "h!"],               # not a key
    ["--all", "h"],                     # every target (here one): the fan-out, its summary
    ["web1,web9", "h"],                 # one of the list not a peer
], ids=lambda argv: " ".join(argv))
def test_a_member_sends_through_the_helper_with_roots_lines_and_codes(setup, argv):
    root = setup.root_send(*argv)
    operator = setup.operator_send(*argv)
    assert (operator.returncode, operator.stdout, operator.stderr) == \
        (root.returncode, root.stdout, root.stderr)
    assert len(operator.stderr.decode().splitlines()) == 1
    assert setup.udp9_at_target() == 0     # no ESP here: nothing ever left in plaintext
    entries = setup.sink.entries()
    theirs = [e for e in entries if e["SYSRQ_VIA"] == b"helper"]
    assert len(theirs) == len(entries) - len(theirs) == 1
    assert field(theirs[0], "SYSRQ_UID") == str(NOBODY)
    assert field(theirs[0], "SYSRQ_USER") == "nobody"
    assert int(field(theirs[0], "SYSRQ_CALLER_PID")) > 1
    for key in ("SYSRQ_TARGET", "SYSRQ_KEYS", "SYSRQ_SEQUENCE", "SYSRQ_OUTCOME"):
        mine = [e for e in entries if e["SYSRQ_VIA"] == b"root"][0]
        assert theirs[0].get(key) == mine.get(key), key


def test_a_non_member_is_refused_in_one_line_by_the_sockets_mode(setup):
    done = setup.operator_send("web1", "h", member=False)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == (
        f"sysrq-appliance: send: nobody may not send: only root and members of group "
        f"{setup.gid} may (through {setup.helper.path}); ask an admin to run 'adduser nobody "
        f"{setup.gid}', then log in again\n")
    assert setup.sink.entries() == []      # the kernel refused the connection


def test_the_helper_checks_the_callers_credentials_itself(linked_netns, tmp_path):
    """With the socket's mode loosened by mistake, SO_PEERCRED still keeps a non-member
    out: the same line, and an audit entry of the refusal."""
    setup = Setup(linked_netns, tmp_path, mode=0o666)
    try:
        stranger = setup.operator_send("web1", "h", member=False)
        member = setup.operator_send("web1", "w")
        entries = setup.sink.entries()
    finally:
        setup.close()
    assert stranger.returncode == 2 and stranger.stderr.decode().startswith(
        "sysrq-appliance: send: nobody may not send: only root and members of group")
    assert member.returncode == 2 and b"allows only" in member.stderr
    refused, masked = entries
    assert field(refused, "SYSRQ_OUTCOME") == "refused" and "SYSRQ_TARGET" not in refused
    assert field(refused, "SYSRQ_UID") == str(NOBODY)
    assert field(masked, "SYSRQ_TARGET") == "web1"


def test_a_silent_client_and_a_flood_are_refused_and_the_helper_serves_on(setup):
    silent, _ = setup.helper.raw(b"NOTHING", user=NOBODY, groups=[setup.gid])
    assert silent == [b"esysrq-appliance: request: none within 5 s; refused", b"x2"]
    flood, _ = setup.helper.raw(b"send\0" + b"x" * 100000 + b"\0", user=NOBODY,
                                groups=[setup.gid])
    assert flood == [b"esysrq-appliance: request: longer than 4096 bytes; refused", b"x2"]
    after = setup.operator_send("web1", "h")
    assert after.returncode == 1 and b"refuses to send it in plaintext" in after.stderr
    outcomes = [field(e, "SYSRQ_OUTCOME") for e in setup.sink.entries()]
    assert outcomes == ["refused", "refused", "not-sent"]


def test_a_members_h_is_confirmed_through_real_esp(linked_netns, tmp_path, esp):
    setup = Setup(linked_netns, tmp_path)
    try:
        setup.target.cli("apply", "--force", esp=True, check=True)
        setup.sender.cli("apply", esp=True, check=True)
        done = setup.operator_send("web1", "h", "--wait", "5")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.decode().startswith("confirmed: web1 accepted 'h'")
        (entry,) = setup.sink.entries()
        assert field(entry, "SYSRQ_OUTCOME") == "confirmed"
        assert field(entry, "SYSRQ_UID") == str(NOBODY)
    finally:
        setup.sender.cli("down", esp=True)
        setup.target.cli("down", esp=True)
        setup.close()


def test_one_operator_at_its_cap_is_refused_audited_and_others_are_served(setup):
    """nobody holds MAX_PER_UID silent connections; its next request is refused in one
    line (and audited), while root's request through the same helper is served."""
    from sysrq_appliance import helper
    code = ("import socket, sys\n"
            "held = [socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]\n"
            "[s.connect(sys.argv[1]) for s in held]\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n")
    assert helper.MAX_PER_UID == 3
    holder = subprocess.Popen([PYTHON, "-c", code, setup.helper.path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, user=NOBODY, group=NOBODY,
                              extra_groups=[setup.gid])
    try:
        assert holder.stdout.readline() == b"held\n"
        over, _ = setup.helper.raw(b"send\0--\0web1\0h\0", user=NOBODY, groups=[setup.gid])
        other, _ = setup.helper.raw(b"send\0--\0web1\0h\0")   # root, through the helper
    finally:
        holder.communicate(b"", timeout=30)
    assert over == [b"esysrq-appliance: send: nobody has 3 requests in hand with the "
                    b"operators' helper already (at most 3 per user); wait for them to end, "
                    b"then try again", b"x1"]
    assert other[-1] == b"x1" and b"refuses to send it in plaintext" in other[-2]
    refusal = [e for e in setup.sink.entries() if b"per user" in e["SYSRQ_DETAIL"]]
    assert [(field(e, "SYSRQ_UID"), field(e, "SYSRQ_OUTCOME")) for e in refusal] == \
        [(str(NOBODY), "refused")]


def test_a_flood_is_turned_away_line_by_line_and_others_are_served(setup):
    """nobody holds its MAX_PER_UID slots with silent connections, then floods: 30 more
    requests, never reading the answers. Each gets one line and exit 1: the first refusals
    are told (and audited) by children, at most MAX_CLIENTS at once, each holding its client
    a while; the rest get the flood's line at once, not audited. Root's request through the
    same helper is served meanwhile."""
    from sysrq_appliance import helper
    code = ("import socket, sys, time\n"
            "def connect():\n"
            "    while True:   # a full backlog refuses at once (EAGAIN): again\n"
            "        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            "        s.settimeout(60)\n"
            "        try:\n"
            "            s.connect(sys.argv[1])\n"
            "            return s\n"
            "        except BlockingIOError:\n"
            "            s.close()\n"
            "            time.sleep(0.01)\n"
            "held = [connect() for _ in range(3)]\n"
            "flood = [connect() for _ in range(30)]\n"
            "for s in flood:\n"
            "    try:\n"
            "        s.send(b'send\\0--\\0web1\\0h\\0')\n"
            "    except BrokenPipeError:   # answered (and closed) before the request\n"
            "        pass\n"
            "print('flooding', flush=True)\n"
            "sys.stdin.read()\n"
            "for s in flood:\n"
            "    answer, reset = [], False\n"
            "    while not answer or answer[-1][:1] not in (b'x', b''):\n"
            "        try:\n"
            "            answer.append(s.recv(65536))\n"
            "        except ConnectionResetError:   # once, before what is queued\n"
            "            if reset:\n"
            "                answer.append(b'')\n"
            "            reset = True\n"
            "    print(repr(answer), flush=True)\n")
    assert helper.MAX_PER_UID == 3 and helper.MAX_CLIENTS == 8
    flooder = subprocess.Popen([PYTHON, "-c", code, setup.helper.path], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, user=NOBODY, group=NOBODY,
                               extra_groups=[setup.gid])
    try:
        assert flooder.stdout.readline() == b"flooding\n"
        other, _ = setup.helper.raw(b"send\0--\0web1\0h\0")   # root, through the helper
        out, _ = flooder.communicate(b"", timeout=90)
    finally:
        flooder.kill()
    assert other[-1] == b"x1" and b"refuses to send it in plaintext" in other[-2]
    per_user = [b"esysrq-appliance: send: nobody has 3 requests in hand with the operators' "
                b"helper already (at most 3 per user); wait for them to end, then try again",
                b"x1"]
    flooded = [b"esysrq-appliance: " + helper.FLOODED.encode(), b"x1"]
    answers = [ast.literal_eval(line) for line in out.decode().splitlines()]
    assert len(answers) == 30
    assert all(answer in (per_user, flooded) for answer in answers), answers
    assert answers.count(flooded) >= 1
    refusals = [e for e in setup.sink.entries() if b"per user" in e["SYSRQ_DETAIL"]]
    assert len(refusals) == answers.count(per_user) >= 1


def test_a_journald_that_reads_nothing_costs_one_warning_not_a_hang(setup):
    """The sink's queue filled up and nobody reading it, as a stalled journald's: root's
    send and an operator's each end (warning and their own line) once audit.JOURNAL_WAIT
    has passed; once the journal reads again, the next request is audited."""
    import socket
    from sysrq_appliance import audit
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stuffing:
        stuffing.connect(str(setup.sink.dir / "socket"))
        stuffing.setblocking(False)
        filler = 0
        while True:
            try:
                stuffing.send(b"MESSAGE=stuffing\nSYSLOG_IDENTIFIER=stuffing\n")
                filler += 1
            except BlockingIOError:
                break
        warning = (f"sysrq-appliance: warning: no audit entry written (journald took nothing "
                   f"within {audit.JOURNAL_WAIT:g} s); install python3-systemd and check "
                   "journald")
        root = setup.root_send("web1", "h")
        operator = setup.operator_send("web1", "h")
    for done in (root, operator):
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 1 and lines[0] == warning, lines
        assert len(lines) == 2 and "refuses to send it in plaintext" in lines[1]
    assert filler > 0 and setup.sink.entries() == []   # reads the queue: journald is back
    after = setup.root_send("web1", "h")
    assert after.returncode == 1 and len(after.stderr.splitlines()) == 1
    assert [field(e, "SYSRQ_OUTCOME") for e in setup.sink.entries()] == ["not-sent"]

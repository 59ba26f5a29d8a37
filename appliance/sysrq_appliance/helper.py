"""The operators' helper: root's half of `send` for the members of the operators' group.

Started by systemd socket activation (sysrq-appliance-helper.socket, Accept=no): systemd
owns /run/sysrq-appliance/operators.sock, root:sysrq-operators 0660, and hands it over as
fd 3 (sd_listen_fds). Each connection is served by a child process of its own, so one
operator's slow sequence never holds up another's rescue; at most MAX_CLIENTS at once, and
at most MAX_PER_UID of one user's (one operator's retries cannot take every slot). The
refusals beyond those are told (and audited) by children too, at most MAX_CLIENTS at once;
beyond that a connection gets one line at once, not audited: a flood never holds up the
accept loop.

On every connection: the caller's credentials as the kernel recorded them at connect()
(SO_PEERCRED: pid, uid, gid; SO_PEERGROUPS: its supplementary groups) and a refusal in one
line unless it is root or holds the operators' group; then one request, read within
READ_TIMEOUT and at most MAX_REQUEST bytes (a client that never sends, or sends a flood, is
refused); then `run` (cli.operator_send: the arguments parsed as the CLI's `send` parses
them, the send, the audit entry) and its lines and exit code back. It can do nothing but
send: the request has no other verb, and its parser knows only TARGET (one or several, or
--group, --all), KEYS, --sequence, --count and --wait; each target's request is audited. The keys and passwords never leave this process.
"""

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from sysrq_appliance import audit, opsocket
from sysrq_appliance.errors import ApplianceError, InputError

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)   # Linux >= 4.13; Python lacks the name
READ_TIMEOUT = 5.0      # seconds for the request to arrive
WRITE_TIMEOUT = 10.0    # seconds for the client to take an answer line
DRAIN_SECONDS = 1.0     # at most this long reading what a refused client still sends
MAX_CLIENTS = 8
MAX_PER_UID = 3
FLOODED = (f"send: the operators' helper is turning away a flood of requests (more than "
           f"{MAX_CLIENTS} refusals at once); nothing was sent: try again in a moment "
           "(or run as root)")
_GROUPS_BUFFER = 1024   # bytes Python's getsockopt allows: 256 groups
_UCRED = struct.Struct("iII")   # struct ucred: pid_t, uid_t, gid_t


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] | None   # None: more than _GROUPS_BUFFER holds


def peer_of(conn):
    """The connecting process's credentials, as the kernel recorded them at connect()."""
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_BUFFER)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
        groups = None
    return Peer(pid, uid, gid, groups)


def allowed(peer, gid, member_of=None):
    """Root, or a process holding the operators' group (primary or supplementary). For a
    process in more groups than we can read, the group database decides (`member_of`)."""
    if peer.uid == 0 or peer.gid == gid:
        return True
    if peer.groups is not None:
        return gid in peer.groups
    return member_of is not None and member_of(peer.uid, gid)


def _member_of(uid, gid):
    import pwd
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(entry.pw_name, entry.pw_gid)


def group_id(name):
    """The operators' group: a name from the group database, or a number."""
    import grp
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise InputError(f"--group: no group {name!r}; the package creates "
                         f"{opsocket.GROUP} (addgroup --system {opsocket.GROUP})") from None


def listener_from_systemd():
    """The socket systemd passed (sd_listen_fds): one listening AF_UNIX SOCK_SEQPACKET."""
    from systemd import daemon
    fds = daemon.listen_fds()
    if len(fds) != 1 or not daemon.is_socket_unix(fds[0], socket.SOCK_SEQPACKET, 1):
        raise InputError("helper: started without its socket (systemd passes one listening "
                         "AF_UNIX SOCK_SEQPACKET socket); start sysrq-appliance-helper.socket "
                         "instead")
    return socket.socket(fileno=fds[0])


class Answer:
    """Lines and the exit code back to the client, one message each."""

    def __init__(self, conn):
        self.conn = conn

    def out(self, text):
        self._send(opsocket.STDOUT, text)

    def err(self, text):
        self._send(opsocket.STDERR, text)

    def exit(self, code):
        self.conn.send(opsocket.EXIT + str(code).encode())

    def _send(self, kind, text):
        for line in str(text).splitlines() or [""]:
            self.conn.send(kind + line.encode("utf-8", "backslashreplace"))


def serve(listener, gid, group, path, run, max_clients=MAX_CLIENTS, max_per_uid=MAX_PER_UID):
    """Accept connections until interrupted. Each is handled by a child (handle), and so is
    each busy refusal (_refuse_busy): its audit entry and its client may each take a while,
    and must not hold up the next operator's connection. With max_clients refusals already
    being told, a connection gets the flood's line at once (_turn_away), not audited."""
    serving = {}    # pid -> the uid it serves
    refusing = {}   # pid -> the uid it turns away
    try:
        while True:
            _reap(serving)
            _reap(refusing)
            readable, _, _ = select.select([listener], [], [], 1.0)   # reap once a second
            if not readable:
                continue
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            peer = peer_of(conn)
            line = busy(list(serving.values()), peer.uid, max_clients, max_per_uid)
            if line is None:
                serving[_forked(listener, conn, handle, conn, gid, group, path, run)] = peer.uid
            elif len(refusing) < max_clients:
                refusing[_forked(listener, conn, _refuse_busy, conn, peer, line)] = peer.uid
            else:
                _turn_away(conn)
    except KeyboardInterrupt:   # SIGTERM from systemd (cli.main turns it into this)
        return


def _forked(listener, conn, work, *args):
    """work(*args) in a child of its own, which serves `conn` only; the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            work(*args)
            code = 0
        finally:
            os._exit(code)
    conn.close()
    return pid


def busy(serving, uid, max_clients, max_per_uid):
    """Why a new connection of `uid` must wait, with `serving` the uids of the requests in
    hand (pure): the refusal's line, or None."""
    if len(serving) >= max_clients:
        return (f"send: the operators' helper is serving {max_clients} requests already; "
                "try again in a moment (or run as root)")
    if serving.count(uid) >= max_per_uid:
        return (f"send: {audit.user_name(uid)} has {max_per_uid} requests in hand with the "
                f"operators' helper already (at most {max_per_uid} per user); wait for them "
                "to end, then try again")
    return None


def _reap(children):
    for pid in list(children):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            del children[pid]


def _refuse_busy(conn, peer, line):
    """One line and exit 1, audited (who was turned away, and why; audit.JOURNAL_WAIT
    bounds the entry)."""
    with conn:
        conn.settimeout(1.0)
        answer = Answer(conn)
        caller = audit.Caller(peer.uid, audit.user_name(peer.uid), "helper", peer.pid)
        audit.Trail(caller, None, None, None, warn=lambda text: None).failed(
            ApplianceError(line), refused=True)
        try:
            answer.err(f"sysrq-appliance: {line}")
            answer.exit(1)
        except OSError:
            return
        _drain(conn)   # as for a non-member: the client reads the line before we close


def _turn_away(conn):
    """The flood's line and exit 1, told without waiting for anything: the request the client
    sent is read first (closing on unread data makes the client's next read fail once
    before its answer), a few messages at most, and what does not fit at once is dropped."""
    with conn:
        conn.setblocking(False)
        try:
            for _ in range(4):   # one request is all a client sends
                if not conn.recv(opsocket.MAX_REQUEST + 1):
                    break
        except OSError:
            pass
        _finish(Answer(conn), f"sysrq-appliance: {FLOODED}", 1)


def handle(conn, gid, group, path, run):
    """One connection: credentials, one bounded request, the send, the answer."""
    with conn:
        conn.settimeout(READ_TIMEOUT)
        answer = Answer(conn)
        peer = peer_of(conn)
        caller = audit.Caller(peer.uid, audit.user_name(peer.uid), "helper", peer.pid)
        member = allowed(peer, gid, _member_of)
        try:
            if not member:
                raise InputError(opsocket.not_a_member(caller.user, group, path))
            argv = _read_request(conn)
        except InputError as exc:
            audit.Trail(caller, None, None, None, warn=answer.err).failed(exc, refused=True)
            _finish(answer, f"sysrq-appliance: {exc}", 2)
            if not member:   # let the client read the answer before its request is dropped
                _drain(conn)
            return
        if argv is None:   # the client left without asking anything
            return
        conn.settimeout(WRITE_TIMEOUT)
        try:
            answer.exit(run(argv, caller, answer.out, answer.err))
        except OSError:    # the client went away (^C): nothing more to tell it
            return


def _drain(conn, seconds=DRAIN_SECONDS):
    """Read (and drop) what the client sent until it closes, for at most `seconds` in all:
    closing a socket with unread data would reset the connection before the client has read
    our answer, and a client trickling data must not hold a slot."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(opsocket.MAX_REQUEST + 1):
                return
    except OSError:
        pass


def _read_request(conn):
    try:
        data, _, flags, _ = conn.recvmsg(opsocket.MAX_REQUEST + 1)
    except TimeoutError:
        raise InputError(f"request: none within {READ_TIMEOUT:g} s; refused") from None
    if not data and not flags & socket.MSG_TRUNC:
        return None
    return opsocket.decode_request(data)


def _finish(answer, line, code):
    try:
        answer.err(line)
        answer.exit(code)
    except OSError:
        pass


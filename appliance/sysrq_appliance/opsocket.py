"""The operators' socket: how `send` run by a non-root operator reaches the root helper.

A non-root user can neither read the keys and passwords nor require IPsec on a socket
(IP_XFRM_POLICY needs CAP_NET_ADMIN), so `send` hands its arguments to the helper
(helper.py), which runs as root, and prints what comes back. One request per connection,
on an AF_UNIX SOCK_SEQPACKET socket (every message arrives whole or not at all):

    request   b"send\\0" + each argument of `send` + b"\\0"     one message, at most 4096 bytes
    answers   b"o" + a line for stdout, b"e" + a line for stderr (UTF-8, no newline),
              then b"x" + the exit code

The arguments are those of `sysrq-appliance send` (TARGET or --group NAME or --all, KEYS
or --sequence, --count, --wait), parsed by the helper with the same definitions and messages
as the CLI's own.

The client waits for the exit code at most `answer_deadline` seconds: a helper that accepts
and never answers costs the operator one line and exit 1, never a hang.
"""

import errno
import grp
import os
import socket
import time

from sysrq_appliance import lock, sequences
from sysrq_appliance.errors import ApplianceError, InputError, excerpt

DEFAULT_PATH = "/run/sysrq-appliance/operators.sock"
GROUP = "sysrq-operators"
VERB = "send"
MAX_REQUEST = 4096      # bytes of one request: the longest useful one is far shorter
MAX_ANSWER = 65536      # bytes of one answer message (a line)
STDOUT, STDERR, EXIT = b"o", b"e", b"x"
# Seconds beyond the sends' own waits: the helper's start, reading the config and keys,
# and a sequence-number lock another send may hold (lock.WRITER_WAIT at most).
ANSWER_MARGIN = lock.WRITER_WAIT + 30.0
CONNECT_WAIT = 30.0     # seconds to get into a helper whose queue is full


def operator_argv(target, keys, sequence, count, wait, group=None, everyone=False):
    """`send`'s arguments as the helper parses them (options first, `=` forms, positionals
    after `--`: a value starting with '-' cannot be taken for an option). TARGET is None
    with --group NAME or --all."""
    argv = [f"--count={count}", f"--wait={wait:g}"]
    if sequence is not None:
        argv.append(f"--sequence={sequence}")
    if group is not None:
        argv.append(f"--group={group}")
    if everyone:
        argv.append("--all")
    return argv + ["--"] + [a for a in (target, keys) if a is not None]


def answer_deadline(wait, sequence):
    """Seconds the client gives the helper to finish a send (pure). Keys: one --wait. A
    sequence: the longest one a config may define (its steps live in root's config, which
    the operator cannot read), each step a --wait and a lock wait; cutting a real sequence
    short would stop it half-way (the helper sends nothing after its client left)."""
    if sequence is None:
        return wait + ANSWER_MARGIN
    return (sequences.MAX_STEPS * (wait + lock.WRITER_WAIT) + sequences.MAX_TOTAL_WAIT
            + ANSWER_MARGIN)


def encode_request(argv):
    data = b"".join(os.fsencode(a) + b"\0" for a in [VERB, *argv])
    if len(data) > MAX_REQUEST:
        raise InputError(f"send: the arguments are longer than {MAX_REQUEST} bytes; "
                         "shorten them")
    return data


def decode_request(data):
    """The arguments of one request message, or InputError naming what is wrong."""
    if len(data) > MAX_REQUEST:
        raise InputError(f"request: longer than {MAX_REQUEST} bytes; refused")
    if not data.endswith(b"\0"):
        raise InputError("request: not NUL-terminated arguments; refused")
    verb, *argv = data[:-1].split(b"\0")
    if verb != VERB.encode():
        raise InputError(f"request: the helper only sends; {excerpt(verb)} refused")
    return [os.fsdecode(a) for a in argv]


def group_of(path):
    """The name of the group the socket file belongs to (the operators' group)."""
    gid = os.stat(path).st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def not_a_member(user, group, path):
    """The one line a user outside the operators' group gets, from the CLI or the helper."""
    return (f"send: {user} may not send: only root and members of group {group} may (through "
            f"{path}); ask an admin to run 'adduser {user} {group}', then log in again")


def not_listening(path, why):
    return ApplianceError(f"send: not root, and the operators' helper is not listening on {path} "
                          f"({why}); run as root, or have an admin run 'systemctl enable --now "
                          "sysrq-appliance-helper.socket'")


def no_answer(path, seconds):
    return ApplianceError(f"send: the operators' helper on {path} did not answer within "
                          f"{seconds:g} s; whether anything was sent is unknown: see "
                          "'journalctl -u sysrq-appliance-helper'")


def busy(path, seconds):
    return ApplianceError(f"send: the operators' helper on {path} took no new request within "
                          f"{seconds:g} s (its queue is full: other requests are being served); "
                          "nothing was sent: try again in a moment")


def _connect(path, user, seconds):
    """A socket connected to the helper. With its queue full, an AF_UNIX connect() fails at
    once (EAGAIN) instead of waiting: try again until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(seconds)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
        if not isinstance(failure, BlockingIOError) or time.monotonic() >= deadline:
            raise _connect_failed(failure, path, user, seconds) from None
        time.sleep(0.05)


def _connect_failed(exc, path, user, seconds):
    """The one-line error for a connect() that failed with `exc` (itself if unforeseen)."""
    if isinstance(exc, (BlockingIOError, TimeoutError)):
        return busy(path, seconds)
    if isinstance(exc, PermissionError):
        return InputError(not_a_member(user, group_of(path), path))
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOTDIR,
                     errno.EPROTOTYPE):
        return not_listening(path, exc.strerror)
    return exc


def request(path, argv, out, err, user, seconds):
    """Send one request to the helper at `path`; print its lines through `out`/`err`;
    return its exit code. The helper has `seconds` in all (answer_deadline)."""
    data = encode_request(argv)
    deadline = time.monotonic() + seconds
    with _connect(path, user, min(seconds, CONNECT_WAIT)) as sock:
        sock.settimeout(seconds)
        try:
            sock.send(data)
        except TimeoutError:
            raise no_answer(path, seconds) from None
        except ConnectionError:   # it answered (and closed) before the request arrived
            pass
        reset = False
        while True:
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                message = sock.recv(MAX_ANSWER)
            except TimeoutError:
                raise no_answer(path, seconds) from None
            except ConnectionResetError:
                # It closed on unread data: the kernel says so first, then gives the answer
                # that is queued, if any.
                if not reset:
                    reset = True
                    continue
                message = b""
            kind, text = message[:1], message[1:].decode("utf-8", "replace")
            if kind == STDOUT:
                out(text)
            elif kind == STDERR:
                err(text)
            elif kind == EXIT and text.isdigit():
                return int(text)
            else:
                raise ApplianceError("send: the operators' helper ended without an answer; "
                                     "see 'journalctl -u sysrq-appliance-helper'")

"""The audit trail: one structured journal entry per send request, on the admin host.

Who asked (uid and user name, and whether as root or through the operators' helper), from
which admin host, to which target, which keys or sequence, the sequence number and the
outcome. Queried with `journalctl _UID=0 SYSLOG_IDENTIFIER=sysrq-appliance-audit` (or
`-t`), and by field: `journalctl _UID=0 -t sysrq-appliance-audit SYSRQ_TARGET=web1`. Match
_UID=0 (journald's own, trusted field): any user can log with our identifier.

Never a secret: the fields are built here from names, numbers and the one-line messages the
CLI prints, none of which ever holds a key or a password. The entry goes through
python3-systemd (libsystemd's sd_journal_send); on a host without journald libsystemd drops
it silently. A journald that reads nothing holds an entry up at most JOURNAL_WAIT seconds
(`bounded`), and then the caller gets one warning line: a send is never held up for long by
its audit entry.
"""

import errno
import os
import pwd
import signal
import socket
import threading
import uuid
from dataclasses import dataclass

IDENTIFIER = "sysrq-appliance-audit"
# One id for every audit entry: `journalctl MESSAGE_ID=...` finds them whatever the identifier.
MESSAGE_ID = uuid.UUID("5f1e2a7c-9b3d-4c8e-a6f0-3d2b1c0e9a57")
PRIORITY_NOTICE, PRIORITY_WARNING = 5, 4
OUTCOMES = ("confirmed", "sent", "not-confirmed", "not-sent", "refused")
VALUE_LIMIT = 200   # characters of one field: a hostile argument is named, never dumped
JOURNAL_WAIT = 5.0  # seconds journald has to take one entry (a live one takes it at once)


@dataclass(frozen=True)
class Caller:
    """Who asked for a send: the uid and name, `via` root (ran send itself) or helper."""

    uid: int
    user: str
    via: str
    pid: int | None = None

    @classmethod
    def this_process(cls):
        return cls(os.getuid(), user_name(os.getuid()), "root", os.getpid())


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:   # a uid without a passwd entry (a container, a deleted account)
        return str(uid)


@dataclass(frozen=True)
class Entry:
    caller: Caller
    admin_host: str
    admin_address: str | None     # this host's tunnel address (unknown before the config)
    target: str                   # as asked (a peer name or address)
    target_address: str | None
    keys: str | None              # the keys of this request
    sequence: str | None          # the sequence it is a step of, if any
    seqno: int | None
    outcome: str                  # one of OUTCOMES
    detail: str                   # the line the caller saw


def clean(value):
    """A field value: printable, one line, bounded; anything else quoted and cut."""
    text = str(value)
    if text.isprintable() and len(text) <= VALUE_LIMIT:
        return text
    shown = repr(text)
    return shown if len(shown) <= VALUE_LIMIT else shown[:VALUE_LIMIT - 3] + "..."


def message(entry):
    """The entry's one-line MESSAGE."""
    what = (f"sequence {entry.sequence!r} step {entry.keys!r}" if entry.sequence and entry.keys
            else f"sequence {entry.sequence!r}" if entry.sequence
            else f"keys {entry.keys!r}" if entry.keys else "send")
    number = f" seqno {entry.seqno}" if entry.seqno is not None else ""
    return clean(f"{entry.caller.user} (uid {entry.caller.uid}, {entry.caller.via}): {what} "
                 f"to {entry.target}{number}: {entry.outcome}")


def fields(entry):
    """The journal fields of `entry` (pure): MESSAGE, the syslog identifier, and SYSRQ_*."""
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"audit: unknown outcome {entry.outcome!r}")
    values = {
        "MESSAGE": message(entry),
        "MESSAGE_ID": MESSAGE_ID.hex,
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "PRIORITY": PRIORITY_NOTICE if entry.outcome in ("confirmed", "sent") else PRIORITY_WARNING,
        "SYSRQ_UID": entry.caller.uid,
        "SYSRQ_USER": entry.caller.user,
        "SYSRQ_VIA": entry.caller.via,
        "SYSRQ_CALLER_PID": entry.caller.pid,
        "SYSRQ_ADMIN_HOST": entry.admin_host,
        "SYSRQ_ADMIN_ADDRESS": entry.admin_address,
        "SYSRQ_TARGET": entry.target,
        "SYSRQ_TARGET_ADDRESS": entry.target_address,
        "SYSRQ_KEYS": entry.keys,
        "SYSRQ_SEQUENCE": entry.sequence,
        "SYSRQ_SEQNO": entry.seqno,
        "SYSRQ_OUTCOME": entry.outcome,
        "SYSRQ_DETAIL": entry.detail,
    }
    return {name: clean(value) for name, value in values.items() if value not in (None, "")}


def write(entry):
    """Send `entry` to the journal (one datagram to journald's socket), within JOURNAL_WAIT."""
    from systemd import journal   # python3-systemd; libsystemd drops it when there is no journald
    values = fields(entry)
    bounded(lambda: journal.send(values.pop("MESSAGE"), **values), JOURNAL_WAIT)


def bounded(call, seconds):
    """call(), its blocking system call interrupted after `seconds` (TimeoutError then).

    Why an alarm: libsystemd sends on a blocking socket, so its sendmsg() waits for as long
    as journald reads nothing and its socket's queue is full, and python3-systemd offers no
    timeout. SIGALRM (a handler that does nothing) interrupts that one call; libsystemd
    returns EINTR as an error, which python3-systemd raises as InterruptedError. A live
    journald takes the entry at once, so it is always written then. Sending the datagram
    ourselves, non-blocking, would mean re-implementing journald's native protocol. Signals
    reach only the main thread: elsewhere call() runs unbounded."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    previous = signal.signal(signal.SIGALRM, _wake)
    # Repeating: an alarm that rang before the call blocked would interrupt nothing.
    signal.setitimer(signal.ITIMER_REAL, seconds, min(seconds, 0.1))
    try:
        return call()
    except InterruptedError:
        raise TimeoutError(errno.ETIMEDOUT, f"journald took nothing within {seconds:g} s") \
            from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _wake(signum, frame):
    """SIGALRM: only interrupts the blocked system call (bounded)."""


class Trail:
    """The audit entries of one `send` command: one per request, or one for a refusal.

    `request` is given to sending.send as its audit callback; `failed` is called with the
    exception that ended the command, and writes an entry unless a request's entry already
    told it. If the journal cannot be written, `warn` gets one line and the send goes on."""

    def __init__(self, caller, target, keys, sequence, warn, writer=write, host=None):
        self.caller, self.target, self.keys, self.sequence = caller, target, keys, sequence
        self.warn, self.writer = warn, writer
        self.host = host or socket.gethostname()
        self.admin_address = self.target_address = None
        self.told = None   # the detail of the last entry that ended in not-sent

    def config(self, cfg, peer_address=None):
        self.admin_address, self.target_address = cfg.local, peer_address

    def request(self, sent):
        """One request's fate (sending.Sent); to several targets, each names its own."""
        self.told = sent.detail if sent.outcome == "not-sent" else None
        self._write(sent.keys, sent.seqno, sent.outcome, sent.detail,
                    getattr(sent, "target", None), getattr(sent, "address", None))

    def failed(self, exc, refused):
        """The command ended on `exc`: refused (bad input) or not sent."""
        if self.told is not None and self.told == str(exc):
            return
        self._write(self.keys, None, "refused" if refused else "not-sent", str(exc))

    def _write(self, keys, seqno, outcome, detail, target=None, target_address=None):
        entry = Entry(self.caller, self.host, self.admin_address, target or self.target,
                      target_address or self.target_address, keys, self.sequence, seqno,
                      outcome, detail)
        try:
            self.writer(entry)
        except (ImportError, OSError) as exc:   # a rescue never waits on its audit entry
            self.warn(f"sysrq-appliance: warning: no audit entry written "
                      f"({getattr(exc, 'strerror', None) or exc}); install python3-systemd and "
                      "check journald")

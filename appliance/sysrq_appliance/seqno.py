"""The sender's per-target sequence numbers, kept so every request is newer than the last.

seqno = max(now + CLOCK_ALLOWANCE, last + 1): two sends in one second both work, a clock
stepped backwards does not lock the sender out until it catches up, and a sender whose clock
runs a little behind the target's still gets through right after the target loaded xt_SYSRQ
(the module starts from its own clock's epoch seconds and wants strictly more).
"""

import fcntl
import os
import re

from sysrq_appliance.secretfile import write_secret

DEFAULT_STATE_DIR = "/var/lib/sysrq-appliance"
CLOCK_ALLOWANCE = 10   # seconds a sender's clock may lag the target's


def _path(state_dir, target):
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", target)
    return os.path.join(state_dir, f"seqno.{safe}")


def next_seqno(now, last):
    return max(int(now) + CLOCK_ALLOWANCE, last + 1)


def read_last(state_dir, target):
    try:
        with open(_path(state_dir, target), encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        return 0  # a damaged file: fall back to the clock, which is always valid when sane


def _locked(state_dir, update):
    """Run update(last) -> new under an exclusive lock; store and return new."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, ".seqno.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return update()
    finally:
        os.close(fd)


def _store(state_dir, target, seqno):
    write_secret(_path(state_dir, target), f"{seqno}\n".encode("ascii"))
    return seqno


def reserve(state_dir, target, now):
    """Take the next seqno for `target` and record it before anything is sent.

    The lock makes two concurrent senders get different numbers.
    """
    return _locked(state_dir, lambda: _store(
        state_dir, target, next_seqno(now, read_last(state_dir, target))))


def record(state_dir, target, seqno):
    """Remember an explicitly chosen seqno, so that later sends stay above it."""
    return _locked(state_dir, lambda: _store(
        state_dir, target, max(seqno, read_last(state_dir, target))))

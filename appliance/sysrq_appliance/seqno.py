"""The sender's per-target sequence numbers, kept so every request is newer than the last.

seqno = max(now + CLOCK_ALLOWANCE, last + 1): two sends in one second both work, a clock
stepped backwards does not lock the sender out until it catches up, and a sender whose clock
runs a little behind the target's still gets through right after the target loaded xt_SYSRQ
(the module starts from its own clock's epoch seconds and wants strictly more).

xt_SYSRQ keeps the number in a signed 64-bit long and parses digits without an overflow
check: anything above LIMIT wraps and is never accepted again, so no number we send or
remember may pass it (MAX_CHOSEN leaves room for later sends above a chosen one).
"""

import errno
import os
import re
import sys

from sysrq_appliance import lock, wire
from sysrq_appliance.errors import ApplianceError, InputError
from sysrq_appliance.secretfile import read_small, write_secret, write_secrets

DEFAULT_STATE_DIR = "/var/lib/sysrq-appliance"
CLOCK_ALLOWANCE = 10   # seconds a sender's clock may lag the target's
LIMIT = wire.MAX_SEQNO
MAX_CHOSEN = LIMIT - 2**32


def _path(state_dir, target):
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", target)
    return os.path.join(state_dir, f"seqno.{safe}")


def check_chosen(seqno):
    """A --seqno the operator picked; InputError if xt_SYSRQ could not work with it."""
    if not 1 <= seqno <= MAX_CHOSEN:
        raise InputError(f"--seqno: {seqno} is out of range; use 1 to {MAX_CHOSEN} "
                         "(xt_SYSRQ compares it as a signed 64-bit number, and later sends "
                         "need room above it)")
    return seqno


def next_seqno(now, last):
    number = max(int(now) + CLOCK_ALLOWANCE, last + 1)
    if number > LIMIT:
        raise ApplianceError(f"sequence number {number} is beyond what xt_SYSRQ accepts")
    return number


def read_last(state_dir, target):
    """The last number used for `target`; 0 when unknown. A damaged file falls back to the
    clock (always above what the target accepted, unless numbers were chosen by hand)."""
    path = _path(state_dir, target)
    try:
        text = read_small(path, 32, follow=False)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ELOOP):   # not a regular file: damaged
            raise InputError(f"--state-dir: cannot read {path}: {exc.strerror}") from None
        text = b""
    if re.fullmatch(rb"[0-9]{1,19}\n?", text) and int(text) <= LIMIT:
        return int(text)
    print(f"warning: {path} is damaged; the next sequence number comes from the clock",
          file=sys.stderr)
    return 0


def _store(state_dir, target, seqno):
    write_secret(_path(state_dir, target), f"{seqno}\n".encode("ascii"))
    return seqno


def reserve(state_dir, target, now):
    """Take the next seqno for `target` and record it before anything is sent.

    The lock makes two concurrent senders get different numbers.
    """
    with lock.held(state_dir, f"send to {target}", name=lock.SEQNO):
        return _store(state_dir, target, next_seqno(now, read_last(state_dir, target)))


def record(state_dir, target, seqno):
    """Remember an explicitly chosen seqno, so that later sends stay above it."""
    check_chosen(seqno)
    with lock.held(state_dir, f"send to {target}", name=lock.SEQNO):
        return _store(state_dir, target, max(seqno, read_last(state_dir, target)))


def reserve_many(state_dir, targets, now, fixed=None):
    """reserve() (or, with `fixed`, record()) for several targets under one hold of the
    lock, their files written together: {target: seqno}."""
    if fixed is not None:
        check_chosen(fixed)
    with lock.held(state_dir, f"send to {len(targets)} targets", name=lock.SEQNO):
        numbers, stores = {}, {}
        for target in targets:
            last = read_last(state_dir, target)
            if fixed is None:
                numbers[target] = stores[target] = next_seqno(now, last)
            else:
                numbers[target] = fixed
                if fixed > last:
                    stores[target] = fixed
        write_secrets({_path(state_dir, target): f"{number}\n".encode("ascii")
                       for target, number in stores.items()}, field="--state-dir")
        return numbers

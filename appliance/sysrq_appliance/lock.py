"""The one lock helper: who may change our state at a time, and who is waiting for whom.

Every writer of secrets or kernel state (apply, down, password set/rotate) holds the
state lock exclusively; read-only verbs (status, plan) hold it shared, so they never see
half a change. A process that cannot get it within its wait says who holds it. The
sender's sequence numbers have a lock file of their own, so an urgent `send` is never
stuck behind a long `apply`.
"""

import contextlib
import fcntl
import os
import stat
import time

from sysrq_appliance.errors import ApplianceError, InputError
from sysrq_appliance.secretfile import ensure_private_dir

STATE = ".lock"
SEQNO = ".seqno.lock"
WRITER_WAIT = 60.0      # seconds: the re-apply timer and an admin may meet
READER_WAIT = 10.0


@contextlib.contextmanager
def held(state_dir, purpose, name=STATE, shared=False, wait=None, field="--state-dir"):
    """Hold `state_dir`/`name`; `purpose` (e.g. "apply") is what a waiter is told.

    A reader of a state directory that does not exist yet has nothing to wait for, and
    creates nothing."""
    wait = (READER_WAIT if shared else WRITER_WAIT) if wait is None else wait
    if shared and not os.path.lexists(state_dir):
        yield
        return
    ensure_private_dir(state_dir, field)
    path = os.path.join(state_dir, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InputError(f"{field}: cannot use the lock file {path}: {exc.strerror}") \
            from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{field}: the lock file {path} is not a regular file; remove it")
    try:
        _acquire(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, wait, path)
        if not shared:   # readers leave the last writer's name for whoever waits next
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {purpose}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _acquire(fd, operation, wait, path):
    if not wait_for(fd, operation, wait):
        raise ApplianceError(f"{path} is held by {_holder(fd)} for more than "
                             f"{wait:g} s; try again when it has finished")


def wait_for(fd, operation, wait):
    """flock(fd, operation) within `wait` seconds: True once held, False if it was not.
    Polls, because a blocking flock cannot time out. Every lock of ours is taken here
    (the state lock, the sender's sequence lock, the xtables lock of the legacy backend)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _holder(fd):
    """'pid 123 (apply)' as the last writer left it, if that process still runs."""
    try:
        pid, purpose = os.pread(fd, 200, 0).decode("ascii").split(None, 1)
        if os.path.exists(f"/proc/{int(pid)}"):
            return f"pid {int(pid)} ({purpose.strip()})"
    except (ValueError, UnicodeDecodeError, OSError):
        pass
    return "another sysrq-appliance"

"""The SysRq password: generate, validate, store, and hand to the kernel with `echo -n` semantics."""

import errno
import os
import secrets
import stat
import string

from sysrq_appliance.errors import ApplianceError, InputError
from sysrq_appliance.secretfile import (check_private_dir, check_secret_file, open_regular,
                                        read_secret, read_small, write_secret, write_value)

MAX_BYTES = 63            # the module keeps a 64-byte buffer with its NUL; longer -> ENOSPC
DEFAULT_LENGTH = 32
# No comma (the request's separator), no newline (the kernel cuts there), no quotes.
ALPHABET = string.ascii_letters + string.digits + "-_.+=:@%^*"
SYSFS_PARAMETERS = "/sys/module/xt_SYSRQ/parameters"


def generate(length=DEFAULT_LENGTH):
    if not 1 <= length <= MAX_BYTES:
        raise InputError(f"--length: {length} is out of range; use 1 to {MAX_BYTES}")
    return "".join(secrets.choice(ALPHABET) for _ in range(length)).encode()


def validate(password, source):
    """Return the password bytes or raise InputError naming what is wrong (never the value)."""
    if not password:
        raise InputError(f"{source}: the password is empty; give 1 to {MAX_BYTES} bytes")
    if len(password) > MAX_BYTES:
        raise InputError(f"{source}: the password has more than {MAX_BYTES} bytes; "
                         f"xt_SYSRQ keeps at most {MAX_BYTES}")
    for byte, name in ((b"\n", "a newline"), (b"\0", "a NUL byte"), (b",", "a comma"),
                       (b"\r", "a carriage return")):
        if byte in password:
            raise InputError(f"{source}: the password contains {name}; "
                             "remove it (a trailing newline too: use printf '%s' or echo -n)")
    return password


def load(path, field, owner=None):
    return validate(read_secret(path, field, owner), field)


def read_new(path):
    """A new password from a file the operator names: a regular file, read without
    blocking (a FIFO never hangs us) and never more than one byte past the limit."""
    try:
        fd, st = open_regular(path)
    except OSError as exc:
        raise InputError(f"--file: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"--file: {path} is not a regular file; give a file (or use stdin)")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return validate(data, f"--file {path}")


def check_destination(path):
    """Refuse, before anything changes, a place `store` would refuse to write: a directory
    that is not private, or an existing file that is not a proper secret."""
    directory = os.path.dirname(path)
    if os.path.lexists(directory):
        check_private_dir(directory, path)
    if os.path.lexists(path):
        check_secret_file(path, path)


def store(path, password):
    write_secret(path, validate(password, path))


def module_loaded(sysfs_dir=SYSFS_PARAMETERS):
    return os.path.isdir(sysfs_dir)


def read_kernel_password(sysfs_dir=SYSFS_PARAMETERS):
    # sysfs prints a newline after the string
    return read_small(os.path.join(sysfs_dir, "password"), 4096).rstrip(b"\n")


def write_kernel_password(password, sysfs_dir=SYSFS_PARAMETERS):
    """One write() of the exact bytes, no newline, then read back and compare."""
    path = os.path.join(sysfs_dir, "password")
    try:
        written = write_value(path, password)   # as the shell's `echo -n >` opens it
    except OSError as exc:
        hint = " (longer than the module accepts)" if exc.errno == errno.ENOSPC else ""
        raise ApplianceError(f"cannot write {path}: {exc.strerror}{hint}") from None
    if written != len(password) or read_kernel_password(sysfs_dir) != password:
        raise ApplianceError(f"{path}: read-back differs from what was written; "
                             "the kernel did not take the password")


def kernel_password_matches(password, sysfs_dir=SYSFS_PARAMETERS):
    return secrets.compare_digest(read_kernel_password(sysfs_dir), password)


def activate(path, new, sysfs_dir=SYSFS_PARAMETERS):
    """Store `new` in `path` and, if xt_SYSRQ is loaded, hand it to the kernel.

    All or nothing: if the kernel refuses, the old file comes back. Returns True if the
    kernel has it now.
    """
    old = read_secret(path, path) if os.path.lexists(path) else None
    store(path, new)
    if not module_loaded(sysfs_dir):
        return False
    try:
        write_kernel_password(new, sysfs_dir)
    except ApplianceError:
        if old is None:
            os.unlink(path)
        else:
            write_secret(path, old)
        raise
    return True

"""Root-only secret files: 0600 files in a 0700 directory, written atomically.

Nothing here ever puts a secret's content into an exception message.
"""

import os
import stat

from sysrq_appliance.errors import InputError

FILE_MODE = 0o600
DIR_MODE = 0o700


def check_secret_file(path, field, owner=0):
    """Refuse a secret file that is missing, not regular, not owned by `owner` or not 0600."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InputError(f"{field}: {path} does not exist; create it "
                         "(sysrq-appliance pair or password set)") from None
    except OSError as exc:
        raise InputError(f"{field}: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{field}: {path} is not a regular file; replace it with one")
    if st.st_uid != owner:
        raise InputError(f"{field}: {path} is owned by uid {st.st_uid}; "
                         f"run: chown {owner}:{owner} {path}")
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        raise InputError(f"{field}: {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                         f"run: chmod 0600 {path}")


def read_secret(path, field, owner=0):
    """Return the bytes of a checked secret file."""
    check_secret_file(path, field, owner)
    with open(path, "rb") as f:
        return f.read()


def ensure_private_dir(path):
    """Create `path` (and parents) as 0700 if missing; tighten an existing one to 0700."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def write_secret(path, data, private_dir=True):
    """Atomically replace `path` with `data`: O_EXCL temp file 0600 -> fsync -> rename.

    Readers see either the old or the new content, never a partial or world-readable file.
    The directory is made 0700 too, unless `private_dir` is False (a shared one such as
    /etc/modprobe.d).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if private_dir:
        ensure_private_dir(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

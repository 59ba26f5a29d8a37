"""Files we trust: root-only secrets in private directories, and the config we read.

- A secret is a regular 0600 file owned by us, read without following a symlink and
  without blocking (a FIFO never hangs us), bounded in size.
- Every directory on the way to a secret or a config must be owned by root (or us) and
  writable by nobody else: a 1777 or 0777 directory lets another user swap the file.
- We create private directories 0700 and never change the mode or owner of a directory we
  did not just create: an existing one must already be ours, 0700 and not a symlink.
- Writes are atomic (O_EXCL temp file, fsync, rename) relative to a directory descriptor,
  so nothing we write follows a symlink.

Nothing here ever puts a secret's content into an exception message.
"""

import errno
import os
import re
import secrets
import stat

from sysrq_appliance.errors import InputError

FILE_MODE = 0o600
DIR_MODE = 0o700
MAX_SECRET_BYTES = 64 * 1024     # key files and passwords are a few hundred bytes
_UNSAFE_DIR_BITS = stat.S_IWGRP | stat.S_IWOTH
_SPACE = re.compile(r"\s")     # what str.isspace() calls a space, Unicode ones included


def _owners():
    """Who may own a directory on a trusted path: root, and whoever runs us."""
    return {0, os.geteuid()}


def check_path_text(path, field, example="/etc/sysrq-appliance/password"):
    """A path we may name in messages and hand to the kernel: absolute, printable, bounded
    (`example`: a path of the kind asked for, for the message)."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 4096 \
            or not path.isprintable() or _SPACE.search(path):
        raise InputError(f"{field}: not an absolute path without spaces or control "
                         f"characters; give e.g. {example}")
    return path


def check_ancestors(path, field, trusted=None):
    """Refuse a path whose directories someone other than root (or us) could change.

    `trusted`: the TrustedDirs of a pass over many files (a config's secrets), so that each
    directory is checked once in that pass, not once per file in it."""
    (trusted or TrustedDirs()).check(path, field)


class TrustedDirs:
    """The directories found safe so far in one pass over many files, and where they
    resolve to. Safe stays safe for the pass: only root (or we) can change a directory
    that root (or we) own and nobody else may write. A new pass makes a new one, so a
    directory changed between two runs is checked again."""

    def __init__(self):
        self._safe = set()
        self._resolved = {}

    def check(self, path, field):
        """Every directory on the way to `path`, as written and as resolved (symlinks)."""
        for form in (os.path.abspath(path), self.realpath(path)):
            directory, passed = os.path.dirname(form), []
            while directory not in self._safe:
                if _check_ancestor(directory, field):
                    passed.append(directory)
                if directory == "/":
                    break
                directory = os.path.dirname(directory)
            # Safe only once everything above passed too: a walk stopped by an unsafe
            # parent must not leave its children trusted for the rest of the pass.
            self._safe.update(passed)

    def realpath(self, path):
        """os.path.realpath(path), resolving each directory once per pass."""
        directory, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        if directory not in self._resolved:
            self._resolved[directory] = os.path.realpath(directory)
        resolved = os.path.join(self._resolved[directory], name)
        return os.path.realpath(resolved) if os.path.islink(resolved) else resolved


def _check_ancestor(directory, field):
    """True if `directory` is safe, False if it is missing; InputError if it is unsafe."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return False   # the file's own check says it is missing
    except OSError as exc:
        raise InputError(f"{field}: cannot check directory {directory}: {exc.strerror}") \
            from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{field}: {directory} is not a directory")
    if st.st_uid not in _owners():
        raise InputError(f"{field}: directory {directory} is owned by uid {st.st_uid}, so "
                         f"that user can replace the file; run: chown root: {directory}")
    if st.st_mode & _UNSAFE_DIR_BITS:
        raise InputError(f"{field}: directory {directory} has mode "
                         f"{stat.S_IMODE(st.st_mode):04o}, so other users can replace the "
                         f"file; run: chmod go-w {directory} (or keep the file elsewhere)")
    return True


def open_regular(path, follow=True):
    """Open `path` read-only without blocking (a FIFO must not hang us): (fd, fstat).

    The caller checks the type: the fd is of whatever is there."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
                 | (0 if follow else os.O_NOFOLLOW))
    return fd, os.fstat(fd)


def read_small(path, limit=4096, follow=True):
    """The bytes of a small regular file (a sysfs or procfs value, one of our state files):
    never blocks on a FIFO, never reads more than `limit`. OSError if it cannot."""
    fd, st = open_regular(path, follow)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return f.read(limit)


def write_value(path, data):
    """One write() of `data` into an existing kernel file (a sysfs parameter, a sysctl), as
    `echo -n data > path` does — but never into a FIFO (no hang) or through a symlink.
    Returns the count written; OSError if it cannot."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
                 | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.write(fd, data)
    finally:
        os.close(fd)


def read_bounded(fd, limit, where):
    """Read all of `fd` (closing it) but refuse more than `limit` bytes."""
    chunks, size = [], 0
    with os.fdopen(fd, "rb", buffering=0) as f:
        # In pieces: read(limit + 1) would allocate the whole limit for every small file.
        while size <= limit:
            chunk = f.read(min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise InputError(f"{where}: larger than {limit} bytes; give the right file")
    return data


def _how_to_create(field):
    # Only pair makes ESP keys (both halves at once); a password can also be set alone.
    if field.endswith("key_file"):
        return ("make the pair's keys with 'sysrq-appliance pair' and install its half here")
    return "create it (sysrq-appliance pair or password set)"


def _open_secret(path, field, owner, trusted, missing_ok=False):
    owner = os.geteuid() if owner is None else owner
    check_path_text(path, field)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NOCTTY)
    except FileNotFoundError:
        if missing_ok:
            raise
        raise InputError(f"{field}: {path} does not exist; {_how_to_create(field)}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{field}: {path} is a symlink; put the file itself there") \
                from None
        raise InputError(f"{field}: cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{field}: {path} is not a regular file; replace it with one")
        if st.st_uid != owner:
            raise InputError(f"{field}: {path} is owned by uid {st.st_uid}; "
                             f"run: chown {owner}:{owner} {path}")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            raise InputError(f"{field}: {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                             f"run: chmod 0600 {path}")
        if st.st_nlink > 1:   # 0: replaced by rename while we looked; that is fine
            raise InputError(f"{field}: {path} has {st.st_nlink} hard links, so it can be "
                             "read or replaced under another name; give it a file of its own")
        check_ancestors(path, field, trusted)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_secret_file(path, field, owner=None, trusted=None):
    """Refuse a secret file that is missing, not regular, a symlink, not owned by `owner`
    (default: whoever runs us, i.e. root), not 0600, or in a directory others could write to.
    `trusted`: see check_ancestors."""
    os.close(_open_secret(path, field, owner, trusted))


def read_secret(path, field, owner=None, limit=MAX_SECRET_BYTES, trusted=None,
                missing_ok=False):
    """Return the bytes of a checked secret file (`trusted`: see check_ancestors);
    `missing_ok`: None when there is no such file."""
    try:
        fd = _open_secret(path, field, owner, trusted, missing_ok)
    except FileNotFoundError:
        return None
    return read_bounded(fd, limit, f"{field}: {path}")


def check_private_dir(path, field):
    """An existing directory that is to hold secrets: ours, 0700, not a symlink."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise InputError(f"{field}: cannot use {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{field}: {path} is a symlink; give the real directory "
                         f"({os.path.realpath(path)}) or a new one")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{field}: {path} exists and is not a directory; give a directory")
    if st.st_uid != os.geteuid():
        if st.st_uid == 0:
            raise InputError(f"{field}: {path} belongs to root; run as root (e.g. sudo "
                             "sysrq-appliance ...)")
        raise InputError(f"{field}: {path} is owned by uid {st.st_uid}; give a new directory "
                         f"or run: chown {os.geteuid()}: {path}")
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        raise InputError(f"{field}: {path} has mode {stat.S_IMODE(st.st_mode):04o}, but secrets "
                         "need a directory of their own that only its owner can enter; give a "
                         f"new one, or if {path} is only for them, run: chmod 0700 {path}")


def ensure_private_dir(path, field="directory"):
    """Create `path` (and missing parents) 0700, or check that the existing one is private.

    Never chmods or chowns an existing directory."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if not missing:
        check_private_dir(path, field)
        check_ancestors(path, field)
        return
    if not os.path.isdir(path):
        raise InputError(f"{field}: {path} exists and is not a directory; give a directory")
    check_ancestors(os.path.join(path, "x"), field)   # the existing part, and `path` itself
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:      # created meanwhile by someone else: not ours to trust
            check_private_dir(directory, field)
        except OSError as exc:
            raise InputError(f"{field}: cannot create {directory}: {exc.strerror}") from None


def write_public(path, data, field):
    """Atomically replace `path` (in a directory others may write to, such as a metrics
    directory) with `data`, 0644: the same temp file, O_NOFOLLOW and rename, so nothing is
    written through a symlink someone planted there."""
    write_secret(path, data, private_dir=False, field=field, mode=0o644)


def write_secret(path, data, private_dir=True, field=None, mode=FILE_MODE):
    """Atomically replace `path` with `data`: O_EXCL temp file 0600 -> fsync -> rename.

    Readers see either the old or the new content, never a partial or world-readable file.
    The directory is created 0700 if missing and must be private if it exists, unless
    `private_dir` is False (a shared one such as /etc/modprobe.d, which we never change).
    Callers hold the lock for `path`, so temp files of an earlier run that was killed are
    leftovers, removed here.
    """
    field = field or path
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if private_dir:
        ensure_private_dir(directory, field)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{field}: cannot use directory {directory}: {exc.strerror}") \
            from None
    try:
        if private_dir:   # the directory we checked is the one we opened (no swap between)
            st = os.fstat(dir_fd)
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != DIR_MODE:
                raise InputError(f"{field}: {directory} changed while we wrote to it; "
                                 "try again")
        _remove_leftovers(name, dir_fd)
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode, dir_fd=dir_fd)
            os.fchmod(fd, mode)   # whatever the umask
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            _unlink_quietly(tmp, dir_fd)
            if isinstance(exc, IsADirectoryError):
                raise InputError(f"{field}: {path} is a directory; remove it or give another "
                                 "path") from None
            if isinstance(exc, PermissionError):   # EACCES: owner and mode; EPERM: chattr +i
                why = (f"{directory} is not writable by this user: see ls -ld {directory}"
                       if exc.errno == errno.EACCES else
                       f"an immutable file or directory? see lsattr {directory}")
                raise InputError(f"{field}: cannot write {path}: {exc.strerror} ({why})") \
                    from None
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_secrets(files, field):
    """write_secret for many files at once: {path: data}. Each file is replaced atomically
    and durably as by write_secret, but the fsyncs run side by side, after every file is
    written (one after the other they cost a journal commit each: seconds for a fleet's
    thousands of files), and each directory is checked, cleaned and synced once. Callers
    hold the lock."""
    by_dir = {}
    for path, data in files.items():
        directory = os.path.dirname(os.path.abspath(path))
        by_dir.setdefault(directory, []).append((os.path.basename(path), data))
    staged = {}     # directory -> [(temp name, name), ...] not renamed yet
    unsynced = []   # descriptors of temp files written, not synced yet
    try:
        for directory, entries in by_dir.items():
            ensure_private_dir(directory, field)
            dir_fd = _open_private_dir(directory, field)
            try:
                names = {name for name, _ in entries}
                for entry in os.listdir(dir_fd):
                    if entry.endswith(".tmp") and entry[:1] == "." \
                            and entry[1:].rsplit(".", 2)[0] in names:
                        _unlink_quietly(entry, dir_fd)
                for name, data in entries:
                    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
                    staged.setdefault(directory, []).append((tmp, name))
                    unsynced.append(fd)
                    _write_all(fd, data)
                    if len(unsynced) >= _OPEN_AT_ONCE:
                        _sync_and_close(unsynced)
            finally:
                os.close(dir_fd)
        _sync_and_close(unsynced)
        for directory in list(staged):
            dir_fd = _open_private_dir(directory, field)
            try:
                while staged[directory]:
                    tmp, name = staged[directory][-1]
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    staged[directory].pop()
            finally:
                os.close(dir_fd)
        _in_parallel(_sync_path, list(by_dir))
    except IsADirectoryError as exc:
        raise InputError(f"{field}: {exc.filename or 'a path'} is a directory; remove it or "
                         "give another path") from None
    except PermissionError as exc:
        raise InputError(f"{field}: cannot write: {exc.strerror} (an immutable file or "
                         "directory?)") from None
    finally:
        for fd in unsynced:
            os.close(fd)
        for directory, pairs in staged.items():
            for tmp, _ in pairs:
                try:
                    os.unlink(os.path.join(directory, tmp))
                except FileNotFoundError:
                    pass


_OPEN_AT_ONCE = 512   # temp files open at once: well below the usual limit of 1024


def _sync_and_close(fds):
    """fsync the written files together, after the writes (a sync between two creations
    makes the second wait for the journal), then close them; empties `fds`."""
    try:
        _in_parallel(os.fsync, fds)
    finally:
        while fds:
            os.close(fds.pop())


def _in_parallel(function, items):
    """function(item) for every item, 32 at a time: the kernel groups concurrent fsyncs
    into one journal commit."""
    from concurrent.futures import ThreadPoolExecutor
    if len(items) < 2:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(min(32, len(items))) as pool:
        list(pool.map(function, items))


def _sync_path(path):
    """fsync a file or directory we just wrote (a read-only descriptor is enough)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_private_dir(directory, field):
    """A descriptor of the private directory we just checked (no swap in between)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{field}: cannot use directory {directory}: {exc.strerror}") \
            from None
    st = os.fstat(dir_fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.close(dir_fd)
        raise InputError(f"{field}: {directory} changed while we wrote to it; try again")
    return dir_fd


def _remove_leftovers(name, dir_fd):
    prefix = f".{name}."
    for entry in os.listdir(dir_fd):
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            _unlink_quietly(entry, dir_fd)


def _unlink_quietly(name, dir_fd):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass

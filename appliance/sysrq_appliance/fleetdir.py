"""`fleet render`: every host's half in OUT/HOST/, kept across runs.

The output directory is the fleet's memory: keys, SPIs and passwords already in it are read
back and kept (halves.complete makes only what is missing). A file is rewritten only when
its bytes change, so a configuration-management run that copies the halves reports no change
when the inventory did not change. OUT/.manifest lists every file we wrote; what it lists
and the inventory no longer needs is removed (and its directories, when empty): a file we did
not write is never touched. The manifest lists a file before it is written (the old list
and the new files), and is cut down to what the inventory needs once all are written.

Everything is read and checked before the first byte is written.
"""

import errno
import os
import re
from dataclasses import dataclass, field

from sysrq_appliance import config, esp_keys, halves, lock, password, yamlfile
from sysrq_appliance.errors import InputError
from sysrq_appliance.secretfile import TrustedDirs, check_private_dir, ensure_private_dir, \
    read_secret, write_secret, write_secrets

MANIFEST = ".manifest"
_RELPATH = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,63}){1,2}")


@dataclass
class Report:
    written: dict = field(default_factory=dict)     # host -> [path in its half, ...]
    removed: dict = field(default_factory=dict)
    unchanged: int = 0


def render(inv, out, by="fleet render"):
    """Render `inv` into `out`; return what changed."""
    ensure_private_dir(out, "--out")
    with lock.held(out, "fleet render", field="--out"):
        tree = _Tree(out)
        admin_halves, target_halves = halves.render(
            inv, halves.complete(inv, recover(inv, tree)), by)
        files = {f"{host}/{path}": data
                 for host, half in (*admin_halves.items(), *target_halves.items())
                 for path, data in half.items()}
        changed = {path: data for path, data in files.items() if tree.read(path) != data}
        stale = sorted(tree.manifest() - files.keys())
        for path in changed:
            tree.check_dirs(path)
        # First the old manifest and what is about to be written: a run that dies while
        # writing leaves no file of ours unlisted, so a later run still prunes it.
        tree.write_manifest(tree.manifest() | changed.keys())
        write_secrets({os.path.join(out, path): changed[path] for path in sorted(changed)},
                      field="--out")
        for path in stale:
            tree.remove(path)
        tree.write_manifest(files.keys())
    report = Report(unchanged=len(files) - len(changed))
    for kind, paths in ((report.written, changed), (report.removed, stale)):
        for path in sorted(paths):
            host, _, rest = path.partition("/")
            kind.setdefault(host, []).append(rest)
    return report


def recover(inv, tree):
    """The keys, SPIs and passwords the halves in `tree` already hold for `inv`'s hosts.

    An admin host's config names all its tunnels in one file, so it is read first; a
    target's config only for tunnels no admin half had. A password comes from the target's
    half if it has one. Material made for another ESP algorithm is not kept."""
    targets, admins = {t.name for t in inv.targets}, [a.name for a in inv.admins]
    material = halves.Material()
    for admin in admins:
        cfg = tree.config(admin, "sender", inv.algorithm)
        for peer in (cfg.peers if cfg else ()):
            if peer.name not in targets:
                continue
            keys = tree.keys(f"{admin}/keys/{peer.name}.key", inv.algorithm)
            if keys:
                material.tunnels[admin, peer.name] = halves.Tunnel(
                    peer.spi_out, peer.spi_in, keys.swapped())
            secret = tree.password(f"{admin}/passwords/{peer.name}")
            if secret:
                material.passwords.setdefault(peer.name, secret)
    for target in targets:
        secret = tree.password(f"{target}/password")
        if secret:
            material.passwords[target] = secret
        if all((admin, target) in material.tunnels for admin in admins):
            continue
        cfg = tree.config(target, "target", inv.algorithm)
        for peer in (cfg.peers if cfg else ()):
            if peer.name in admins and (peer.name, target) not in material.tunnels:
                keys = tree.keys(f"{target}/keys/{peer.name}.key", inv.algorithm)
                if keys:
                    material.tunnels[peer.name, target] = halves.Tunnel(
                        peer.spi_in, peer.spi_out, keys)
    return material


class _Tree:
    """The output directory during one run: every file read at most once, every directory
    checked once (ours, 0700, not a symlink) before anything under it is read or removed."""

    def __init__(self, out):
        self.out, self._checked, self._missing, self._read = out, {out}, set(), {}
        self._trusted = TrustedDirs()   # the directories above each file, checked once

    def read(self, path):
        """The bytes of a file we wrote earlier (a secret: ours, 0600, not a symlink), or
        None if there is none."""
        if path not in self._read:
            self.check_dirs(path)
            self._read[path] = read_secret(os.path.join(self.out, path), "--out",
                                           limit=yamlfile.MAX_BYTES, trusted=self._trusted,
                                           missing_ok=True)
        return self._read[path]

    def check_dirs(self, path):
        """Every existing directory between `out` and `path`: ours, 0700, not a symlink."""
        directory = os.path.dirname(os.path.join(self.out, path))
        while directory not in self._checked:
            if directory in self._missing:
                return
            if not os.path.lexists(directory):
                self._missing.add(directory)
                return
            check_private_dir(directory, "--out")
            self._checked.add(directory)
            directory = os.path.dirname(directory)

    def config(self, host, role, algorithm):
        data = self.read(f"{host}/appliance.yaml")
        if data is None:
            return None
        path = os.path.join(self.out, host, "appliance.yaml")
        cfg = config.parse(yamlfile.parse(yamlfile.decode(data, path), path), path)
        return cfg if cfg.role == role and cfg.algorithm == algorithm else None

    def keys(self, path, algorithm):
        data = self.read(path)
        return esp_keys.parse(data, os.path.join(self.out, path), algorithm) if data else None

    def password(self, path):
        data = self.read(path)
        return password.validate(data, os.path.join(self.out, path)) if data else None

    def manifest(self):
        data = self.read(MANIFEST)
        paths = set()
        for number, line in enumerate((data or b"").decode("ascii", "replace").splitlines(),
                                      1):
            if not _RELPATH.fullmatch(line):
                raise InputError(f"--out: {os.path.join(self.out, MANIFEST)}: line {number} "
                                 "is not a file we wrote; remove the manifest (nothing is "
                                 "pruned then)")
            paths.add(line)
        return paths

    def write_manifest(self, paths):
        """Replace the manifest (atomically) with `paths`, unless it lists just those."""
        data = "".join(f"{path}\n" for path in sorted(paths)).encode()
        if self.read(MANIFEST) != data:
            write_secret(os.path.join(self.out, MANIFEST), data, field="--out")
            self._read[MANIFEST] = data

    def remove(self, path):
        """Remove a file we wrote and no longer need, then its directories if now empty."""
        full = os.path.join(self.out, path)
        self.check_dirs(path)
        try:
            os.unlink(full)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            return   # not what we wrote there: leave it
        directory = os.path.dirname(full)
        while directory != self.out:
            try:
                os.rmdir(directory)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            directory = os.path.dirname(directory)

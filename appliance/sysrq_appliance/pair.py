"""Generate both halves of one sender-target pair: configs, ESP keys, SPIs, password —
the two-host shortcut of a fleet (halves.py renders both).

The bundle mirrors /etc/sysrq-appliance on each host, so each half is copied as a whole:

    OUT/target/  appliance.yaml  password            keys/SENDER.key
    OUT/sender/  appliance.yaml  passwords/TARGET    keys/TARGET.key
"""

import ipaddress
import os

from sysrq_appliance import addresses, config, halves, inventory, lock
from sysrq_appliance.config import DEFAULT_ALGORITHM, NAME_RE
from sysrq_appliance.errors import InputError, excerpt
from sysrq_appliance.secretfile import (check_path_text, check_private_dir, ensure_private_dir,
                                        write_secret)

ETC_DIR = "/etc/sysrq-appliance"


def parse_host(value, option):
    """'NAME=ADDRESS' -> (name, address)."""
    name, sep, address = value.partition("=")
    if not sep or not NAME_RE.fullmatch(name):
        raise InputError(f"{option}: {excerpt(value)} is not NAME=ADDRESS (NAME: 1-32 of "
                         f"a-z 0-9 . _ -); e.g. {option} web1=10.10.25.7")
    try:
        return name, addresses.host_address(address)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None


def parse_allow(text):
    """'sync,remount,reboot' -> validated tuple of allow-names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    config.parse_allow_list(list(names), "--allow")
    return names


def write_bundle(target, sender, out, algorithm=DEFAULT_ALGORITHM, port=9, etc_dir=ETC_DIR,
                 force=False, allow=("sync", "remount", "reboot")):
    """Write the bundle; return the two directories (target half, sender half)."""
    (t_name, t_addr), (s_name, s_addr) = target, sender
    check_path_text(etc_dir, "--etc-dir")
    if ipaddress.ip_address(t_addr).version != ipaddress.ip_address(s_addr).version:
        raise InputError("--target/--sender: the two addresses must be of one family "
                         "(both IPv4 or both IPv6)")
    if t_addr == s_addr:
        raise InputError("--target/--sender: the two hosts need different addresses")
    ensure_private_dir(out, "--out")    # never chmods what exists: /tmp stays /tmp
    dirs = os.path.join(out, "target"), os.path.join(out, "sender")
    files = _bundle(target, sender, dirs, algorithm, port, etc_dir, allow)
    _refuse_overwrite(dirs, force)
    for path in files:   # every place is checked before the first byte is written
        _check_writable(path, os.path.dirname(out))
    with lock.held(out, "pair", field="--out"):   # two pairs into one --out would mix
        _refuse_overwrite(dirs, force)
        for path, data in files.items():
            write_secret(path, data, field="--out")
    return dirs


def _refuse_overwrite(halves, force):
    existing = [h for h in halves if os.path.lexists(h)]
    if existing and not force:
        raise InputError(f"--out: {existing[0]} exists already; use another --out or "
                         "--force to overwrite (the old keys stop working)")


def _check_writable(path, top):
    directory = os.path.dirname(path)
    while directory != top:
        if os.path.lexists(directory):
            check_private_dir(directory, "--out")
        directory = os.path.dirname(directory)
    if os.path.isdir(path) and not os.path.islink(path):
        raise InputError(f"--out: {path} is a directory; remove it or use another --out")


def _bundle(target, sender, halves_dirs, algorithm, port, etc_dir, allow):
    """path -> content of every file of the bundle: a fleet of one admin host and one
    target (pure but for the random keys)."""
    (t_name, t_addr), (s_name, s_addr) = target, sender
    for path in (f"{etc_dir}/keys/{s_name}.key", f"{etc_dir}/passwords/{t_name}"):
        check_path_text(path, "--etc-dir")   # the configs must load on the hosts
    inv = inventory.Inventory("pair", admins=(inventory.Host(s_name, s_addr),),
                              targets=(inventory.Host(t_name, t_addr, tuple(allow)),),
                              algorithm=algorithm, port=port, etc_dir=etc_dir)
    admin_halves, target_halves = halves.render(inv, halves.complete(inv, halves.Material()),
                                                by="pair")
    t_dir, s_dir = halves_dirs
    return {**{os.path.join(t_dir, path): data for path, data in target_halves[t_name].items()},
            **{os.path.join(s_dir, path): data for path, data in admin_halves[s_name].items()}}

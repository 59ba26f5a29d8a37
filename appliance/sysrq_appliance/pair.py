"""Generate both halves of one sender-target pair: configs, ESP keys, SPIs, password.

The bundle mirrors /etc/sysrq-appliance on each host, so each half is copied as a whole:

    OUT/target/  appliance.yaml  password            keys/SENDER.key
    OUT/sender/  appliance.yaml  passwords/TARGET    keys/TARGET.key
"""

import ipaddress
import os
import secrets

import yaml

from sysrq_appliance import addresses, config, esp_keys, lock, password
from sysrq_appliance.config import DEFAULT_ALGORITHM, NAME_RE, SPI_MIN
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


def _spis(count):
    spis = set()
    while len(spis) < count:
        spis.add(secrets.randbelow(0xFFFFFFFF - SPI_MIN) + SPI_MIN)
    return list(spis)


class _Spi(int):
    """An SPI, written in hex as `ip xfrm state` shows it."""


class _Names(list):
    """A list of names, written on one line: allow: [sync, remount, reboot]."""


class _Dumper(yaml.SafeDumper):
    """Block mappings, list items indented under their key."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


_Dumper.add_representer(_Spi, lambda dumper, spi: dumper.represent_scalar(
    "tag:yaml.org,2002:int", f"{spi:#010x}"))
_Dumper.add_representer(_Names, lambda dumper, names: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", names, flow_style=True))


def render_config(role, local, peer, algorithm, port, sysrq=None):
    """The text of one half's appliance.yaml: the schema `config` reads, dumped by YAML
    (so no value can break the file's structure), with a header for the reader."""
    document = {"role": role, "local": local,
                "peers": [{**peer, "spi_in": _Spi(peer["spi_in"]),
                           "spi_out": _Spi(peer["spi_out"])}],
                "ipsec": {"algorithm": algorithm},
                "sysrq": {"port": port, **(sysrq or {})}}
    return (f"# sysrq-appliance {role} config, written by 'sysrq-appliance pair'.\n"
            "# See sysrq-appliance(8) for every field.\n"
            + yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False))


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
    halves = os.path.join(out, "target"), os.path.join(out, "sender")
    files = _bundle(target, sender, halves, algorithm, port, etc_dir, allow)
    _refuse_overwrite(halves, force)
    for path in files:   # every place is checked before the first byte is written
        _check_writable(path, os.path.dirname(out))
    with lock.held(out, "pair", field="--out"):   # two pairs into one --out would mix
        _refuse_overwrite(halves, force)
        for path, data in files.items():
            write_secret(path, data, field="--out")
    return halves


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


def _bundle(target, sender, halves, algorithm, port, etc_dir, allow):
    """path -> content of every file of the bundle (pure but for the random keys)."""
    (t_name, t_addr), (s_name, s_addr) = target, sender
    to_target, to_sender = _spis(2)       # SPI of the SA carrying sender->target, and back
    keys = esp_keys.generate(algorithm)   # as seen from the target
    sysrq_password = password.generate()
    t_dir, s_dir = halves
    paths = {"t_key": f"{etc_dir}/keys/{s_name}.key", "t_pw": f"{etc_dir}/password",
             "s_key": f"{etc_dir}/keys/{t_name}.key", "s_pw": f"{etc_dir}/passwords/{t_name}"}
    for value in paths.values():
        check_path_text(value, "--etc-dir")   # the configs must load on the hosts
    return {
        os.path.join(t_dir, "appliance.yaml"): render_config(
            "target", t_addr, dict(name=s_name, address=s_addr, spi_in=to_target,
                                   spi_out=to_sender, key_file=paths["t_key"]),
            algorithm, port, {"password_file": paths["t_pw"], "allow": _Names(allow)}).encode(),
        os.path.join(t_dir, "keys", f"{s_name}.key"): esp_keys.render(keys, s_name, algorithm),
        os.path.join(t_dir, "password"): sysrq_password,
        os.path.join(s_dir, "appliance.yaml"): render_config(
            "sender", s_addr, dict(name=t_name, address=t_addr, spi_in=to_sender,
                                   spi_out=to_target, key_file=paths["s_key"],
                                   password_file=paths["s_pw"],
                                   allow=_Names(allow)),   # the target's sysrq.allow
            algorithm, port).encode(),
        os.path.join(s_dir, "keys", f"{t_name}.key"): esp_keys.render(keys.swapped(), t_name,
                                                                      algorithm),
        os.path.join(s_dir, "passwords", t_name): sysrq_password,
    }

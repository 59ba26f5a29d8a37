"""Generate both halves of one sender-target pair: configs, ESP keys, SPIs, password.

The bundle mirrors /etc/sysrq-appliance on each host, so each half is copied as a whole:

    OUT/target/  appliance.yaml  password            keys/SENDER.key
    OUT/sender/  appliance.yaml  passwords/TARGET    keys/TARGET.key
"""

import ipaddress
import os
import secrets

from sysrq_appliance import esp_keys, password
from sysrq_appliance import config
from sysrq_appliance.config import DEFAULT_ALGORITHM, NAME_RE, SPI_MIN
from sysrq_appliance.errors import InputError
from sysrq_appliance.secretfile import ensure_private_dir, write_secret

ETC_DIR = "/etc/sysrq-appliance"


def parse_host(value, option):
    """'NAME=ADDRESS' -> (name, address)."""
    name, sep, address = value.partition("=")
    if not sep or not NAME_RE.match(name):
        raise InputError(f"{option}: {value!r} is not NAME=ADDRESS; e.g. {option} web1=10.10.25.7")
    try:
        return name, str(ipaddress.ip_address(address))
    except ValueError:
        raise InputError(f"{option}: {address!r} is not an IPv4 or IPv6 address") from None


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


def _config(role, local, peer, algorithm, port, peer_lines):
    return f"""# sysrq-appliance {role} config, written by 'sysrq-appliance pair'.
# See /usr/share/doc/sysrq-appliance/README.md for every field.
role: {role}
local: {local}
peers:
  - name: {peer['name']}
    address: {peer['address']}
    spi_in: {peer['spi_in']:#010x}
    spi_out: {peer['spi_out']:#010x}
{peer_lines}ipsec:
  algorithm: {algorithm}
sysrq:
  port: {port}
"""


def write_bundle(target, sender, out, algorithm=DEFAULT_ALGORITHM, port=9, etc_dir=ETC_DIR,
                 force=False, allow=("sync", "remount", "reboot")):
    """Write the bundle; return the two directories (target half, sender half)."""
    (t_name, t_addr), (s_name, s_addr) = target, sender
    if ipaddress.ip_address(t_addr).version != ipaddress.ip_address(s_addr).version:
        raise InputError("--target/--sender: the two addresses must be of one family "
                         "(both IPv4 or both IPv6)")
    if t_addr == s_addr:
        raise InputError("--target/--sender: the two hosts need different addresses")
    halves = os.path.join(out, "target"), os.path.join(out, "sender")
    existing = [h for h in halves if os.path.exists(h)]
    if existing and not force:
        raise InputError(f"--out: {existing[0]} exists already; use another --out or --force "
                         "to overwrite (the old keys stop working)")
    to_target, to_sender = _spis(2)       # SPI of the SA carrying sender->target, and back
    keys = esp_keys.generate(algorithm)   # as seen from the target
    sysrq_password = password.generate()
    ensure_private_dir(out)
    t_dir, s_dir = halves
    key_line = "    key_file: {}/keys/{}.key\n"
    write_secret(os.path.join(t_dir, "appliance.yaml"), _config(
        "target", t_addr, dict(name=s_name, address=s_addr, spi_in=to_target, spi_out=to_sender),
        algorithm, port, key_line.format(etc_dir, s_name)).encode()
        + f"  password_file: {etc_dir}/password\n  allow: [{', '.join(allow)}]\n".encode())
    write_secret(os.path.join(t_dir, "keys", f"{s_name}.key"),
                 esp_keys.render(keys, s_name, algorithm))
    write_secret(os.path.join(t_dir, "password"), sysrq_password)
    write_secret(os.path.join(s_dir, "appliance.yaml"), _config(
        "sender", s_addr, dict(name=t_name, address=t_addr, spi_in=to_sender, spi_out=to_target),
        algorithm, port, key_line.format(etc_dir, t_name)
        + f"    password_file: {etc_dir}/passwords/{t_name}\n"
        + f"    allow: [{', '.join(allow)}]   # the target's sysrq.allow\n").encode())
    write_secret(os.path.join(s_dir, "keys", f"{t_name}.key"),
                 esp_keys.render(keys.swapped(), t_name, algorithm))
    write_secret(os.path.join(s_dir, "passwords", t_name), sysrq_password)
    return t_dir, s_dir

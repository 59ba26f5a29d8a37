"""xt_SYSRQ request format (xtables-addons 3.x, crypto build).

    payload = "<keys>,<seqno>,<salt>,<hexdigest>"
    digest  = hash("<keys>,<seqno>,<salt>,<dst>,<password>")   lowercase hex

<dst> is the packet's destination as the kernel prints it (%pI4 / %pI6: dotted quad, or
eight 4-digit hex groups). The module takes seqno only if it is above the last accepted
one. Pure functions: no I/O, no clock, no randomness except new_salt().
"""

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass

from sysrq_appliance import sysrq
from sysrq_appliance.errors import InputError, excerpt

SALT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")     # always used with fullmatch
MAX_SEQNO = 2**63 - 1    # xt_SYSRQ keeps it in a signed long
PLAIN_WARNING = ("warning: wire 'plain' (xtables-addons builds without crypto): the password "
                 "travels in the packet and xt_SYSRQ accepts any prefix of it; use 'hashed'")


@dataclass(frozen=True)
class Request:
    keys: str
    seqno: int
    salt: str
    digest: str

    def encode(self):
        return f"{self.keys},{self.seqno},{self.salt},{self.digest}".encode("ascii")


def kernel_address(address):
    """The destination as xt_SYSRQ prints it into the digest input."""
    ip = ipaddress.ip_address(address)
    return str(ip) if ip.version == 4 else ip.exploded


def new_salt():
    return secrets.token_urlsafe(12)  # 16 characters of [A-Za-z0-9_-]: no comma


def compute_digest(keys, seqno, salt, destination, password, hash_name="sha1"):
    text = f"{keys},{seqno},{salt},{kernel_address(destination)},".encode("ascii") + password
    return hashlib.new(hash_name, text).hexdigest()


def check_salt(salt):
    if not isinstance(salt, str) or not SALT_RE.fullmatch(salt):
        raise InputError(f"--salt: {excerpt(salt)} is not allowed; use 1-64 of A-Z a-z 0-9 _ -")
    return salt


def build(keys, seqno, salt, destination, password, hash_name="sha1"):
    """The request that fires `keys` on the host at `destination`."""
    sysrq.check_keys(keys)
    check_salt(salt)
    if not 1 <= seqno <= MAX_SEQNO:
        raise InputError(f"--seqno: {seqno} is out of range; use 1 to {MAX_SEQNO}")
    return Request(keys, seqno, salt,
                   compute_digest(keys, seqno, salt, destination, password, hash_name))


def build_plain(key, password):
    """The seed's old format: one key followed by the password, no digest."""
    sysrq.check_keys(key, single=True)
    return key.encode("ascii") + password


def parse(payload):
    """Split a received payload into a Request; raise InputError if it is not one."""
    try:
        text = payload.decode("ascii").rstrip("\n")
    except UnicodeDecodeError:
        raise InputError("request: not ASCII; expected keys,seqno,salt,hexdigest") from None
    parts = text.split(",")
    if len(parts) != 4:
        raise InputError(f"request: {len(parts)} comma-separated fields; expected 4 "
                         "(keys,seqno,salt,hexdigest)")
    keys, seqno, salt, digest = parts
    if not seqno.isdigit():
        raise InputError("request: seqno is not a number")
    if not re.fullmatch(r"[0-9a-f]+", digest):
        raise InputError("request: digest is not lowercase hex")
    return Request(sysrq.check_keys(keys), int(seqno), salt, digest)


def accepted(request, destination, password, hash_name, last_seqno):
    """Would xt_SYSRQ accept this request? (For tests and diagnostics.)"""
    if request.seqno <= last_seqno:
        return False
    expected = compute_digest(request.keys, request.seqno, request.salt, destination,
                              password, hash_name)
    return secrets.compare_digest(expected, request.digest)

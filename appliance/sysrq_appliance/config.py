"""Load and validate /etc/sysrq-appliance/appliance.yaml into frozen dataclasses.

Every error is one line: file, field path, the bad value (never a secret), what is allowed.
"""

import ipaddress
import os
import re
from dataclasses import dataclass

from sysrq_appliance import addresses, sequences, sysrq, yamlfile
from sysrq_appliance.errors import InputError, excerpt
from sysrq_appliance.backends import BACKENDS as FIREWALL_BACKENDS
from sysrq_appliance.secretfile import TrustedDirs, check_path_text, check_secret_file

DEFAULT_PATH = "/etc/sysrq-appliance/appliance.yaml"
DEFAULT_PASSWORD_FILE = "/etc/sysrq-appliance/password"
ROLES = ("target", "sender")
# ESP algorithm -> allowed key lengths in bytes, per direction
ALGORITHMS = {
    "rfc4106(gcm(aes))": (20, 28, 36),        # AES-128/192/256 key + 4-byte salt
    "cbc(aes)+hmac(sha256)": (48, 56, 64),    # AES-128/192/256 key + 32-byte HMAC key
}
DEFAULT_ALGORITHM = "rfc4106(gcm(aes))"
HASHES = ("sha1", "sha256", "sha512")
WIRES = ("hashed", "plain")
BACKENDS = ("auto", *FIREWALL_BACKENDS)
SPI_MIN, SPI_MAX = 0x100, 0xFFFFFFFF
# reqids give each peer 16 bits (plan.reqids); a bastion in front of 10,000 targets fits.
MAX_PEERS = 16384
MAX_GROUPS = 1024
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")       # always used with fullmatch
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    spi_in: int       # SPI of the SA carrying peer -> local
    spi_out: int      # SPI of the SA carrying local -> peer
    key_file: str
    mac: str | None = None              # target only: also match the sender's MAC
    password_file: str | None = None    # sender only: that target's SysRq password
    allow: tuple[str, ...] | None = None    # sender only: the target's allow list, if known


@dataclass(frozen=True)
class Config:
    path: str
    role: str
    local: str
    peers: tuple[Peer, ...]
    algorithm: str = DEFAULT_ALGORITHM
    port: int = 9
    hash: str = "sha1"
    wire: str = "hashed"
    password_file: str = DEFAULT_PASSWORD_FILE   # target: the password given to xt_SYSRQ
    allow: tuple[str, ...] = ("sync", "remount", "reboot")
    drop_other: bool = True
    backend: str = "auto"
    sequences: tuple = ()                # sender only: ((name, steps), ...) of its own
    groups: tuple = ()                   # sender only: ((name, (peer, ...)), ...) for send --group

    @property
    def sysrq_mask(self):
        return sysrq.mask_for(self.allow)

    @property
    def family(self):
        return ipaddress.ip_address(self.local).version

    def find_group(self, name):
        for group, members in self.groups:
            if group == name:
                return members
        known = ", ".join(g for g, _ in self.groups[:10]) or "none"
        raise InputError(f"--group: {excerpt(name)} is not a group in {self.path}; "
                         f"known: {known}")

    def find_peer(self, name_or_address, field="TARGET"):
        for peer in self.peers:
            if name_or_address in (peer.name, peer.address):
                return peer
        try:
            wanted = ipaddress.ip_address(name_or_address)
        except ValueError:   # includes names; ip_address never raises anything else on str
            wanted = None
        for peer in self.peers:
            if wanted is not None and ipaddress.ip_address(peer.address) == wanted:
                return peer
        names = ", ".join(p.name for p in self.peers)
        if len(self.peers) > 10:
            names = ", ".join(p.name for p in self.peers[:10]) + ", ..."
        raise InputError(f"{field}: {excerpt(name_or_address)} is not a peer in {self.path}; "
                         f"known: {names}")


class Reader:
    """Walks the YAML tree, producing errors that name the file and the field path."""

    def __init__(self, path):
        self.path = path

    def fail(self, field, message):
        where = f"{self.path}: " if self.path else ""
        raise InputError(f"{where}{field}: {message}" if field else f"{where}{message}")

    def mapping(self, value, field, allowed, required=()):
        if not isinstance(value, dict):
            self.fail(field, f"expected a mapping, got {excerpt(value)}")
        for key in value:
            if key not in allowed:
                self.fail(_join(field, key), f"unknown field; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                self.fail(_join(field, key), "missing; this field is required")
        return value

    def choice(self, value, field, choices):
        if value not in choices:
            self.fail(field, f"{excerpt(value)} is not allowed; use one of: {', '.join(choices)}")
        return value

    def integer(self, value, field, low, high, hexa=False):
        # Only a plain YAML integer: no quoted numbers, no 1_000, no octal 010 (the loader's
        # resolver knows decimal and 0x hex only).
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"{excerpt(value)} is not a whole number; write it without quotes, "
                      "in decimal or 0x hex")
        if not low <= value <= high:
            shown, lo, hi = (hex(value), hex(low), hex(high)) if hexa else (value, low, high)
            self.fail(field, f"{shown} is out of range; use {lo} to {hi}")
        return value

    def boolean(self, value, field):
        if not isinstance(value, bool):
            self.fail(field, f"{excerpt(value)} is not true or false")
        return value

    def section(self, top, key, allowed):
        """An optional top-level mapping: absent or empty means defaults, any other
        type is an error (never silently the default)."""
        value = top.get(key)
        return self.mapping({} if value is None else value, key, allowed)

    def address(self, value, field):
        try:
            return addresses.host_address(value)
        except ValueError as exc:
            self.fail(field, str(exc))

    def path_field(self, value, field):
        # Never echo the value: a secret pasted into the wrong field must not reach a log.
        where = f"{self.path}: {field}" if self.path else field
        return check_path_text(value, where)


def _join(field, key):
    # A key is printed as written only when it is a plain word; anything else (control
    # characters, escape sequences, a long pasted value) is shown quoted and cut.
    key = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", key) \
        else excerpt(key)
    return f"{field}.{key}" if field else key



def load(path=DEFAULT_PATH, secret_owner=None, check_secrets=True):
    """Read and validate the config file; raise InputError (exit 2) on any problem.

    Secret files must belong to `secret_owner` (default: whoever runs us, i.e. root)."""
    config = parse(yamlfile.load(path), path)
    trusted = TrustedDirs()   # each directory of the secrets checked once, not per file
    _refuse_shared_files(config, path, trusted)
    if check_secrets:
        owner = os.geteuid() if secret_owner is None else secret_owner
        for field, secret in secret_files(config):
            check_secret_file(secret, f"{path}: {field}", owner, trusted)
    return config


def _refuse_shared_files(config, path, trusted):
    """Each secret in a file of its own, none of them the config: a password written over
    the config or the keys, or one key file for two peers (two SA pairs on one AES-GCM key
    with independent counters: nonce reuse) must never happen."""
    seen = {os.path.realpath(path): "the config file itself"}
    for field, secret in secret_files(config):
        real = trusted.realpath(secret)
        if real in seen:
            raise InputError(f"{path}: {field}: {secret} is also {seen[real]}; every secret "
                             "needs a file of its own")
        seen[real] = field


def secret_files(config):
    """(field path, file) for every secret the config refers to."""
    files = []
    if config.role == "target":
        files.append(("sysrq.password_file", config.password_file))
    for i, peer in enumerate(config.peers):
        files.append((f"peers[{i}].key_file", peer.key_file))
        if peer.password_file:
            files.append((f"peers[{i}].password_file", peer.password_file))
    return files


def parse(raw, path="<config>"):
    """Validate an already-parsed YAML document into a Config."""
    r = Reader(path)
    if raw is None:
        r.fail("", "holds no settings; see sysrq-appliance(8), or run 'sysrq-appliance pair'")
    if not isinstance(raw, dict):
        # Never quote it: --config may name a key or password file by mistake.
        r.fail("", f"is not a config file: its top level is a {type(raw).__name__}, not a "
               "mapping of fields (role, local, peers, ...)")
    top = r.mapping(raw, "", ("role", "local", "peers", "ipsec", "sysrq", "firewall",
                              "sequences", "groups"), required=("role", "local", "peers"))
    role = r.choice(top["role"], "role", ROLES)
    for field, what in (("sequences", "sends sequences"), ("groups", "sends to groups")):
        if role == "target" and field in top:
            r.fail(field, f"only a sender {what}; remove it from the target config")
    local = r.address(top["local"], "local")
    ipsec = r.section(top, "ipsec", ("algorithm",))
    algorithm = r.choice(ipsec.get("algorithm", DEFAULT_ALGORITHM), "ipsec.algorithm",
                         tuple(ALGORITHMS))
    sysrq_allowed = ("port", "hash", "wire", "drop_other")
    sysrq_allowed += ("password_file", "allow") if role == "target" else ()
    sq = r.section(top, "sysrq", sysrq_allowed)
    firewall = r.section(top, "firewall", ("backend",))
    allow = tuple(parse_allow(r, sq.get("allow", list(Config.allow)), "sysrq.allow"))
    peers = _parse_peers(r, top["peers"], role, local)
    return Config(
        path=path, role=role, local=local, peers=peers, algorithm=algorithm,
        port=r.integer(sq.get("port", 9), "sysrq.port", 1, 65535),
        hash=r.choice(sq.get("hash", "sha1"), "sysrq.hash", HASHES),
        wire=r.choice(sq.get("wire", "hashed"), "sysrq.wire", WIRES),
        password_file=r.path_field(sq.get("password_file", DEFAULT_PASSWORD_FILE),
                                   "sysrq.password_file"),
        allow=allow,
        drop_other=r.boolean(sq.get("drop_other", True), "sysrq.drop_other"),
        backend=r.choice(firewall.get("backend", "auto"), "firewall.backend", BACKENDS),
        sequences=_parse_sequences(r, {} if top.get("sequences") is None
                                   else top["sequences"]),
        groups=parse_groups(r, {} if top.get("groups") is None else top["groups"],
                            {p.name for p in peers}, "groups", "peer"),
    )


def parse_groups(r, value, members, field, kind):
    """name -> [member, ...] into ((name, (member, ...)), ...); each member one of
    `members` (a set of names), each group non-empty and without repeats."""
    if not isinstance(value, dict):
        r.fail(field, f"expected a mapping of group name to a list of names, got "
               f"{excerpt(value)}")
    if len(value) > MAX_GROUPS:
        r.fail(field, f"{len(value)} groups; at most {MAX_GROUPS}")
    groups = []
    for name, names in value.items():
        where = _join(field, name)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            r.fail(where, "not a valid group name; use 1-32 of a-z 0-9 . _ - starting with a "
                   "letter or digit")
        if not isinstance(names, list) or not names:
            r.fail(where, f"{excerpt(names)} is not a non-empty list of {kind} names")
        for i, member in enumerate(names):
            if not isinstance(member, str) or member not in members:
                r.fail(f"{where}[{i}]", f"{excerpt(member)} is not a {kind} name; list "
                       f"{kind}s by their name")
        if len(set(names)) != len(names):
            r.fail(where, f"a {kind} is listed twice; list each once")
        groups.append((name, tuple(names)))
    return tuple(groups)


def _parse_sequences(r, value):
    if not isinstance(value, dict):
        r.fail("sequences", f"expected a mapping of name to steps, got {excerpt(value)}")
    if len(value) > sequences.MAX_SEQUENCES:
        r.fail("sequences", f"{len(value)} sequences; at most {sequences.MAX_SEQUENCES}")
    parsed = []
    for name, steps in value.items():
        if not isinstance(name, str) or not sequences.NAME_RE.fullmatch(name):
            r.fail(f"sequences.{excerpt(name)}", "not a valid name; use 1-32 of a-z 0-9 -")
        try:
            parsed.append((name, sequences.parse(steps, f"sequences.{name}")))
        except InputError as exc:
            r.fail(*str(exc).split(": ", 1))
    return tuple(parsed)


def parse_allow_list(value, field):
    """Validate allow-names outside a config file (e.g. a CLI option)."""
    return parse_allow(Reader(None), value, field)


def parse_allow(r, value, field):
    names = (sysrq.ALL, *sysrq.FUNCTIONS)
    if not isinstance(value, list) or not value:
        r.fail(field, f"{excerpt(value)} is not a non-empty list; "
               f"use some of: {', '.join(names)}")
    for i, name in enumerate(value):
        r.choice(name, f"{field}[{i}]", names)
    if sysrq.ALL in value and len(value) > 1:
        r.fail(field, "'all' cannot be combined with other names; list the functions "
               "you want instead")
    if len(set(value)) != len(value):
        r.fail(field, "a name is listed twice; list each function once")
    return value


def _parse_peers(r, value, role, local):
    if not isinstance(value, list) or not value:
        r.fail("peers", f"{excerpt(value)} is not a non-empty list of peers")
    if len(value) > MAX_PEERS:
        r.fail("peers", f"{len(value)} peers; at most {MAX_PEERS} fit in one config")
    allowed = ("name", "address", "spi_in", "spi_out", "key_file")
    allowed += ("mac",) if role == "target" else ("password_file", "allow")
    required = ("name", "address", "spi_in", "spi_out", "key_file")
    required += ("password_file",) if role == "sender" else ()
    local_family = ipaddress.ip_address(local).version
    peers, names, addresses, spis = [], set(), set(), {}
    for i, item in enumerate(value):
        field = f"peers[{i}]"
        item = r.mapping(item, field, allowed, required)
        name = item["name"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            r.fail(f"{field}.name", f"{excerpt(name)} is not a valid name; use 1-32 of a-z 0-9 "
                   ". _ - starting with a letter or digit")
        if name in names:
            r.fail(f"{field}.name", f"{name!r} is used by two peers; names must be unique")
        names.add(name)
        address = r.address(item["address"], f"{field}.address")
        if ipaddress.ip_address(address).version != local_family:
            r.fail(f"{field}.address", f"{address} is IPv{ipaddress.ip_address(address).version}"
                   f" but local is IPv{local_family}; a peer must use local's family")
        if address == local:
            r.fail(f"{field}.address", f"{address} is the local address; give the peer's")
        if address in addresses:
            r.fail(f"{field}.address", f"{address} is used by two peers; one peer per address")
        addresses.add(address)
        spi = {}
        for direction in ("spi_in", "spi_out"):
            spi[direction] = r.integer(item[direction], f"{field}.{direction}", SPI_MIN,
                                       SPI_MAX, hexa=True)
            if spi[direction] in spis:
                r.fail(f"{field}.{direction}", f"{hex(spi[direction])} is already used by "
                       f"{spis[spi[direction]]}; SPIs must be unique across all peers and "
                       "directions")
            spis[spi[direction]] = f"{field}.{direction}"
        mac = item.get("mac")
        if mac is not None and (not isinstance(mac, str) or not MAC_RE.fullmatch(mac.lower())):
            r.fail(f"{field}.mac", f"{excerpt(mac)} is not a MAC address like aa:bb:cc:dd:ee:ff")
        password_file = item.get("password_file")
        if password_file is not None:
            password_file = r.path_field(password_file, f"{field}.password_file")
        allow = item.get("allow")
        if allow is not None:
            allow = tuple(parse_allow(r, allow, f"{field}.allow"))
        peers.append(Peer(
            name=name, address=address,
            spi_in=spi["spi_in"], spi_out=spi["spi_out"],
            key_file=r.path_field(item["key_file"], f"{field}.key_file"),
            mac=mac.lower() if mac else None, password_file=password_file, allow=allow))
    return tuple(peers)

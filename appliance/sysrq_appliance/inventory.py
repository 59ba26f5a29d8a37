"""A fleet inventory: admin hosts, targets, groups, read like a config (bounded YAML, one
line per error naming the file and the field).

    admins:
      - {name: admin1, address: 10.10.25.1}
    targets:
      - {name: web1, address: 10.10.25.7, allow: [sync, remount, reboot, signal]}
      - {name: web2, address: 10.10.25.8}
    groups:
      web: [web1, web2]
    sysrq: {port: 9, allow: [sync, remount, reboot]}   # defaults for every target
    ipsec: {algorithm: rfc4106(gcm(aes))}
    etc_dir: /etc/sysrq-appliance                      # where the halves live on the hosts

Every admin host gets a tunnel to every target, so all addresses are of one family.
"""

import ipaddress
from dataclasses import dataclass

from sysrq_appliance import config, yamlfile
from sysrq_appliance.errors import excerpt

ETC_DIR = "/etc/sysrq-appliance"
DEFAULT_ALLOW = ("sync", "remount", "reboot")
MAX_ADMINS = 64


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    allow: tuple[str, ...] | None = None     # targets only: the functions it allows


@dataclass(frozen=True)
class Inventory:
    path: str
    admins: tuple[Host, ...]
    targets: tuple[Host, ...]
    groups: tuple = ()                       # ((name, (target, ...)), ...)
    algorithm: str = config.DEFAULT_ALGORITHM
    port: int = 9
    etc_dir: str = ETC_DIR


MISSING = ("no such inventory file; write one: see 'sysrq-appliance fleet render --help' "
           "or Fleets in the README")


def load(path):
    """Read and validate an inventory file; InputError (exit 2) on any problem."""
    return parse(yamlfile.load(path, MISSING), path)


def parse(raw, path="<inventory>"):
    r = config.Reader(path)
    if not isinstance(raw, dict):
        r.fail("", "is not an inventory: its top level must be a mapping of admins, "
               "targets, groups, ...")
    top = r.mapping(raw, "", ("admins", "targets", "groups", "sysrq", "ipsec", "etc_dir"),
                    required=("admins", "targets"))
    ipsec = r.section(top, "ipsec", ("algorithm",))
    algorithm = r.choice(ipsec.get("algorithm", config.DEFAULT_ALGORITHM), "ipsec.algorithm",
                         tuple(config.ALGORITHMS))
    sysrq = r.section(top, "sysrq", ("port", "allow"))
    port = r.integer(sysrq.get("port", 9), "sysrq.port", 1, 65535)
    allow = tuple(config.parse_allow(r, sysrq.get("allow", list(DEFAULT_ALLOW)),
                                     "sysrq.allow"))
    etc_dir = r.path_field(top.get("etc_dir", ETC_DIR), "etc_dir").rstrip("/") or "/"
    seen = {}
    admins = _hosts(r, top["admins"], "admins", MAX_ADMINS, None, seen)
    targets = _hosts(r, top["targets"], "targets", config.MAX_PEERS, allow, seen)
    groups = config.parse_groups(r, {} if top.get("groups") is None else top["groups"],
                                 {t.name for t in targets}, "groups", "target")
    return Inventory(path, admins, targets, groups, algorithm, port, etc_dir)


def _hosts(r, value, field, limit, default_allow, seen):
    """The admins (default_allow None) or the targets; `seen` holds every name and
    address so far (and the first family), for uniqueness across both lists."""
    if not isinstance(value, list) or not value:
        r.fail(field, f"{excerpt(value)} is not a non-empty list of hosts "
               "({name: ..., address: ...})")
    if len(value) > limit:
        r.fail(field, f"{len(value)} hosts; at most {limit}")
    allowed = ("name", "address") + (() if default_allow is None else ("allow",))
    hosts = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        item = r.mapping(item, where, allowed, required=("name", "address"))
        name = item["name"]
        if not isinstance(name, str) or not config.NAME_RE.fullmatch(name):
            r.fail(f"{where}.name", f"{excerpt(name)} is not a valid name; use 1-32 of a-z "
                   "0-9 . _ - starting with a letter or digit")
        address = r.address(item["address"], f"{where}.address")
        for what, key in (("name", name), ("address", address)):
            if (what, key) in seen:
                r.fail(f"{where}.{what}", f"{key} is also {seen[what, key]}'s; every "
                       f"host needs its own {what}")
            seen[what, key] = where
        family = ipaddress.ip_address(address).version
        first = seen.setdefault(("family",), (family, where))
        if first[0] != family:
            r.fail(f"{where}.address", f"{address} is IPv{family} but {first[1]} is "
                   f"IPv{first[0]}; every admin host reaches every target, so use one family")
        allow = None
        if default_allow is not None:
            allow = default_allow if "allow" not in item else tuple(
                config.parse_allow(r, item["allow"], f"{where}.allow"))
        hosts.append(Host(name, address, allow))
    return tuple(hosts)

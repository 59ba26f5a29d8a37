"""The configs we write (pair, fleet render): a document of the schema `config` reads,
checked by `config.parse` before it is dumped, and dumped by PyYAML's safe dumper — so no
value can break the file's structure and every file we write loads on its host.

SPIs are written in hex as `ip xfrm state` shows them, lists of names on one line.
"""

import yaml

from sysrq_appliance import config


class Spi(int):
    """An SPI, written in hex."""


class Names(list):
    """A list of names, written on one line: allow: [sync, remount, reboot]."""


# libyaml's emitter: the pure-Python one takes seconds for a fleet's thousand configs.
_Dumper = type("_Dumper", (getattr(yaml, "CSafeDumper", yaml.SafeDumper),), {})


_Dumper.add_representer(Spi, lambda dumper, spi: dumper.represent_scalar(
    "tag:yaml.org,2002:int", f"{spi:#010x}"))
_Dumper.add_representer(Names, lambda dumper, names: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", names, flow_style=True))


def peer(name, address, spi_in, spi_out, key_file, password_file=None, allow=None):
    """One entry of `peers:` (password_file and allow only in a sender's config)."""
    entry = {"name": name, "address": address, "spi_in": Spi(spi_in),
             "spi_out": Spi(spi_out), "key_file": key_file}
    if password_file is not None:
        entry["password_file"] = password_file
    if allow is not None:
        entry["allow"] = Names(allow)
    return entry


def document(role, local, peers, algorithm, port, password_file=None, allow=None,
             groups=()):
    """A whole config: a target has its password_file and allow, a sender its groups."""
    sysrq = {"port": port}
    if role == "target":
        sysrq.update(password_file=password_file, allow=Names(allow))
    doc = {"role": role, "local": local, "peers": list(peers),
           "ipsec": {"algorithm": algorithm}, "sysrq": sysrq}
    if groups:
        doc["groups"] = {name: Names(members) for name, members in groups}
    return doc


def render(doc, path, by):
    """The file's bytes, after `config.parse` took the document (InputError if not)."""
    config.parse(doc, path)
    return (f"# sysrq-appliance {doc['role']} config, written by 'sysrq-appliance {by}'.\n"
            "# See sysrq-appliance(8) for every field.\n"
            + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
            ).encode()

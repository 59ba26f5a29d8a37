"""Every host's half of a fleet, from an inventory and the secrets it already has. Pure but
for the random numbers of what is new (the generators are arguments).

A half mirrors /etc/sysrq-appliance on its host:

    admin host:  appliance.yaml  keys/TARGET.key  passwords/TARGET   (one of each per target)
    target:      appliance.yaml  keys/ADMIN.key   password           (one key per admin host)

Each (admin host, target) pair is one tunnel of its own: two SPIs and two keys. xt_SYSRQ keeps
one password per target, so every admin host gets a copy of the target's one password.
"""

import secrets
from dataclasses import dataclass, field

from sysrq_appliance import configdoc, esp_keys, password
from sysrq_appliance.config import SPI_MAX, SPI_MIN


@dataclass(frozen=True)
class Tunnel:
    to_target: int                                  # SPI of the SA admin host -> target
    to_admin: int                                   # SPI of the SA target -> admin host
    keys: esp_keys.KeyPair = field(repr=False)      # as the target sees them


@dataclass(frozen=True)
class Material:
    passwords: dict = field(default_factory=dict, repr=False)   # target -> password bytes
    tunnels: dict = field(default_factory=dict)                 # (admin, target) -> Tunnel


def new_spi(taken):
    while True:
        spi = secrets.randbelow(SPI_MAX - SPI_MIN + 1) + SPI_MIN
        if spi not in taken:
            return spi


def complete(inv, known, new_keys=esp_keys.generate, new_password=password.generate,
             spi=new_spi):
    """The material `inv` needs: what `known` has for its hosts, the rest made new. SPIs stay
    unique across the whole fleet (a kept one that repeats another is made new)."""
    passwords = {t.name: known.passwords.get(t.name) or new_password() for t in inv.targets}
    pairs = [(a.name, t.name) for t in inv.targets for a in inv.admins]
    tunnels, taken = {}, set()
    for pair in pairs:            # first what is kept, so that nothing new takes its SPIs
        tunnel = known.tunnels.get(pair)
        if tunnel and tunnel.to_target != tunnel.to_admin \
                and not {tunnel.to_target, tunnel.to_admin} & taken:
            tunnels[pair] = tunnel
            taken.update((tunnel.to_target, tunnel.to_admin))
    for pair in pairs:
        if pair not in tunnels:
            to_target = spi(taken)
            taken.add(to_target)
            to_admin = spi(taken)
            taken.add(to_admin)
            tunnels[pair] = Tunnel(to_target, to_admin, new_keys(inv.algorithm))
    return Material(passwords, tunnels)


def render(inv, material, by="fleet render"):
    """(admin halves, target halves): each {host name: {path in the half: bytes}}."""
    etc = inv.etc_dir
    admins, targets = {}, {}
    for t in inv.targets:
        half = {"password": material.passwords[t.name]}
        peers = []
        for a in inv.admins:
            tunnel = material.tunnels[a.name, t.name]
            peers.append(configdoc.peer(a.name, a.address, tunnel.to_target, tunnel.to_admin,
                                        f"{etc}/keys/{a.name}.key"))
            half[f"keys/{a.name}.key"] = esp_keys.render(tunnel.keys, a.name, inv.algorithm)
        doc = configdoc.document("target", t.address, peers, inv.algorithm, inv.port,
                                 f"{etc}/password", t.allow)
        half["appliance.yaml"] = configdoc.render(doc, f"{t.name}/appliance.yaml", by)
        targets[t.name] = half
    for a in inv.admins:
        half, peers = {}, []
        for t in inv.targets:
            tunnel = material.tunnels[a.name, t.name]
            peers.append(configdoc.peer(t.name, t.address, tunnel.to_admin, tunnel.to_target,
                                        f"{etc}/keys/{t.name}.key",
                                        f"{etc}/passwords/{t.name}", t.allow))
            half[f"keys/{t.name}.key"] = esp_keys.render(tunnel.keys.swapped(), t.name,
                                                         inv.algorithm)
            half[f"passwords/{t.name}"] = material.passwords[t.name]
        doc = configdoc.document("sender", a.address, peers, inv.algorithm, inv.port,
                                 groups=inv.groups)
        half["appliance.yaml"] = configdoc.render(doc, f"{a.name}/appliance.yaml", by)
        admins[a.name] = half
    return admins, targets

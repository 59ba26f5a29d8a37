"""Config -> desired kernel state. Pure: no I/O, so every rule here is unit-tested.

Selectors are narrow on purpose: only the trigger (UDP to the SysRq port) and its
confirmation (ICMP port-unreachable) travel in our tunnel. Every other packet between the
two hosts flows exactly as before, so a wrong key can never cut an admin off a server.
"""

import ipaddress
import zlib
from dataclasses import dataclass, field

from sysrq_appliance import xfrm
from sysrq_appliance.firewall import ChainSpec, PeerRule

# ICMP "port unreachable", as xfrm selectors carry it: type in sport, code in dport.
PORT_UNREACHABLE = {4: (xfrm.IPPROTO_ICMP, 3, 3), 6: (xfrm.IPPROTO_ICMPV6, 1, 4)}


@dataclass(frozen=True)
class Desired:
    states: tuple[xfrm.State, ...]
    policies: tuple[xfrm.Policy, ...]
    chain: ChainSpec | None = None          # target only
    password: bytes | None = field(default=None, repr=False)   # target only
    sysrq_mask: int | None = None           # target only
    module_hash: str | None = None          # target only
    # The state `down` drives towards: nothing of ours, kernel.sysrq as it was before us.
    nothing: bool = False


NOTHING = Desired((), (), nothing=True)


def reqids(peers):
    """A stable reqid of ours per peer name: REQID_BASE + 16 bits, collisions probed."""
    names = sorted(p.name for p in peers)
    if len(names) > 0x10000:
        raise ValueError(f"{len(names)} peers do not fit in 16 bits of reqid")
    taken, result = set(), {}
    for name in names:
        low = zlib.crc32(name.encode()) & 0xFFFF
        while low in taken:
            low = (low + 1) & 0xFFFF
        taken.add(low)
        result[name] = xfrm.REQID_BASE | low
    return result


def algorithms(algorithm, key):
    """Keyword arguments of xfrm.State for one direction's key."""
    if algorithm == "rfc4106(gcm(aes))":
        return {"aead": xfrm.Algorithm(algorithm, key, 128)}
    if algorithm == "cbc(aes)+hmac(sha256)":
        return {"crypt": xfrm.Algorithm("cbc(aes)", key[:-32]),
                "auth": xfrm.Algorithm("hmac(sha256)", key[-32:], 128)}
    raise ValueError(algorithm)


def _policy(direction, src, dst, selector_proto, reqid):
    proto, sport, dport = selector_proto
    return xfrm.Policy(xfrm.Selector(src, dst, proto, sport, dport), direction,
                       xfrm.Template(src, dst, reqid))


def plan(cfg, keys, password=None, sysrq_target="SYSRQ"):
    """The state the kernel should hold for `cfg`; `keys` maps peer name -> KeyPair."""
    family = ipaddress.ip_address(cfg.local).version
    trigger = (xfrm.IPPROTO_UDP, None, cfg.port)
    answer = PORT_UNREACHABLE[family]
    states, policies = [], []
    ids = reqids(cfg.peers)
    for peer in cfg.peers:
        reqid, pair = ids[peer.name], keys[peer.name]
        states.append(xfrm.State(peer.address, cfg.local, peer.spi_in, reqid,
                                 **algorithms(cfg.algorithm, pair.inbound)))
        states.append(xfrm.State(cfg.local, peer.address, peer.spi_out, reqid,
                                 **algorithms(cfg.algorithm, pair.outbound)))
        # The trigger flows sender -> target, the answer target -> sender.
        inbound, outbound = (trigger, answer) if cfg.role == "target" else (answer, trigger)
        policies.append(_policy("in", peer.address, cfg.local, inbound, reqid))
        policies.append(_policy("out", cfg.local, peer.address, outbound, reqid))
    if cfg.role != "target":
        return Desired(tuple(states), tuple(policies))
    chain = ChainSpec(family, tuple(PeerRule(p.address, cfg.local, cfg.port, p.mac)
                                    for p in cfg.peers),
                      cfg.port, cfg.drop_other, sysrq_target)
    return Desired(tuple(states), tuple(policies), chain, password, cfg.sysrq_mask, cfg.hash)

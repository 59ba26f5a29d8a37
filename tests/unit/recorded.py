"""Configs, desired states and recorded observations for the engine's unit tests.

An observation is a plain value (observe.Observed); these build the ones a kernel would
return in the situations the tests name, without a kernel.
"""

import dataclasses

from sysrq_appliance import config, esp_keys, firewall, plan, xfrm
from sysrq_appliance.observe import Observed

TARGET, SENDER = "10.10.25.7", "10.10.25.1"
PASSWORD = b"correct-horse-battery"
NO_TRAFFIC = xfrm.StateCounters(0, 0, 0, 0, 0)


def peer(name, address, spi_in, spi_out, role="target"):
    entry = {"name": name, "address": address, "spi_in": spi_in, "spi_out": spi_out,
             "key_file": f"/k/{name}.key"}
    if role == "sender":
        entry["password_file"] = f"/k/{name}.pw"
    return entry


def target_config(*peers, local=TARGET, **sysrq):
    peers = peers or (peer("admin1", SENDER, 0x5A000101, 0x5A000102),)
    return config.parse({"role": "target", "local": local, "peers": list(peers),
                         "sysrq": sysrq})


def sender_config(*peers):
    peers = peers or (peer("web1", TARGET, 0x5A000102, 0x5A000101, "sender"),)
    return config.parse({"role": "sender", "local": SENDER, "peers": list(peers)})


def keys_for(cfg, seed=1):
    """A fixed, distinct key pair per peer (36 bytes: AES-128-GCM + salt)."""
    return {p.name: esp_keys.KeyPair(bytes([seed + i]) * 36, bytes([seed + i + 100]) * 36)
            for i, p in enumerate(cfg.peers)}


def desired(cfg, seed=1, target="ACCEPT"):
    secret = PASSWORD if cfg.role == "target" else None
    return plan.plan(cfg, keys_for(cfg, seed), secret, target)


def chain_as_saved(spec, jumps=1, first=True):
    """Our chain as `iptables-save` would show it after a correct install of `spec`."""
    lines = tuple(firewall.render(spec))
    return firewall.ObservedChain(spec.family, lines, tuple((0, 0) for _ in lines), first, jumps)


def in_sync(want, **changes):
    """What the kernel holds when `want` is fully applied; `changes` override fields."""
    chains = {4: None, 6: None}
    if want.chain is not None:
        chains[want.chain.family] = chain_as_saved(want.chain)
    target = want.password is not None
    observed = Observed(
        states=tuple((s, NO_TRAFFIC) for s in want.states), policies=want.policies,
        chains=chains, module_loaded=target, kernel_password=want.password,
        sysrq_mask=want.sysrq_mask if target else 1, module_hash=want.module_hash)
    return dataclasses.replace(observed, **changes)


def nothing(**changes):
    """A host where nothing of ours is installed (kernel.sysrq at its default 1)."""
    observed = Observed(states=(), policies=(), chains={4: None, 6: None},
                        module_loaded=False, kernel_password=None, sysrq_mask=1)
    return dataclasses.replace(observed, **changes)

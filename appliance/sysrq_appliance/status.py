"""`status`: what of ours the kernel holds, its counters, and how it differs from the config."""

import json
import secrets
from dataclasses import dataclass

from sysrq_appliance import controller, firewall, plan, system, sysrq

# `status` exits with this when the kernel differs from the config, so a monitor can tell
# drift (4) from a status that could not be read (1) or bad input (2).
EXIT_DRIFT = 4


@dataclass(frozen=True)
class HostFacts:
    """What status shows of a target beyond our kernel objects."""
    xtables_addons: tuple | None          # (major, minor) installed, None if unknown
    legacy_chain_present: bool            # our chain in the legacy tables (nft in use)


def report(ctx, sock, backend):
    """A JSON-ready dict; never contains a secret."""
    desired = controller.desired_state(ctx)
    observed = controller.observe(ctx, sock, backend)
    drift = [c.describe() for c in controller.changes(ctx, desired, observed)]
    host = None
    if ctx.cfg.role == "target":
        host = HostFacts(system.xtables_addons_version(),
                         backend.name == firewall.NFT and firewall.legacy_chain_present())
    return summarize(ctx.cfg, desired, observed, drift, host, backend.name, ctx.with_sa)


def summarize(cfg, desired, observed, drift, host, backend_name, with_sa=True):
    """Pure: the report of `observed` against `desired` (drift: the changes' lines)."""
    states = {(s.dst, s.spi): (s, c) for s, c in observed.states}
    policies = {(p.selector, p.dir) for p in observed.policies}
    chain = observed.chains.get(desired.chain.family) if desired.chain else None
    rule_counters = _rule_counters(desired.chain, chain)
    reqids = plan.reqids(cfg.peers)
    policies_by_reqid = {}
    for p in desired.policies:
        policies_by_reqid.setdefault(p.template.reqid, []).append(p)
    peers = []
    for peer in cfg.peers:
        sas = {}
        for direction, src, dst, spi in (("in", peer.address, cfg.local, peer.spi_in),
                                         ("out", cfg.local, peer.address, peer.spi_out)):
            found = states.get((dst, spi))
            sas[direction] = {"spi": f"{spi:#010x}", "present": found is not None}
            if found:
                counters = found[1]
                sas[direction].update(bytes=counters.bytes, packets=counters.packets,
                                      replay_errors=counters.replay,
                                      integrity_errors=counters.integrity_failed)
        wanted = policies_by_reqid[reqids[peer.name]]
        entry = {"name": peer.name, "address": peer.address, "sas": sas,
                 "policies": {p.dir: (p.selector, p.dir) in policies for p in wanted}}
        if cfg.role == "target":
            entry["rule"] = rule_counters.get(peer.address, {"present": False})
            entry["probe"] = rule_counters.get(("probe", peer.address), {"present": False})
        peers.append(entry)
    result = {"role": cfg.role, "config": cfg.path, "peers": peers, "drift": drift,
              "in_sync": not drift, "esp": _esp_summary(peers, with_sa)}
    if cfg.role == "target":
        version = host.xtables_addons
        password_set = (observed.kernel_password is not None
                        and secrets.compare_digest(observed.kernel_password, desired.password))
        result.update(
            backend=backend_name,
            module={"loaded": observed.module_loaded,
                    "hash": observed.module_hash,
                    "xtables_addons": ".".join(map(str, version)) if version else None},
            password_set=password_set,
            armed=_armed(observed, desired, chain, peers, password_set, with_sa),
            kernel_sysrq={"value": observed.sysrq_mask,
                          "allows": (None if observed.sysrq_mask is None else
                                     sysrq.names_for(observed.sysrq_mask)),
                          "wanted": desired.sysrq_mask},
            drop_rule=rule_counters.get("drop", {"present": False}),
            legacy_rules_while_nft=host.legacy_chain_present)
    return result


def _esp_summary(peers, with_sa):
    """One phrase for the SAs as a whole: what is there, never what was meant to be."""
    if not with_sa:
        return "not managed (--without-esp)"
    present = [sa["present"] for peer in peers for sa in peer["sas"].values()]
    if all(present):
        return f"all {len(present)} SAs present"
    if not any(present):
        return f"no SA present (0 of {len(present)})"
    return f"{sum(present)} of {len(present)} SAs present"


def _armed(observed, desired, chain, peers, password_set, with_sa):
    """What the re-apply timer's `apply` would repair, part by part: the target half of the
    health check (`check` on the admin host proves the path through the tunnel)."""
    parts = {
        "module": observed.module_loaded,
        "password": password_set,
        "chain": firewall.mismatch(chain, desired.chain) is None,
        "tunnel": all(all(p["policies"].values()) and
                      (not with_sa or all(sa["present"] for sa in p["sas"].values()))
                      for p in peers),
    }
    return {**parts, "all": all(parts.values())}


def _rule_counters(spec, chain):
    """peer address, ("probe", peer address) or "drop" -> {present, packets}, from our
    chain's rules as read back."""
    if spec is None or chain is None:
        return {}
    packets = {rule: counted for rule, (counted, _bytes) in zip(chain.rules, chain.counters)}
    wanted = [(rule.peer, (rule, spec.target)) for rule in spec.rules]
    wanted += [(("probe", rule.peer), firewall.ProbeRule(rule)) for rule in spec.rules]
    if spec.drop_other:
        wanted.append(("drop", firewall.DropRule(spec.port)))
    return {key: {"present": value in packets, "packets": packets.get(value, 0)}
            for key, value in wanted}


def render_text(result):
    lines = [f"role: {result['role']} ({result['config']})"]
    if result["role"] == "target":
        m = result["module"]
        loaded = f"loaded, hash {m['hash'] or 'unknown'}" if m["loaded"] else "not loaded"
        lines.append(f"xt_SYSRQ: {loaded}, xtables-addons {m['xtables_addons'] or 'unknown'}")
        lines.append(f"password set: {'yes' if result['password_set'] else 'no'}")
        armed = result["armed"]
        missing = [part for part in ("module", "password", "chain", "tunnel") if not armed[part]]
        lines.append("armed: " + ("yes (module, password, chain and tunnel as configured)"
                                  if armed["all"] else f"NO: {', '.join(missing)} not as "
                                  "configured (run 'sysrq-appliance apply')"))
        k = result["kernel_sysrq"]
        now = ("unknown (no /proc/sys/kernel/sysrq)" if k["value"] is None else
               f"{k['value']} ({', '.join(k['allows']) or 'off'})")
        lines.append(f"kernel.sysrq: {now}; config wants {k['wanted']}")
        lines.append(f"firewall backend: {result['backend']}; other packets to the port "
                     f"dropped: {result['drop_rule'].get('packets', 0)}")
        if result["legacy_rules_while_nft"]:
            lines.append("WARNING: our chain exists in the legacy tables while iptables uses "
                         "nf_tables")
    lines.append(f"ESP: {result['esp']}")
    for peer in result["peers"]:
        sas = ", ".join(
            f"{d} {sa['spi']} " + (f"{sa['packets']} pkts {sa['bytes']} B, errors "
                                   f"{sa['replay_errors']}/{sa['integrity_errors']}"
                                   if sa["present"] else "MISSING")
            for d, sa in peer["sas"].items())
        pols = ", ".join(f"{d} {'ok' if ok else 'MISSING'}" for d, ok in peer["policies"].items())
        line = f"peer {peer['name']} ({peer['address']}): SA {sas}; policy {pols}"
        if "rule" in peer:
            rule = peer["rule"]
            line += (f"; rule: {rule['packets']} request(s) reached xt_SYSRQ" if rule["present"]
                     else "; rule MISSING")
            probe = peer["probe"]
            line += (f"; probe: {probe['packets']} answered" if probe["present"]
                     else "; probe rule MISSING")
        lines.append(line)
    if result["drift"]:
        lines.append("drift from the config (run 'sysrq-appliance apply'):")
        lines += [f"  {d}" for d in result["drift"]]
    else:
        lines.append("in sync with the config")
    return "\n".join(lines)


def render_json(result):
    return json.dumps(result, indent=2, sort_keys=True)


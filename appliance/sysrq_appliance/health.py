"""`check` on the admin host: is each target's rescue path armed? Proven without firing it.

The probe is a UDP datagram with no payload, sent like a request: from our tunnel address,
on a socket that only sends through our SA to the target (sender.connect). The target's
chain rejects it, ahead of the SYSRQ rule, with ICMP port-unreachable (firewall.ProbeRule),
which comes back through the tunnel as a confirmation does: the socket reports
ECONNREFUSED. An answer proves both SAs and both policy pairs, the target's chain and its
jump, and the policy match; xt_SYSRQ never sees the probe (no SysRq function fires, nothing
is written to the target's kernel log). What only the target knows (xt_SYSRQ loaded, its
password equal to the stored one) its own `status` tells ("armed").

Every target is probed at once: one socket each, one wait for all. Results render as a
table, JSON, or Prometheus' text format for node_exporter's textfile collector.
"""

import time
from dataclasses import asdict, dataclass

from sysrq_appliance.errors import ApplianceError, InputError

PROBE = b""     # no request is empty (firewall.PROBE_LENGTH)
METRICS_LIMIT = 1 << 20    # bytes of an earlier metrics file we read back


@dataclass(frozen=True)
class Result:
    target: str
    address: str
    up: bool
    seconds: float | None     # round trip, when up
    reason: str = ""          # why not, when down


def select_peers(cfg, targets, everything):
    """The peers to probe: TARGET... (names or addresses), or all of them."""
    if cfg.role != "sender":
        raise InputError(f"{cfg.path}: role: 'check' probes targets from a sender config "
                         "(role: sender); on a target, 'status' says whether it is armed")
    if targets and everything:
        raise InputError("check: give TARGET... or --all, not both")
    if not targets:
        return list(cfg.peers)
    chosen = []
    for target in targets:
        peer = cfg.find_peer(target)
        if peer not in chosen:
            chosen.append(peer)
    return chosen


def probe(cfg, peers, wait, clock=time.monotonic):
    """Probe every peer at once; a Result each, in the order given."""
    from sysrq_appliance import plan, sender
    reqids = plan.reqids(cfg.peers)
    results, pending = {}, {}
    start = clock()
    try:
        for peer in peers:
            try:
                sock = sender.connect(cfg.local, peer.address, cfg.port, reqids[peer.name])
            except sender.PlaintextRefused:
                results[peer.name] = _down(peer, "this host has no ESP SA of ours to it; run "
                                                 "'sysrq-appliance apply' here")
                continue
            except ApplianceError as exc:
                results[peer.name] = _down(peer, str(exc))
                continue
            pending[sock] = peer
            try:
                sock.send(PROBE)
            except ConnectionRefusedError:   # an earlier answer, queued already
                results[peer.name] = Result(peer.name, peer.address, True, clock() - start)
                del pending[sock]
                sock.close()
            except OSError as exc:
                results[peer.name] = _down(peer, f"send failed: {exc.strerror}")
                del pending[sock]
                sock.close()

        def settle(sock, answer):
            peer = pending.pop(sock)
            sock.close()
            if answer is True:
                results[peer.name] = Result(peer.name, peer.address, True, clock() - start)
            elif answer is not False:   # an error ended it; no answer is said below
                results[peer.name] = _down(peer, answer.strerror)

        sender.await_answers(dict.fromkeys(pending, start + wait), settle, clock)
    finally:
        for sock in pending:
            sock.close()
    for peer in peers:
        results.setdefault(peer.name, _down(
            peer, f"no answer within {wait:g} s (tunnel or target down, our chain or SAs "
                  "missing there, keys that differ, or a target without the probe rule)"))
    return [results[peer.name] for peer in peers]


def _down(peer, reason):
    return Result(peer.name, peer.address, False, None, reason)


# ---------------------------------------------------------------------------- rendering

def render_table(results):
    width = max([len("TARGET")] + [len(r.target) for r in results])
    awidth = max([len("ADDRESS")] + [len(r.address) for r in results])
    lines = [f"{'TARGET':{width}}  {'ADDRESS':{awidth}}  STATE  ROUND TRIP / WHY NOT"]
    for r in results:
        tail = f"{r.seconds * 1000:.0f} ms" if r.up else r.reason
        lines.append(f"{r.target:{width}}  {r.address:{awidth}}  {'up' if r.up else 'DOWN':5}  "
                     f"{tail}")
    return "\n".join(lines)


def as_json(results, checked_at):
    return {"checked_at": round(checked_at, 3), "all_up": all(r.up for r in results),
            "targets": [asdict(r) for r in results]}


def metrics_text(results, checked_at, previous=None):
    """Prometheus text format (prometheus_client): up, round trip, last success per target
    and when this check ran. `previous` is the earlier file's text: a target that is down
    keeps the last success it had there."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    last = _last_successes(previous)
    registry = CollectorRegistry()
    labels = ["target", "address"]
    up = Gauge("sysrq_appliance_target_up", "1 when the target answered the probe through "
               "the tunnel (its rescue path is armed), else 0", labels, registry=registry)
    trip = Gauge("sysrq_appliance_probe_round_trip_seconds", "Seconds from the probe to the "
                 "target's answer, for targets that answered", labels, registry=registry)
    success = Gauge("sysrq_appliance_last_success_timestamp_seconds", "When the target last "
                    "answered a probe (Unix time)", labels, registry=registry)
    checked = Gauge("sysrq_appliance_check_timestamp_seconds", "When this check ran (Unix "
                    "time)", registry=registry)
    checked.set(checked_at)
    for r in results:
        up.labels(r.target, r.address).set(1 if r.up else 0)
        if r.up:
            trip.labels(r.target, r.address).set(r.seconds)
            success.labels(r.target, r.address).set(checked_at)
        elif (r.target, r.address) in last:
            success.labels(r.target, r.address).set(last[r.target, r.address])
    return generate_latest(registry)


def _last_successes(text):
    """(target, address) -> last success time, from an earlier metrics file (or nothing)."""
    if not text:
        return {}
    from prometheus_client.parser import text_string_to_metric_families
    found = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "sysrq_appliance_last_success_timestamp_seconds":
                    found[sample.labels.get("target"), sample.labels.get("address")] = \
                        sample.value
    except ValueError:   # damaged: the next success starts it again
        return {}
    return found


def check_metrics_path(path):
    """--metrics: a *.prom file (node_exporter's textfile collector reads only those) in an
    existing directory."""
    import os
    if not path.endswith(".prom"):
        raise InputError(f"--metrics: {path} does not end in .prom; node_exporter's textfile "
                         "collector reads only *.prom files")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"--metrics: {directory} is not a directory; create it, or give "
                         "node_exporter's textfile directory")
    return path


def write_metrics(path, results, checked_at):
    """Replace `path` atomically (0644: node_exporter runs as another user)."""
    from sysrq_appliance import secretfile
    previous = None
    try:
        previous = secretfile.read_small(path, METRICS_LIMIT, follow=False).decode(
            "utf-8", "replace")
    except OSError:
        pass
    secretfile.write_public(path, metrics_text(results, checked_at, previous), "--metrics")


# ------------------------------------------------------------- the target's half: status

ARMED_PARTS = ("module", "password", "chain", "tunnel")


def status_metrics_text(result, checked_at):
    """Prometheus text format of a `status` report (status.summarize): whether this host's
    kernel matches its config, and on a target whether each part of the rescue path is
    armed (the parts the re-apply timer repairs)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    registry = CollectorRegistry()
    Gauge("sysrq_appliance_in_sync", "1 when this host's kernel matches its config (status "
          "shows no drift), else 0", registry=registry).set(1 if result["in_sync"] else 0)
    Gauge("sysrq_appliance_status_timestamp_seconds", "When status last read this host's "
          "kernel (Unix time)", registry=registry).set(checked_at)
    if result["role"] == "target":
        armed = result["armed"]
        Gauge("sysrq_appliance_target_armed", "1 when xt_SYSRQ is loaded with the stored "
              "password and our chain and tunnel are as configured, else 0",
              registry=registry).set(1 if armed["all"] else 0)
        part = Gauge("sysrq_appliance_target_armed_part", "1 when this part of the rescue "
                     "path is as configured, else 0", ["part"], registry=registry)
        for name in ARMED_PARTS:
            part.labels(name).set(1 if armed[name] else 0)
    return generate_latest(registry)


def write_status_metrics(path, result, checked_at):
    from sysrq_appliance import secretfile
    secretfile.write_public(path, status_metrics_text(result, checked_at), "--metrics")

"""`send`: the sender's use-case, from a target and keys (or a rescue sequence) to
"confirmed" or not. The CLI parses the arguments and prints what this reports.

Here live what a request is (wire format, hashed or plain), which sequence number it
carries (reserved before it leaves so none is ever used twice; with --dry-run only
predicted, nothing recorded), and what "confirmed" means: the target's ICMP answer came
back through the tunnel. Keys after which a machine cannot answer (b, o, c) count as done
once sent.
"""

import time
from dataclasses import dataclass

from sysrq_appliance import sequences, sysrq
from sysrq_appliance.errors import ApplianceError, InputError, excerpt
from sysrq_appliance.seqno import DEFAULT_STATE_DIR


@dataclass(frozen=True)
class Options:
    count: int = 1                   # identical copies of each request
    wait: float = 1.0                # seconds to wait for each confirmation
    dry_run: bool = False            # print the request instead of sending it
    seqno: int | None = None         # a fixed first sequence number (reproducible dry runs)
    salt: str | None = None          # a fixed salt (reproducible dry runs)
    state_dir: str = DEFAULT_STATE_DIR


def check_request(keys, sequence, salt):
    """What can be refused before the config is read."""
    if (keys is None) == (sequence is None):
        raise InputError("send: give KEYS or --sequence NAME, not both or neither "
                         "(see 'sysrq-appliance send --help')")
    if salt is not None:
        from sysrq_appliance import wire
        wire.check_salt(salt)


def select(cfg, target, group=None, everyone=False):
    """The peers a send goes to: TARGET (a name or address, or several joined by commas),
    the members of --group NAME, or --all of them."""
    if cfg.role != "sender":
        raise InputError(f"{cfg.path}: role: 'send' needs a sender config (role: sender)")
    if everyone:
        return cfg.peers
    if group is not None:
        return tuple(cfg.find_peer(name) for name in cfg.find_group(group))
    peers = []
    for name in target.split(","):
        if not name.strip():
            raise InputError(f"TARGET: {excerpt(target)} has an empty name; separate names "
                             "with single commas, e.g. web1,web2")
        peer = cfg.find_peer(name.strip())
        if peer not in peers:
            peers.append(peer)
    return tuple(peers)


def send(cfg, target, keys, sequence, options, report=print, warn=print, group=None,
         everyone=False):
    """Send KEYS (or each step of SEQUENCE) to TARGET (or to the group, or to every peer);
    `report` gets one line per request or wait, `warn` the plain wire's warning.

    To one target: returns how many requests that could have confirmed were not. To
    several (a list, --group, --all): each step goes to all of them before its wait, one
    line per target as answers arrive, then a summary; returns how many targets were not
    done, and raises ApplianceError if nothing could be sent to any."""
    from sysrq_appliance import password
    peers = select(cfg, target, group, everyone)
    what = "KEYS" if sequence is None else f"--sequence {sequence}"
    if sequence is None:
        steps = (sequences.Step(keys=sysrq.check_keys(keys)),)
    else:
        steps = sequences.resolve(sequence, dict(cfg.sequences))
    for peer in peers:
        sequences.refuse_masked(steps, peer.allow, peer.name, what)
    many = len(peers) > 1 or group is not None or everyone
    if sequence is not None:
        on = (f"group {group} ({len(peers)} targets)" if group is not None
              else f"all {len(peers)} targets" if everyone else ", ".join(p.name for p in peers))
        report(f"{sequence} on {on}: " + ", ".join(
            s.keys or f"wait {s.seconds:g} s" for s in steps))
    secrets = {peer.name: password.load(peer.password_file,
                                        f"{cfg.path}: peers[{peer.name}].password_file")
               for peer in peers}
    if many:
        return _send_to_many(cfg, peers, secrets, steps, sequence is not None, options,
                             report, warn)
    peer, secret = peers[0], secrets[peers[0].name]
    seqno = options.seqno
    unconfirmed = 0
    # A dry run reserves nothing; it numbers the steps as a real run would, on a clock that
    # moves on by each wait.
    preview = (_Preview(options.state_dir, peer.name)
               if options.dry_run and seqno is None and cfg.wire != "plain" else None)
    for number, step in enumerate(steps, 1):
        prefix = f"  {number}/{len(steps)} " if sequence else ""
        if not step.keys:
            report(f"{prefix}wait {step.seconds:g} s")
            if preview:
                preview.clock += step.seconds
            elif not options.dry_run:
                time.sleep(step.seconds)
            continue
        line, confirmed = _send_request(cfg, peer, secret, step.keys,
                                        preview.next() if preview else seqno, options, warn)
        report(prefix + line)
        unconfirmed += not confirmed
        seqno = seqno + 1 if seqno is not None else None
    return unconfirmed


def _send_to_many(cfg, peers, secrets, steps, is_sequence, options, report, warn):
    """Every step to every peer (one select loop per step), then the summary line."""
    state = {peer.name: "confirmed" for peer in peers}     # the worst outcome so far
    previews = {peer.name: _Preview(options.state_dir, peer.name) for peer in peers} \
        if options.dry_run and options.seqno is None and cfg.wire != "plain" else None
    seqno = options.seqno
    for number, step in enumerate(steps, 1):
        prefix = f"  {number}/{len(steps)} " if is_sequence else ""
        if not step.keys:
            report(f"{prefix}wait {step.seconds:g} s")
            if previews:
                for preview in previews.values():
                    preview.clock += step.seconds
            elif not options.dry_run:
                time.sleep(step.seconds)
            continue
        for peer, outcome in _fan_out(cfg, peers, secrets, step.keys, seqno, previews,
                                      options, warn, lambda line: report(prefix + line)):
            if _RANK[outcome] > _RANK[state[peer.name]]:
                state[peer.name] = outcome
        seqno = seqno + 1 if seqno is not None else None
    if options.dry_run:
        return 0
    report(summary(peers, state))
    failed = [name for name, outcome in state.items() if _RANK[outcome] >= _RANK["not confirmed"]]
    if failed and all(outcome == "not sent" for outcome in state.values()):
        raise ApplianceError(f"nothing was sent to any of the {len(peers)} targets (see the "
                             "lines above)")
    return len(failed)


# From best to worst: what a target's line in the summary says.
_RANK = {"confirmed": 0, "sent, cannot confirm": 1, "not confirmed": 2, "not sent": 3}


def summary(peers, state):
    """'summary: 3 targets: 2 confirmed, 1 not confirmed (web3)' (pure)."""
    parts = []
    for outcome in _RANK:
        names = [p.name for p in peers if state[p.name] == outcome]
        if not names:
            continue
        listed = ""
        if _RANK[outcome] >= _RANK["not confirmed"]:
            listed = " (" + ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") + ")"
        parts.append(f"{len(names)} {outcome}{listed}")
    return f"summary: {len(peers)} targets: " + ", ".join(parts)


def _fan_out(cfg, peers, secrets, keys, fixed_seqno, previews, options, warn, report):
    """One request to each peer, all sent before any wait; yields (peer, outcome) and
    reports each target's line as its answer arrives."""
    from sysrq_appliance import seqno, wire
    if cfg.wire == "plain":
        warn(wire.PLAIN_WARNING)
        numbers = {}
    elif previews:
        numbers = {peer.name: previews[peer.name].next() for peer in peers}
    elif options.dry_run:
        numbers = {peer.name: fixed_seqno for peer in peers}
    else:   # reserved (or the chosen one recorded) before anything leaves
        numbers = seqno.reserve_many(options.state_dir, [p.name for p in peers], time.time(),
                                     fixed_seqno)
    payloads = {}
    for peer in peers:
        if cfg.wire == "plain":
            payloads[peer.name] = wire.build_plain(keys, secrets[peer.name])
        else:
            salt = wire.new_salt() if options.salt is None else options.salt
            payloads[peer.name] = wire.build(keys, numbers[peer.name], salt, peer.address,
                                             secrets[peer.name], cfg.hash).encode()
    if options.dry_run:
        for peer in peers:
            shown = (f"{keys}<password>" if cfg.wire == "plain"
                     else payloads[peer.name].decode())
            report(f"would send to {peer.name} ({peer.address}:{cfg.port}) from "
                   f"{cfg.local}: {shown}")
            yield peer, "confirmed"
        return
    from sysrq_appliance import plan, sender
    reqids = plan.reqids(cfg.peers)
    requests = [sender.Request(p.address, payloads[p.name], reqids[p.name]) for p in peers]
    outcomes = {}

    def arrived(i, result):
        line, outcome = _describe(peers[i], keys, result, options.wait)
        outcomes[i] = outcome
        report(line)

    sender.send_many(requests, cfg.local, cfg.port, options.count, options.wait, arrived)
    for i, peer in enumerate(peers):
        yield peer, outcomes[i]


def _describe(peer, keys, result, wait):
    """(the line, the outcome) of one target's request."""
    if isinstance(result, ApplianceError):
        return f"not sent: {peer.name}: {result}", "not sent"
    if result.confirmed:
        return (f"confirmed: {peer.name} accepted {keys!r} "
                f"(answer through the tunnel after {result.seconds * 1000:.0f} ms)",
                "confirmed")
    silent = "".join(k for k in keys if k in sysrq.NO_CONFIRMATION_KEYS)
    if silent:
        return (f"sent, not confirmed: {peer.name} cannot answer after {silent!r}",
                "sent, cannot confirm")
    return (f"sent, not confirmed: no answer from {peer.name} within {wait:g} s "
            "(wrong password, replay, tunnel down, or key outside its kernel.sysrq mask)",
            "not confirmed")


class _Preview:
    """The numbers a real run would reserve, without reserving them."""

    def __init__(self, state_dir, target):
        from sysrq_appliance import seqno
        self.clock, self.last = time.time(), seqno.read_last(state_dir, target)

    def next(self):
        from sysrq_appliance import seqno
        self.last = seqno.next_seqno(self.clock, self.last)
        return self.last


def _send_request(cfg, peer, secret, keys, fixed_seqno, options, warn):
    """Build, send and report one request: (the line to print, confirmed or need not be)."""
    from sysrq_appliance import seqno, wire
    if cfg.wire == "plain":
        warn(wire.PLAIN_WARNING)
        payload, shown = wire.build_plain(keys, secret), f"{keys}<password>"
    else:
        number = fixed_seqno
        if number is None:   # a dry run always has one (_Preview)
            number = seqno.reserve(options.state_dir, peer.name, time.time())
        elif not options.dry_run:
            seqno.record(options.state_dir, peer.name, number)  # later sends must stay above it
        salt = wire.new_salt() if options.salt is None else options.salt
        payload = wire.build(keys, number, salt, peer.address, secret, cfg.hash).encode()
        shown = payload.decode()
    if options.dry_run:
        return (f"would send to {peer.name} ({peer.address}:{cfg.port}) from {cfg.local}: "
                f"{shown}", True)
    from sysrq_appliance import plan, sender
    reqid = plan.reqids(cfg.peers)[peer.name]
    result = sender.send(payload, cfg.local, peer.address, cfg.port, options.count,
                         options.wait, reqid=reqid)
    line, outcome = _describe(peer, keys, result, options.wait)
    return line, outcome != "not confirmed"

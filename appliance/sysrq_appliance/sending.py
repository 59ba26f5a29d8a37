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
class Sent:
    """What became of one request that left (or failed to leave): for the audit trail."""
    keys: str
    seqno: int | None     # None on the plain wire
    outcome: str          # confirmed | sent (cannot confirm) | not-confirmed | not-sent
    #                       (dry-run: nothing left, never audited)
    detail: str           # the line reported (or the error)
    target: str | None = None     # to several targets: the peer's name (else: as asked)
    address: str | None = None    # ... and its address


class NothingSent(ApplianceError):
    """To several targets, none was sent to: each one's not-sent is in the trail already."""


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


def send(cfg, target, keys, sequence, options, report=print, warn=print, audit=None,
         found=None, group=None, everyone=False):
    """Send KEYS (or each step of SEQUENCE) to TARGET (or to the group, or to every peer);
    `report` gets one line per request or wait, `warn` the plain wire's warning, `audit` a
    Sent for each request that was really sent or failed to be (not in a dry run), `found`
    the peer once it is known (one target).

    To one target: returns how many requests that could have confirmed were not. To
    several (a list, --group, --all): each step goes to all of them before its wait, one
    line per target as answers arrive, then a summary; a target whose step was not sent
    gets no later step (as one target's send stops there) and counts as not sent. Returns
    how many targets were not done, and raises NothingSent if no request to any left."""
    from sysrq_appliance import password
    peers = select(cfg, target, group, everyone)
    many = len(peers) > 1 or group is not None or everyone
    if found and not many:
        found(peers[0])
    what = "KEYS" if sequence is None else f"--sequence {sequence}"
    if sequence is None:
        steps = (sequences.Step(keys=sysrq.check_keys(keys)),)
    else:
        steps = sequences.resolve(sequence, dict(cfg.sequences))
    for peer in peers:
        sequences.refuse_masked(steps, peer.allow, peer.name, what)
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
                             report, warn, audit)
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
        sent = _send_request(cfg, peer, secret, step.keys,
                             preview.next() if preview else seqno, options, warn, audit)
        if audit and not options.dry_run:
            audit(sent)   # before the caller sees it: hanging up never escapes the trail
        report(prefix + sent.detail)
        unconfirmed += sent.outcome == "not-confirmed"
        seqno = seqno + 1 if seqno is not None else None
    return unconfirmed


def _send_to_many(cfg, peers, secrets, steps, is_sequence, options, report, warn, audit):
    """Every step to every peer still in the sequence (one wait for all per step), then the
    summary line."""
    tally = Tally(peers)
    previews = {peer.name: _Preview(options.state_dir, peer.name) for peer in peers} \
        if options.dry_run and options.seqno is None and cfg.wire != "plain" else None
    seqno = options.seqno
    for number, step in enumerate(steps, 1):
        going = tally.going()
        if not going:
            break   # nobody left to send to: no later wait either
        prefix = f"  {number}/{len(steps)} " if is_sequence else ""
        if not step.keys:
            report(f"{prefix}wait {step.seconds:g} s")
            if previews:
                for preview in previews.values():
                    preview.clock += step.seconds
            elif not options.dry_run:
                time.sleep(step.seconds)
            continue
        dropped = [peer for peer, outcome in
                   _fan_out(cfg, going, secrets, step.keys, seqno, previews, options, warn,
                            lambda line: report(prefix + line), audit)
                   if tally.record(peer.name, outcome)]
        if any(later.keys for later in steps[number:]):
            for peer in dropped:
                report(f"{prefix}{peer.name}: the rest of the sequence is skipped for it "
                       "(this step was not sent)")
        seqno = seqno + 1 if seqno is not None else None
    if options.dry_run:
        return 0
    report(summary(peers, tally.state))
    if not tally.anything_left:
        raise NothingSent(f"nothing was sent to any of the {len(peers)} targets (see the "
                          "lines above)")
    return len(tally.not_done())


class Tally:
    """To several targets: each one's worst outcome so far, who is still in the sequence,
    and whether any request left at all (pure bookkeeping).

    A target whose step was not sent gets none of the later steps, as a send to one target
    stops there: `u` and `b` of reboot-safely never go where `s` did not."""

    def __init__(self, peers):
        self.peers = tuple(peers)
        self.state = {peer.name: "confirmed" for peer in self.peers}
        self.dropped = set()
        self.anything_left = False

    def going(self):
        """The peers the next step goes to."""
        return [peer for peer in self.peers if peer.name not in self.dropped]

    def record(self, name, outcome):
        """Note one target's outcome of a step; True if it leaves the sequence now."""
        if _RANK[outcome] > _RANK[self.state[name]]:
            self.state[name] = outcome
        if outcome != "not-sent":
            self.anything_left = True
            return False
        self.dropped.add(name)
        return True

    def not_done(self):
        return [name for name, outcome in self.state.items()
                if _RANK[outcome] >= _RANK["not-confirmed"]]


# From best to worst (Sent.outcome), and what a target's part of the summary says.
_RANK = {"confirmed": 0, "sent": 1, "not-confirmed": 2, "not-sent": 3}
_SUMMARY = {"confirmed": "confirmed", "sent": "sent, cannot confirm",
            "not-confirmed": "not confirmed", "not-sent": "not sent"}


def summary(peers, state):
    """'summary: 3 targets: 2 confirmed, 1 not confirmed (web3)' (pure; `state`: each
    peer's worst Sent.outcome)."""
    parts = []
    for outcome in _RANK:
        names = [p.name for p in peers if state[p.name] == outcome]
        if not names:
            continue
        listed = ""
        if _RANK[outcome] >= _RANK["not-confirmed"]:
            listed = " (" + ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") + ")"
        parts.append(f"{len(names)} {_SUMMARY[outcome]}{listed}")
    return f"summary: {len(peers)} targets: " + ", ".join(parts)


def _fan_out(cfg, peers, secrets, keys, fixed_seqno, previews, options, warn, report, audit):
    """One request to each peer, all sent before any wait; yields (peer, outcome) and
    reports (and audits) each target's line as its answer arrives."""
    from sysrq_appliance import seqno
    if cfg.wire == "plain":
        numbers = dict.fromkeys((p.name for p in peers), None)
    elif previews:
        numbers = {peer.name: previews[peer.name].next() for peer in peers}
    elif options.dry_run:
        numbers = {peer.name: fixed_seqno for peer in peers}
    else:   # reserved (or the chosen one recorded) before anything leaves
        numbers = seqno.reserve_many(options.state_dir, [p.name for p in peers], time.time(),
                                     fixed_seqno)
    built = {peer.name: _build(cfg, peer, secrets[peer.name], keys, numbers[peer.name],
                               options, warn if peer is peers[0] else None)
             for peer in peers}
    if options.dry_run:
        for peer in peers:
            report(_would_send(cfg, peer, built[peer.name][1]))
            yield peer, "confirmed"
        return
    from sysrq_appliance import plan, sender
    reqids = plan.reqids(cfg.peers)
    requests = [sender.Request(p.address, built[p.name][0], reqids[p.name]) for p in peers]
    outcomes = {}

    def arrived(i, result):
        peer = peers[i]
        sent = _describe(peer, keys, numbers[peer.name], result, options.wait)
        sent = Sent(sent.keys, sent.seqno, sent.outcome, sent.detail, peer.name, peer.address)
        if audit:
            audit(sent)   # before the caller sees it, as for one target
        outcomes[i] = sent.outcome
        report(sent.detail if sent.outcome != "not-sent" else f"not sent: {peer.name}: "
               f"{sent.detail}")

    try:
        sender.send_many(requests, cfg.local, cfg.port, options.count, options.wait, arrived)
    except BaseException as exc:   # ^C, SIGTERM, a bug: the requests may have left
        if audit:
            for i, peer in enumerate(peers):
                if i not in outcomes:
                    audit(Sent(keys, numbers[peer.name], "sent", "interrupted before any "
                               f"answer ({type(exc).__name__}); the request may have left",
                               peer.name, peer.address))
        raise
    for i, peer in enumerate(peers):
        yield peer, outcomes[i]


def _build(cfg, peer, secret, keys, number, options, warn):
    """(the payload, how a dry run shows it) of one request; `warn` gets the plain wire's
    warning."""
    from sysrq_appliance import wire
    if cfg.wire == "plain":
        if warn:
            warn(wire.PLAIN_WARNING)
        return wire.build_plain(keys, secret), f"{keys}<password>"
    salt = wire.new_salt() if options.salt is None else options.salt
    payload = wire.build(keys, number, salt, peer.address, secret, cfg.hash).encode()
    return payload, payload.decode()


def _would_send(cfg, peer, shown):
    return f"would send to {peer.name} ({peer.address}:{cfg.port}) from {cfg.local}: {shown}"


def _describe(peer, keys, number, result, wait):
    """The Sent of one target's request from its sender.Outcome (or the ApplianceError
    that kept it from leaving)."""
    if isinstance(result, ApplianceError):
        return Sent(keys, number, "not-sent", str(result))
    if result.confirmed:
        return Sent(keys, number, "confirmed", f"confirmed: {peer.name} accepted {keys!r} "
                    f"(answer through the tunnel after {result.seconds * 1000:.0f} ms)")
    silent = "".join(k for k in keys if k in sysrq.NO_CONFIRMATION_KEYS)
    if silent:
        return Sent(keys, number, "sent",
                    f"sent, not confirmed: {peer.name} cannot answer after {silent!r}")
    return Sent(keys, number, "not-confirmed",
                f"sent, not confirmed: no answer from {peer.name} within {wait:g} s "
                "(wrong password, replay, tunnel down, or key outside its kernel.sysrq mask)")


class _Preview:
    """The numbers a real run would reserve, without reserving them."""

    def __init__(self, state_dir, target):
        from sysrq_appliance import seqno
        self.clock, self.last = time.time(), seqno.read_last(state_dir, target)

    def next(self):
        from sysrq_appliance import seqno
        self.last = seqno.next_seqno(self.clock, self.last)
        return self.last


def _send_request(cfg, peer, secret, keys, fixed_seqno, options, warn, audit):
    """Build, send and report one request: its Sent (the line to print, the outcome)."""
    from sysrq_appliance import seqno
    number = None
    if cfg.wire != "plain":
        number = fixed_seqno
        if number is None:   # a dry run always has one (_Preview)
            number = seqno.reserve(options.state_dir, peer.name, time.time())
        elif not options.dry_run:
            seqno.record(options.state_dir, peer.name, number)  # later sends must stay above it
    payload, shown = _build(cfg, peer, secret, keys, number, options, warn)
    if options.dry_run:
        return Sent(keys, number, "dry-run", _would_send(cfg, peer, shown))
    from sysrq_appliance import plan, sender
    reqid = plan.reqids(cfg.peers)[peer.name]
    try:
        outcome = sender.send(payload, cfg.local, peer.address, cfg.port, options.count,
                              options.wait, reqid=reqid)
    except ApplianceError as exc:
        if audit:   # the request never left: the trail says so with its number
            audit(Sent(keys, number, "not-sent", str(exc)))
        raise
    except BaseException as exc:   # ^C, SIGTERM, a bug: the request may have left
        if audit:
            audit(Sent(keys, number, "sent", "interrupted before any answer "
                       f"({type(exc).__name__}); the request may have left"))
        raise
    return _describe(peer, keys, number, outcome, options.wait)

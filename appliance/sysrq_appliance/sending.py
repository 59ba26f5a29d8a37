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
from sysrq_appliance.errors import ApplianceError, InputError
from sysrq_appliance.seqno import DEFAULT_STATE_DIR


@dataclass(frozen=True)
class Sent:
    """What became of one request that left (or failed to leave): for the audit trail."""
    keys: str
    seqno: int | None     # None on the plain wire
    outcome: str          # confirmed | sent (cannot confirm) | not-confirmed | not-sent
    #                       (dry-run: nothing left, never audited)
    detail: str           # the line reported (or the error)


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


def send(cfg, target, keys, sequence, options, report=print, warn=print, audit=None,
         found=None):
    """Send KEYS (or each step of SEQUENCE) to TARGET; `report` gets one line per request
    or wait, `warn` the plain wire's warning, `audit` a Sent for each request that was
    really sent or failed to be (not in a dry run), `found` the peer once it is known.
    Returns how many requests that could have confirmed were not."""
    from sysrq_appliance import password
    if cfg.role != "sender":
        raise InputError(f"{cfg.path}: role: 'send' needs a sender config (role: sender)")
    peer = cfg.find_peer(target)
    if found:
        found(peer)
    if sequence is None:
        steps = (sequences.Step(keys=sysrq.check_keys(keys)),)
        sequences.refuse_masked(steps, peer.allow, peer.name, "KEYS")
    else:
        steps = sequences.resolve(sequence, dict(cfg.sequences))
        sequences.refuse_masked(steps, peer.allow, peer.name, f"--sequence {sequence}")
        report(f"{sequence} on {peer.name}: " + ", ".join(
            s.keys or f"wait {s.seconds:g} s" for s in steps))
    secret = password.load(peer.password_file, f"{cfg.path}: peers[{peer.name}].password_file")
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
    from sysrq_appliance import seqno, wire
    number = None
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
        return Sent(keys, number, "dry-run",
                    f"would send to {peer.name} ({peer.address}:{cfg.port}) from {cfg.local}: "
                    f"{shown}")
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
    if outcome.confirmed:
        return Sent(keys, number, "confirmed", f"confirmed: {peer.name} accepted {keys!r} "
                    f"(answer through the tunnel after {outcome.seconds * 1000:.0f} ms)")
    silent = "".join(k for k in keys if k in sysrq.NO_CONFIRMATION_KEYS)
    if silent:
        return Sent(keys, number, "sent",
                    f"sent, not confirmed: {peer.name} cannot answer after {silent!r}")
    return Sent(keys, number, "not-confirmed",
                f"sent, not confirmed: no answer from {peer.name} within {options.wait:g} s "
                "(wrong password, replay, tunnel down, or key outside its kernel.sysrq mask)")

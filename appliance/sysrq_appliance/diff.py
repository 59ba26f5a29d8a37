"""desired state + observed state -> the ordered changes that make one into the other.

Pure: no I/O, no sockets, no clock. Every change is a `Change(resource, op, want, old)`
record that knows how to say itself in one line (`describe`) and as the commands a reader
already knows (`commands`: `ip xfrm ...`, `iptables ...`, `sysctl -w ...`). The executors
turn them into kernel calls; `plan` only prints them.

Resources, in the order apply arms them (the trigger, our chain, last):

    module         xt_SYSRQ loaded (want: the hash it loads with)
    password       xt_SYSRQ's password parameter (want/old: Secret)
    kernel.sysrq   the SysRq bitmask (want/old: int)
    sa             an ESP SA (want/old: xfrm.State)
    policy         an xfrm policy (want/old: xfrm.Policy)
    chain          our firewall chain and its jump, per family (want: ChainSpec,
                   old: ObservedChain)
    esp-floors     where deleted outbound SAs' counters ended (down only; want: {spi: oseq})

`down` is the same diff towards `plan.NOTHING`, ordered the other way round.
"""

import secrets
from dataclasses import dataclass, field

from sysrq_appliance import firewall, xfrm

FAMILIES = (4, 6)
ADD, UPDATE, DELETE = "add", "update", "delete"

# Safe order: a rank per (resource, op); equal ranks keep the order they were found in.
# apply: module -> password -> kernel.sysrq -> SAs -> policies -> stale SAs -> chain.
APPLY_ORDER = {("module", ADD): 0, ("password", ADD): 1, ("password", UPDATE): 1,
               ("kernel.sysrq", UPDATE): 2, ("sa", ADD): 3, ("sa", UPDATE): 3,
               ("policy", ADD): 4, ("policy", UPDATE): 4, ("policy", DELETE): 5,
               ("sa", DELETE): 6, ("chain", ADD): 7, ("chain", UPDATE): 7,
               ("chain", DELETE): 7}
# down: disarm the trigger first, then the tunnel, then the host settings.
DOWN_ORDER = {("chain", DELETE): 0, ("policy", DELETE): 1, ("sa", DELETE): 2,
              ("esp-floors", UPDATE): 3, ("kernel.sysrq", DELETE): 4, ("module", DELETE): 5}

SYSFS_PASSWORD = "/sys/module/xt_SYSRQ/parameters/password"


@dataclass(frozen=True)
class Secret:
    """A password in a change record: compared in constant time, never printed."""
    value: bytes = field(repr=False)

    def __eq__(self, other):
        return isinstance(other, Secret) and secrets.compare_digest(self.value, other.value)

    def __hash__(self):
        return 0


@dataclass(frozen=True)
class Change:
    resource: str
    op: str            # add | update | delete
    want: object       # the value wanted (None for delete)
    old: object        # the value observed (None for add)

    def describe(self) -> str:
        return _DESCRIBE[self.resource](self)

    def commands(self) -> tuple[str, ...]:
        """The same change as commands a reader knows; secrets shown as <placeholders>."""
        return _COMMANDS[self.resource](self)


# ------------------------------------------------------------------------------ the diff

def diff(desired, observed, with_sa=True):
    """The changes that turn `observed` into `desired` (plan.NOTHING: remove ours), in the
    safe order. `with_sa=False` leaves SAs alone (kernels without ESP)."""
    if desired.nothing:
        changes = _teardown(observed)
        return sorted(changes, key=lambda c: DOWN_ORDER[c.resource, c.op])
    changes = []
    if desired.password is not None:     # target: the host settings xt_SYSRQ needs
        changes += _module(desired, observed)
    if with_sa:
        changes += _states(desired.states, [s for s, _ in observed.states])
    changes += _policies(desired.policies, observed.policies)
    changes += _chains(desired.chain, observed.chains)
    return sorted(changes, key=lambda c: APPLY_ORDER[c.resource, c.op])


def _module(desired, observed):
    changes = []
    if not observed.module_loaded:
        changes.append(Change("module", ADD, desired.module_hash, None))
    old = observed.kernel_password
    if old is None or not secrets.compare_digest(old, desired.password):
        changes.append(Change("password", ADD if old is None else UPDATE,
                              Secret(desired.password), None if old is None else Secret(old)))
    current = observed.sysrq_mask
    if current is not None and current != desired.sysrq_mask:
        changes.append(Change("kernel.sysrq", UPDATE, desired.sysrq_mask, current))
    return changes


def _states(desired, observed):
    """SAs are keyed by (dst, spi), as the kernel keys them."""
    return _keyed("sa", desired, observed, lambda s: (s.dst, s.spi))


def _policies(desired, observed):
    """Policies are keyed by (selector, dir), as the kernel keys them."""
    return _keyed("policy", desired, observed, lambda p: (p.selector, p.dir))


def _keyed(resource, desired, observed, key):
    """Add what is missing, update what differs, delete what is not wanted, by `key`."""
    have = {key(o): o for o in observed}
    wanted = {key(w) for w in desired}
    changes = []
    for want in desired:
        old = have.get(key(want))
        if old is None:
            changes.append(Change(resource, ADD, want, None))
        elif old != want:
            changes.append(Change(resource, UPDATE, want, old))
    changes += [Change(resource, DELETE, None, old) for old in observed
                if key(old) not in wanted]
    return changes


def _chains(spec, chains):
    changes = []
    for family in FAMILIES:
        old = chains.get(family)
        if spec is not None and spec.family == family:
            if firewall.mismatch(old, spec) is not None:
                changes.append(Change("chain", ADD if old is None else UPDATE, spec, old))
        elif old is not None:
            changes.append(Change("chain", DELETE, None, old))
    return changes


def _teardown(observed):
    """Everything of ours, removed; what the host had before us, put back."""
    changes = [Change("chain", DELETE, None, chain) for chain in
               (observed.chains.get(f) for f in FAMILIES) if chain is not None]
    changes += [Change("policy", DELETE, None, p) for p in observed.policies]
    changes += [Change("sa", DELETE, None, s) for s, _ in observed.states]
    if observed.states:
        changes.append(Change("esp-floors", UPDATE, {s.spi: s.oseq for s, _ in observed.states},
                              None))
    if observed.saved_sysrq is not None:
        changes.append(Change("kernel.sysrq", DELETE, None, observed.saved_sysrq))
    if observed.module_loaded and observed.our_password_loaded:
        changes.append(Change("module", DELETE, None, None))
    return changes


def undoable(change) -> bool:
    """Does a failed apply undo this change? Not a chain rewrite (the chain is the last step
    and was ours already) nor anything `down` does (it never re-arms)."""
    return (change.resource, change.op) in {
        ("module", ADD), ("password", ADD), ("password", UPDATE), ("kernel.sysrq", UPDATE),
        ("sa", ADD), ("sa", UPDATE), ("sa", DELETE), ("policy", ADD), ("policy", UPDATE),
        ("policy", DELETE), ("chain", ADD)}


def undo_plan(done):
    """The changes a failed apply takes back, newest first."""
    return [c for c in reversed(done) if undoable(c)]


# ------------------------------------------------------------------------------ one line each

def _describe_state_key(s):
    return f"SA {s.src} -> {s.dst} spi {s.spi:#010x}"


def _describe_policy_key(p):
    sel = p.selector
    what = {xfrm.IPPROTO_UDP: f"udp dport {sel.dport}",
            xfrm.IPPROTO_ICMP: f"icmp type {sel.sport} code {sel.dport}",
            xfrm.IPPROTO_ICMPV6: f"icmpv6 type {sel.sport} code {sel.dport}"}.get(sel.proto, "")
    return f"policy {p.dir} {sel.src} -> {sel.dst} {what}".rstrip()


def _subject(c):
    return c.want if c.want is not None else c.old


_DESCRIBE = {
    "module": lambda c: ("load kernel module xt_SYSRQ" if c.op == ADD else
                         "clear the xt_SYSRQ password and unload the module if unused"),
    "password": lambda c: "set the xt_SYSRQ password",
    "kernel.sysrq": lambda c: (f"set kernel.sysrq {c.old} -> {c.want}" if c.op == UPDATE else
                               f"restore kernel.sysrq {c.old}"),
    "sa": lambda c: f"{c.op} {_describe_state_key(_subject(c))}",
    "policy": lambda c: f"{c.op} {_describe_policy_key(_subject(c))}",
    "chain": lambda c: (f"remove IPv{c.old.family} chain {firewall.CHAIN}" if c.op == DELETE else
                        f"install IPv{c.want.family} chain {firewall.CHAIN} "
                        f"({len(c.want.rules)} peer rule(s))"),
    "esp-floors": lambda c: "remember where the deleted SAs' sequence numbers ended",
}


# ------------------------------------------------------------------------------ as commands

def _sa_commands(c):
    if c.op == ADD:
        return (xfrm.ip_state_command("add", c.want),)
    if c.op == UPDATE:   # the kernel cannot rekey in place (see XfrmSocket.update_state)
        return xfrm.ip_state_command("delete", c.old), xfrm.ip_state_command("add", c.want)
    return (xfrm.ip_state_command("delete", c.old),)


def _policy_commands(c):
    return (xfrm.ip_policy_command({ADD: "add", UPDATE: "update", DELETE: "delete"}[c.op],
                           _subject(c)),)


def _chain_commands(c):
    family = (c.want or c.old).family
    script = (firewall.remove_script(c.old) if c.op == DELETE
              else firewall.install_script(c.want, c.old))
    return firewall.as_commands(family, script)


_COMMANDS = {
    "module": lambda c: ((f"modprobe xt_SYSRQ hash={c.want}" if c.want != "sha1"
                          else "modprobe xt_SYSRQ",) if c.op == ADD else
                         (f"printf '%s' '<random>' > {SYSFS_PASSWORD}", "modprobe -r xt_SYSRQ")),
    "password": lambda c: (f"printf '%s' '<password>' > {SYSFS_PASSWORD}",),
    "kernel.sysrq": lambda c: (f"sysctl -w kernel.sysrq={c.want if c.op == UPDATE else c.old}",),
    "sa": _sa_commands,
    "policy": _policy_commands,
    "chain": _chain_commands,
    "esp-floors": lambda c: (),
}

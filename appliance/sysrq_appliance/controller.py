"""observe -> diff -> apply: make the kernel hold exactly what the config asks, nothing else.

Order on apply: module -> password -> kernel.sysrq -> SAs -> policies -> rules (the
trigger is armed last). `down` goes the other way. A failed apply undoes its own changes.
"""

import dataclasses
import secrets
import sys
from dataclasses import dataclass, field

from sysrq_appliance import esp_keys, firewall, password, plan, sa_sequence, system, xfrm
from sysrq_appliance.errors import ApplianceError
from sysrq_appliance.transaction import Step, execute

FAMILIES = (4, 6)


@dataclass(frozen=True)
class Context:
    cfg: object                      # config.Config, or None when `down` runs without one
    paths: system.Paths
    backend_name: str = "auto"
    sysrq_target: str = "SYSRQ"      # tests on hosts without xt_SYSRQ use another target
    with_sa: bool = True             # False only on kernels without ESP (tests)


@dataclass(frozen=True)
class Observed:
    states: tuple                    # ((State, StateCounters), ...) of ours
    policies: tuple                  # (Policy, ...) of ours
    chains: dict                     # family -> ObservedChain | None
    module_loaded: bool
    kernel_password: bytes | None = field(repr=False)
    sysrq_mask: int | None


def desired_state(ctx):
    cfg = ctx.cfg
    keys = {p.name: esp_keys.load(p.key_file, f"{cfg.path}: key_file", cfg.algorithm)
            for p in cfg.peers}
    secret = None
    if cfg.role == "target":
        secret = password.load(cfg.password_file, f"{cfg.path}: sysrq.password_file")
    return plan.plan(cfg, keys, secret, ctx.sysrq_target)


def observe(ctx, sock, backend):
    states = tuple((s, c) for s, c in sock.dump_states() if xfrm.is_ours(s.reqid))
    policies = tuple(p for p in sock.dump_policies()
                     if p.template is not None and xfrm.is_ours(p.template.reqid))
    loaded = system.module_loaded(ctx.paths)
    kernel_password = None
    if loaded:
        try:
            kernel_password = password.read_kernel_password(ctx.paths.sysfs_dir)
        except OSError:
            kernel_password = None
    return Observed(states, policies, {f: backend.observe(f) for f in FAMILIES}, loaded,
                    kernel_password, system.read_sysrq(ctx.paths))


# ------------------------------------------------------------------------------ diff

def changes(ctx, desired, observed, sock, backend):
    """The steps that turn `observed` into `desired`, in the safe order."""
    steps = []
    if ctx.cfg.role == "target":
        steps += _module_steps(ctx, desired, observed)
    if ctx.with_sa:
        steps += _sa_steps(sock, desired.states, [s for s, _ in observed.states], ctx)
    steps += _policy_steps(sock, desired.policies, observed.policies)
    if ctx.with_sa:
        steps += _stale_sa_steps(sock, desired.states, [s for s, _ in observed.states])
    steps += _firewall_steps(backend, desired.chain, observed.chains)
    return steps


def _module_steps(ctx, desired, observed):
    paths, steps = ctx.paths, []
    if not observed.module_loaded:
        steps.append(Step("load kernel module xt_SYSRQ",
                          lambda: system.load_module(paths, desired.module_hash),
                          system.unload_module))
    else:
        loaded_hash = system.module_hash(paths)
        if loaded_hash and loaded_hash != desired.module_hash:
            raise ApplianceError(f"xt_SYSRQ is loaded with hash={loaded_hash} but "
                                 f"{ctx.cfg.path} says sysrq.hash: {desired.module_hash}; "
                                 "change one (the module reads hash only when it loads)")
    old = observed.kernel_password
    if old is None or not secrets.compare_digest(old, desired.password):
        steps.append(Step("set the xt_SYSRQ password",
                          lambda: password.write_kernel_password(desired.password,
                                                                 paths.sysfs_dir),
                          lambda: _restore_kernel_password(old, paths)))
    current = observed.sysrq_mask
    if current is not None and current != desired.sysrq_mask:
        steps.append(Step(f"set kernel.sysrq {current} -> {desired.sysrq_mask}",
                          lambda: _set_sysrq(paths, current, desired.sysrq_mask),
                          lambda: _unset_sysrq(paths, current)))
    return steps


def _restore_kernel_password(old, paths):
    if system.module_loaded(paths):
        # An empty password cannot be written back: a random one disables it just as well.
        password.write_kernel_password(old or password.generate(password.MAX_BYTES),
                                       paths.sysfs_dir)


def _set_sysrq(paths, current, mask):
    if system.saved_sysrq(paths) is None:
        system.save_sysrq(paths, current)   # the value before us, restored by `down`
    system.write_sysrq(paths, mask)


def _unset_sysrq(paths, previous):
    system.write_sysrq(paths, previous)
    if system.saved_sysrq(paths) == previous:
        system.forget_saved_sysrq(paths)


def _describe_state(s):
    return f"SA {s.src} -> {s.dst} spi {s.spi:#010x}"


def _describe_policy(p):
    sel = p.selector
    what = {xfrm.IPPROTO_UDP: f"udp dport {sel.dport}",
            xfrm.IPPROTO_ICMP: f"icmp type {sel.sport} code {sel.dport}",
            xfrm.IPPROTO_ICMPV6: f"icmpv6 type {sel.sport} code {sel.dport}"}.get(sel.proto, "")
    return f"policy {p.dir} {sel.src} -> {sel.dst} {what}".rstrip()


class _Numbering:
    """Outbound SAs added by one run get their counters continued (see sa_sequence),
    reserved for all of them at the first add: one write however many SAs."""

    def __init__(self, ctx, states):
        self.ctx, self.starts = ctx, None
        self.spis = [s.spi for s in states if self.outbound(s)]

    def outbound(self, state):
        return state.src == self.ctx.cfg.local

    def __call__(self, state):
        if not self.outbound(state):
            return state
        if self.starts is None:
            self.starts = sa_sequence.Floors(self.ctx.paths.state_dir).allocate(self.spis)
        return dataclasses.replace(state, oseq=self.starts[state.spi])


def _sa_steps(sock, desired, observed, ctx):
    have = {(s.dst, s.spi): s for s in observed}
    changed = [(want, have.get((want.dst, want.spi))) for want in desired
               if have.get((want.dst, want.spi)) != want]
    numbered = _Numbering(ctx, [want for want, _ in changed])
    steps = []
    for want, old in changed:
        if old is None:
            steps.append(Step(f"add {_describe_state(want)}",
                              lambda w=want: sock.add_state(numbered(w)),
                              lambda w=want: sock.delete_state(w)))
        else:
            steps.append(Step(f"update {_describe_state(want)}",
                              lambda w=want: sock.update_state(numbered(w)),
                              lambda o=old: sock.update_state(o)))
    return steps


def _stale_sa_steps(sock, desired, observed):
    wanted = {(s.dst, s.spi) for s in desired}
    return [Step(f"delete {_describe_state(old)}", lambda o=old: sock.delete_state(o),
                 lambda o=old: sock.add_state(o))
            for old in observed if (old.dst, old.spi) not in wanted]


def _policy_steps(sock, desired, observed):
    have = {(p.selector, p.dir): p for p in observed}
    wanted = {(p.selector, p.dir) for p in desired}
    steps = []
    for want in desired:
        old = have.get((want.selector, want.dir))
        if old is None:
            steps.append(Step(f"add {_describe_policy(want)}", lambda w=want: sock.add_policy(w),
                              lambda w=want: sock.delete_policy(w)))
        elif old != want:
            steps.append(Step(f"update {_describe_policy(want)}",
                              lambda w=want: sock.update_policy(w),
                              lambda o=old: sock.update_policy(o)))
    for old in observed:
        if (old.selector, old.dir) not in wanted:
            steps.append(Step(f"delete {_describe_policy(old)}",
                              lambda o=old: sock.delete_policy(o),
                              lambda o=old: sock.add_policy(o)))
    return steps


def _firewall_steps(backend, spec, chains):
    steps = []
    for family in FAMILIES:
        observed = chains.get(family)
        if spec is not None and spec.family == family:
            if firewall.mismatch(observed, spec) is not None:
                # The last step of apply: its undo only matters if it was not there before.
                undo = (lambda f=family: backend.remove(f)) if observed is None else None
                steps.append(Step(f"install IPv{family} chain {firewall.CHAIN} "
                                  f"({len(spec.rules)} peer rule(s))",
                                  lambda s=spec: backend.install(s), undo))
        elif observed is not None:
            steps.append(Step(f"remove IPv{family} chain {firewall.CHAIN}",
                              lambda f=family: backend.remove(f)))
    return steps


# ------------------------------------------------------------------------------ verbs

def plan_changes(ctx, sock, backend, desired=None):
    return changes(ctx, desired or desired_state(ctx), observe(ctx, sock, backend), sock,
                   backend)


def apply(ctx, sock, backend, desired=None, report=print):
    observed = observe(ctx, sock, backend)
    sa_sequence.Floors(ctx.paths.state_dir).keep_ahead(
        {s.spi: s.oseq for s, _ in observed.states if s.src == ctx.cfg.local})
    steps = changes(ctx, desired or desired_state(ctx), observed, sock, backend)
    if not steps:
        report("nothing to change: the kernel matches the config")
        return 0
    report(f"applying {len(steps)} change(s):")
    execute(steps, report)
    return len(steps)


def down(ctx, sock, backend, report=print):
    """Remove everything of ours. Best effort, in reverse order: a failure is reported at
    the end, but does not re-arm what was already removed."""
    observed = observe(ctx, sock, backend)
    steps = [Step(f"remove IPv{f} chain {firewall.CHAIN}", lambda f=f: backend.remove(f))
             for f in FAMILIES if observed.chains.get(f) is not None]
    steps += [Step(f"delete {_describe_policy(p)}", lambda p=p: sock.delete_policy(p))
              for p in observed.policies]
    steps += [Step(f"delete {_describe_state(s)}", lambda s=s: sock.delete_state(s))
              for s, _ in observed.states]
    if observed.states:
        steps.append(Step("remember where the deleted SAs' sequence numbers ended",
                          lambda: sa_sequence.Floors(ctx.paths.state_dir).settle(
                              {s.spi: s.oseq for s, _ in observed.states})))
    saved = system.saved_sysrq(ctx.paths)
    if saved is not None:
        steps.append(Step(f"restore kernel.sysrq {saved}", lambda: _restore_sysrq(ctx.paths)))
    if _our_password_is_loaded(ctx, observed):
        steps.append(Step("clear the xt_SYSRQ password and unload the module if unused",
                          lambda: _scrub_module(ctx.paths)))
    if not steps:
        report("nothing of ours is installed")
        return 0
    errors = []
    for step in steps:
        try:
            step.do()
            report(f"  {step.description}")
        except Exception as exc:
            errors.append(f"{step.description}: {exc}")
    if errors:
        raise ApplianceError("down left something behind: " + "; ".join(errors))
    return len(steps)


def _our_password_is_loaded(ctx, observed):
    if not (observed.module_loaded and observed.kernel_password) or ctx.cfg is None \
            or ctx.cfg.role != "target":
        return False
    try:
        stored = password.load(ctx.cfg.password_file, "sysrq.password_file")
    except ApplianceError:
        return False
    return secrets.compare_digest(stored, observed.kernel_password)


def _restore_sysrq(paths):
    saved = system.saved_sysrq(paths)
    if system.read_sysrq(paths) is not None:
        system.write_sysrq(paths, saved)
    system.forget_saved_sysrq(paths)


def _scrub_module(paths):
    # Overwrite first: if someone else's rule keeps the module loaded, our password is gone.
    password.write_kernel_password(password.generate(password.MAX_BYTES), paths.sysfs_dir)
    system.unload_module()


def print_plan(steps, out=sys.stdout):
    if not steps:
        print("nothing to change: the kernel matches the config", file=out)
        return
    print(f"apply would make {len(steps)} change(s):", file=out)
    for step in steps:
        print(f"  {step.description}", file=out)

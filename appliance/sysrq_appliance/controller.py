"""config -> plan -> observe -> diff -> execute: make the kernel hold exactly what the
config asks, nothing else.

`plan` (desired state) and `diff` (the changes) are pure; `observe` reads the kernel and
the executors write it. A failed apply undoes its own changes; `down` is the same run
towards plan.NOTHING, best effort.
"""

import sys
from dataclasses import dataclass

from sysrq_appliance import diff, esp_keys, executors, password, plan, sa_sequence, system
from sysrq_appliance import observe as observation
from sysrq_appliance.errors import ApplianceError
from sysrq_appliance.secretfile import TrustedDirs
from sysrq_appliance.transaction import StepFailed, execute, report_done


@dataclass(frozen=True)
class Context:
    cfg: object                      # config.Config, or None when `down` runs without one
    paths: system.Paths
    backend_name: str = "auto"
    sysrq_target: str = "SYSRQ"      # tests on hosts without xt_SYSRQ use another target
    with_sa: bool = True             # False only on kernels without ESP (tests)


def desired_state(ctx):
    cfg = ctx.cfg
    trusted = TrustedDirs()   # the key files' directories checked once, not per file
    keys = {p.name: esp_keys.load(p.key_file, f"{cfg.path}: key_file", cfg.algorithm,
                                  trusted=trusted)
            for p in cfg.peers}
    secret = None
    if cfg.role == "target":
        secret = password.load(cfg.password_file, f"{cfg.path}: sysrq.password_file")
    return plan.plan(cfg, keys, secret, ctx.sysrq_target)


def observe(ctx, sock, backend, our_password=None):
    return observation.observe(ctx.paths, sock, backend, our_password)


def changes(ctx, desired, observed):
    """The changes that turn `observed` into `desired`, in the safe order (diff.diff),
    after refusing what no change can fix."""
    if desired.module_hash is not None and observed.module_hash \
            and observed.module_hash != desired.module_hash:
        raise ApplianceError(f"xt_SYSRQ is loaded with hash={observed.module_hash} but "
                             f"{ctx.cfg.path} says sysrq.hash: {desired.module_hash}; "
                             "change one (the module reads hash only when it loads)")
    return diff.diff(desired, observed, with_sa=ctx.with_sa)


def _steps(ctx, sock, backend, found, atomic=True):
    local = ctx.cfg.local if ctx.cfg is not None else None
    return executors.steps(found, executors.for_host(ctx.paths, sock, backend, local, found),
                           atomic)


# ------------------------------------------------------------------------------ verbs

def plan_changes(ctx, sock, backend, desired=None):
    desired = desired or desired_state(ctx)
    return changes(ctx, desired, observe(ctx, sock, backend))


def apply(ctx, sock, backend, desired=None, report=print):
    observed = observe(ctx, sock, backend)
    sa_sequence.Floors(ctx.paths.state_dir).keep_ahead(
        {s.spi: s.oseq for s, _ in observed.states if s.src == ctx.cfg.local})
    found = changes(ctx, desired or desired_state(ctx), observed)
    if not found:
        report("nothing to change: the kernel matches the config")
        return 0
    report(f"applying {len(found)} change(s):")
    execute(_steps(ctx, sock, backend, found), report)
    return len(found)


def down(ctx, sock, backend, report=print):
    """Remove everything of ours: execute(diff(nothing, observed)). Best effort, in reverse
    order: a failure is reported at the end, but does not re-arm what was already removed."""
    observed = observe(ctx, sock, backend, _stored_password(ctx))
    found = diff.diff(plan.NOTHING, observed)
    if not found:
        report("nothing of ours is installed")
        return 0
    errors = []
    for step in _steps(ctx, sock, backend, found, atomic=False):
        try:
            step.do()
            report_done(step, report)
        except StepFailed as exc:   # part of a batch: what took effect stays removed
            for line in exc.done:
                report(f"  {line}")
            errors += [f"{line}: {error}" for line, error in exc.failures]
        except Exception as exc:
            errors.append(f"{step.description}: {exc}")
    if errors:
        raise ApplianceError("down left something behind: " + "; ".join(errors))
    return len(found)


def _stored_password(ctx):
    """Our password, if this is a target whose password file can be read: `down` scrubs
    the kernel's password only when it is this one."""
    if ctx.cfg is None or ctx.cfg.role != "target":
        return None
    try:
        return password.load(ctx.cfg.password_file, "sysrq.password_file")
    except ApplianceError:
        return None


def print_plan(found, out=sys.stdout):
    """Each change, and under it the commands it stands for, as wg-quick prints them."""
    if not found:
        print("nothing to change: the kernel matches the config", file=out)
        return
    print(f"apply would make {len(found)} change(s):", file=out)
    for change in found:
        print(f"  {change.describe()}", file=out)
        for command in change.commands():
            print(f"    [#] {command}", file=out)

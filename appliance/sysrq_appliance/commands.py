"""The kernel-facing CLI verbs: apply, down, status, plan, doctor."""

import contextlib
import os
import sys
import time

from sysrq_appliance import (config, controller, firewall, healing, lock, sa_sequence, system,
                             xfrm)
from sysrq_appliance import doctor as health
from sysrq_appliance import status as status_report
from sysrq_appliance.errors import ApplianceError

FORCE_RISK = ("--force: installing the SYSRQ rule although doctor FAILs; with "
              "xtables-addons < 3.26 any request that reaches it panics this kernel")


def context(args, cfg):
    paths = system.Paths(sysfs_dir=args.sysfs_dir, sysctl=args.sysctl_path,
                         state_dir=args.state_dir)
    return controller.Context(cfg, paths, cfg.backend if cfg else "auto",
                              args.firewall_target, not args.without_esp)


def apply(args):
    cfg = config.load(args.config)
    ctx, desired = _prepared(args, cfg)
    with _kernel(args, ctx) as (sock, backend):
        _refuse_unless_healthy(args, cfg, ctx.paths)
        controller.apply(ctx, sock, backend, desired)
    note = healing.after_apply(args.config, args.state_dir)   # outside the lock: the unit's
    if note:                                                  # own apply takes it
        print(note)
    return 0


def plan(args):
    ctx, desired = _prepared(args, config.load(args.config))
    with _kernel(args, ctx, read_only=True) as (sock, backend):
        controller.print_plan(controller.plan_changes(ctx, sock, backend, desired))
    return 0


def status(args):
    from sysrq_appliance import health as metrics
    if args.metrics:
        metrics.check_metrics_path(args.metrics)
    ctx = context(args, config.load(args.config))
    with _kernel(args, ctx, read_only=True) as (sock, backend):
        result = status_report.report(ctx, sock, backend)
    if args.metrics:
        metrics.write_status_metrics(args.metrics, result, time.time())
    if not args.quiet:
        print(status_report.render_json(result) if args.json else status_report.render_text(result))
    return 0 if result["in_sync"] else status_report.EXIT_DRIFT


def down(args):
    if args.config == config.DEFAULT_PATH and not os.path.lexists(args.config):
        # Still remove whatever of ours is there (package removal, a lost config); but a
        # --config that names nothing is a typo, not a reason to tear everything down.
        cfg = None
    else:
        cfg = config.load(args.config)
    ctx = context(args, cfg)
    with _kernel(args, ctx) as (sock, backend):
        controller.down(ctx, sock, backend)
    return 0


def _prepared(args, cfg):
    """Every input of apply and plan (keys, password, ESP floors) read and validated before
    anything, the lock file included, is touched: bad input leaves the system as it was."""
    ctx = context(args, cfg)
    desired = controller.desired_state(ctx)
    sa_sequence.read_floors(sa_sequence.floors_path(ctx.paths.state_dir))
    return ctx, desired


@contextlib.contextmanager
def _kernel(args, ctx, read_only=False):
    """The firewall backend, the state lock (shared for readers) and an xfrm socket."""
    backend = firewall.get_backend(ctx.backend_name)
    with lock.held(ctx.paths.state_dir, args.command, shared=read_only), \
            xfrm.XfrmSocket() as sock:
        yield sock, backend


def doctor(args):
    checks = health.run_checks(args.config, context(args, None).paths,
                               with_sa=not args.without_esp)
    for check in checks:
        print(check)
    if checks and checks[0].name == "config" and checks[0].level == health.FAIL:
        return 2   # bad input, said in that one line; the host was not examined
    return 1 if health.failures(checks) else 0


def _refuse_unless_healthy(args, cfg, paths):
    if cfg.role != "target":
        return
    # The config is loaded and valid already. No ESP probe here: it needs a throwaway netns
    # (CAP_SYS_ADMIN in the unit), and a kernel without ESP makes the SA step fail clearly
    # and roll back anyway.
    failed = health.failures(health.host_checks(cfg, paths, with_sa=False))
    if failed and not args.force:
        raise ApplianceError(f"doctor FAILs, nothing changed: {failed[0]} "
                             "(run 'sysrq-appliance doctor'; 'apply --force' overrides)")
    if failed:
        print(FORCE_RISK, file=sys.stderr)

"""The kernel-facing CLI verbs: apply, down, status, plan, doctor."""

import os
import sys

from sysrq_appliance import (config, controller, doctor, firewall, healing, lock, sa_sequence,
                             status, system, xfrm)
from sysrq_appliance.errors import ApplianceError

FORCE_RISK = ("--force: installing the SYSRQ rule although doctor FAILs; with "
              "xtables-addons < 3.26 any request that reaches it panics this kernel")


def context(args, cfg):
    paths = system.Paths(sysfs_dir=args.sysfs_dir, sysctl=args.sysctl_path,
                         state_dir=args.state_dir)
    return controller.Context(cfg, paths, cfg.backend if cfg else "auto",
                              args.firewall_target, not args.without_esp)


def run(args):
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "down" and args.config == config.DEFAULT_PATH \
            and not os.path.lexists(args.config):
        # Still remove whatever of ours is there (package removal, a lost config); but a
        # --config that names nothing is a typo, not a reason to tear everything down.
        cfg = None
    else:
        cfg = config.load(args.config)
    ctx = context(args, cfg)
    desired = None
    if args.command in ("apply", "plan"):
        # Every input (keys, password, ESP floors) is read and validated before anything,
        # the lock file included, is touched: bad input leaves the system as it was.
        desired = controller.desired_state(ctx)
        sa_sequence.read_floors(sa_sequence.floors_path(ctx.paths.state_dir))
    backend = firewall.get_backend(ctx.backend_name)
    read_only = args.command in ("plan", "status")
    with lock.held(ctx.paths.state_dir, args.command, shared=read_only), \
            xfrm.XfrmSocket() as sock:
        if args.command == "plan":
            controller.print_plan(controller.plan_changes(ctx, sock, backend, desired))
        elif args.command == "status":
            result = status.report(ctx, sock, backend)
            print(status.render_json(result) if args.json else status.render_text(result))
        elif args.command == "apply":
            _refuse_unless_healthy(args, cfg, ctx.paths)
            controller.apply(ctx, sock, backend, desired)
        elif args.command == "down":
            controller.down(ctx, sock, backend)
    if args.command == "apply":   # outside the lock: the unit's own apply takes it
        note = healing.after_apply(args.config, args.state_dir)
        if note:
            print(note)
    return 0


def _doctor(args):
    checks = doctor.run_checks(args.config, context(args, None).paths,
                               with_sa=not args.without_esp)
    for check in checks:
        print(check)
    if checks and checks[0].name == "config" and checks[0].level == doctor.FAIL:
        return 2   # bad input, said in that one line; the host was not examined
    return 1 if doctor.failures(checks) else 0


def _refuse_unless_healthy(args, cfg, paths):
    if cfg.role != "target":
        return
    # The config is loaded and valid already. No ESP probe here: it needs a throwaway netns
    # (CAP_SYS_ADMIN in the unit), and a kernel without ESP makes the SA step fail clearly
    # and roll back anyway.
    failed = doctor.failures(doctor.host_checks(cfg, paths, with_sa=False))
    if failed and not args.force:
        raise ApplianceError(f"doctor FAILs, nothing changed: {failed[0]} "
                             "(run 'sysrq-appliance doctor'; 'apply --force' overrides)")
    if failed:
        print(FORCE_RISK, file=sys.stderr)

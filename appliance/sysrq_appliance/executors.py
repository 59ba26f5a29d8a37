"""One executor per kernel resource: it turns a `diff.Change` into kernel calls (`do`),
takes it back when a later change of the same apply fails (`undo`), and never touches
what is not ours (the xfrm socket and the firewall backends check before they write).

    module         ModuleExecutor     modprobe / modprobe -r
    password       ParameterExecutor  /sys/module/xt_SYSRQ/parameters/password
    kernel.sysrq   SysctlExecutor     /proc/sys/kernel/sysrq, and the value before us
    sa, policy,    XfrmExecutor       NETLINK_XFRM; outbound SA counters from sa_sequence
    esp-floors
    chain          FirewallExecutor   the firewall backend (one restore/commit per table)

`steps(changes, ...)` binds changes to their executors as transaction.Steps: one Step per
change, or one per run of changes an executor batches (`batches(change)`: many SAs or
policies added or deleted in a few sendmsg calls).
"""

import dataclasses

from sysrq_appliance import diff, password, sa_sequence, system
from sysrq_appliance.diff import ADD, DELETE, UPDATE
from sysrq_appliance.transaction import Step, StepFailed


class ModuleExecutor:
    resources = ("module",)

    def __init__(self, paths):
        self.paths = paths

    def do(self, change):
        if change.op == ADD:
            system.load_module(self.paths, change.want)
        else:
            # Overwrite first: if someone else's rule keeps the module loaded, ours is gone.
            password.write_kernel_password(password.generate(password.MAX_BYTES),
                                           self.paths.sysfs_dir)
            system.unload_module()

    def undo(self, change):
        system.unload_module()


class ParameterExecutor:
    """xt_SYSRQ's parameters; only the password is ever written (hash is read-only at
    runtime, seqno belongs to the module, debug would log digests)."""
    resources = ("password",)

    def __init__(self, paths):
        self.paths = paths

    def do(self, change):
        password.write_kernel_password(change.want.value, self.paths.sysfs_dir)

    def undo(self, change):
        if system.module_loaded(self.paths):
            # An empty password cannot be written back: a random one disables it as well.
            old = change.old.value if change.old is not None else None
            password.write_kernel_password(old or password.generate(password.MAX_BYTES),
                                           self.paths.sysfs_dir)


class SysctlExecutor:
    """kernel.sysrq; the value before our first change is kept for `down` to restore."""
    resources = ("kernel.sysrq",)

    def __init__(self, paths):
        self.paths = paths

    def do(self, change):
        paths = self.paths
        if change.op == UPDATE:
            if system.saved_sysrq(paths) is None:
                system.save_sysrq(paths, change.old)
            system.write_sysrq(paths, change.want)
        else:
            saved = system.saved_sysrq(paths)
            if system.read_sysrq(paths) is not None:
                system.write_sysrq(paths, saved)
            system.forget_saved_sysrq(paths)

    def undo(self, change):
        system.write_sysrq(self.paths, change.old)
        if system.saved_sysrq(self.paths) == change.old:
            system.forget_saved_sysrq(self.paths)


class XfrmExecutor:
    """SAs and policies. Outbound SAs added by one run continue their counters (see
    sa_sequence), reserved for all of them at the first add: one write however many."""
    resources = ("sa", "policy", "esp-floors")

    def __init__(self, sock, local, state_dir, changes=()):
        self.sock, self.local, self.state_dir = sock, local, state_dir
        self.spis = [c.want.spi for c in changes if c.resource == "sa" and c.op != DELETE
                     and c.want.src == local]
        self.starts = None

    def _numbered(self, state):
        if state.src != self.local or state.spi not in self.spis:
            return state
        if self.starts is None:
            self.starts = sa_sequence.Floors(self.state_dir).allocate(self.spis)
        return dataclasses.replace(state, oseq=self.starts[state.spi])

    def do(self, change):
        sock, op = self.sock, change.op
        if change.resource == "esp-floors":
            sa_sequence.Floors(self.state_dir).settle(change.want)
        elif change.resource == "sa":
            {ADD: lambda: sock.add_state(self._numbered(change.want)),
             UPDATE: lambda: sock.update_state(self._numbered(change.want)),
             DELETE: lambda: sock.delete_state(change.old)}[op]()
        else:
            {ADD: lambda: sock.add_policy(change.want),
             UPDATE: lambda: sock.update_policy(change.want),
             DELETE: lambda: sock.delete_policy(change.old)}[op]()

    def batches(self, change):
        """Adds, and deletes of what the observation just showed as ours (no `get` each)."""
        return change.resource in ("sa", "policy") and change.op in (ADD, DELETE)

    def do_many(self, changes, atomic=True):
        """One batch of same-kind changes (see batches). All or nothing when `atomic`: the
        ones that took effect are taken back before StepFailed is raised."""
        resource, op = changes[0].resource, changes[0].op
        phases = [changes]
        if resource == "sa" and op == ADD:
            # Inbound SAs first: a kernel without ESP refuses them before any outbound
            # counter range is reserved (sa_sequence writes its file at the first outbound).
            phases = [[c for c in changes if c.want.src != self.local],
                      [c for c in changes if c.want.src == self.local]]
        done, failures = [], []
        for phase in filter(None, phases):
            if op == ADD:
                values = [self._numbered(c.want) if resource == "sa" else c.want for c in phase]
            else:
                values = [c.old for c in phase]
            errors = self._send(resource, op, values)
            done += [c for c, e in zip(phase, errors) if e is None]
            failures += [(c.describe(), e) for c, e in zip(phase, errors) if e is not None]
            if failures:
                break
        if not failures:
            return
        undo_failures = []
        if atomic and done:
            undo_failures = [f"{c.describe()} ({e})" for c, e in zip(done, self._take_back(done))
                             if e is not None]
        raise StepFailed(failures, done=[c.describe() for c in done] if not atomic else (),
                         undo_failures=undo_failures)

    def undo_many(self, changes):
        failures = [(c.describe(), e) for c, e in zip(changes, self._take_back(changes))
                    if e is not None]
        if failures:
            raise StepFailed(failures)

    def _take_back(self, changes):
        """Undo a batch: delete what it added (ours: we just added it), re-add what it deleted."""
        resource, op = changes[0].resource, changes[0].op
        if op == ADD:
            return self._send(resource, DELETE, [c.want for c in changes])
        return self._send(resource, ADD, [c.old for c in changes])

    def _send(self, resource, op, values):
        sock = self.sock
        return {("sa", ADD): sock.add_states, ("sa", DELETE): sock.delete_states,
                ("policy", ADD): sock.add_policies,
                ("policy", DELETE): sock.delete_policies}[resource, op](values)

    def undo(self, change):
        sock, op = self.sock, change.op
        if change.resource == "sa":
            {ADD: lambda: sock.delete_state(change.want),
             UPDATE: lambda: sock.update_state(change.old),
             DELETE: lambda: sock.add_state(change.old)}[op]()
        else:
            {ADD: lambda: sock.delete_policy(change.want),
             UPDATE: lambda: sock.update_policy(change.old),
             DELETE: lambda: sock.add_policy(change.old)}[op]()


class FirewallExecutor:
    """Our chain, one family per change; the backend writes each in one transaction and
    reads it back."""
    resources = ("chain",)

    def __init__(self, backend):
        self.backend = backend

    def do(self, change):
        if change.op == DELETE:
            self.backend.remove(change.old.family)
        else:
            self.backend.install(change.want)

    def undo(self, change):   # only a chain that was not there before (diff.undoable)
        self.backend.remove(change.want.family)


def for_host(paths, sock, backend, local, changes):
    """resource -> executor, for one run of `changes` on this host."""
    executors = (ModuleExecutor(paths), ParameterExecutor(paths), SysctlExecutor(paths),
                 XfrmExecutor(sock, local, paths.state_dir, changes), FirewallExecutor(backend))
    return {resource: ex for ex in executors for resource in ex.resources}


def steps(changes, executors, atomic=True):
    """The changes as Steps: each with its line, its do, and its undo if a failed apply takes
    it back; consecutive changes of one kind that their executor batches as one Step.
    `atomic=False` (down): a batch keeps what took effect when part of it fails."""
    result = []
    for group in _runs(changes, executors):
        ex, first = executors[group[0].resource], group[0]
        undoable = diff.undoable(first)
        if len(group) == 1:
            undo = (lambda c=first, ex=ex: ex.undo(c)) if undoable else None
            result.append(Step(first.describe(), lambda c=first, ex=ex: ex.do(c), undo))
            continue
        undo = (lambda g=group, ex=ex: ex.undo_many(g)) if undoable else None
        result.append(Step(f"{first.op} {len(group)} {first.resource} changes",
                           lambda g=group, ex=ex: ex.do_many(g, atomic), undo,
                           tuple(c.describe() for c in group)))
    return result


def _runs(changes, executors):
    """Group consecutive changes with the same resource and op that their executor batches."""
    groups = []
    for change in changes:
        batches = getattr(executors[change.resource], "batches", lambda c: False)(change)
        last = groups[-1] if groups else None
        if batches and last and (last[0].resource, last[0].op) == (change.resource, change.op):
            last.append(change)
        else:
            groups.append([change])
    return groups

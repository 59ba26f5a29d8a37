"""One executor per kernel resource: it turns a `diff.Change` into kernel calls (`do`),
takes it back when a later change of the same apply fails (`undo`), and never touches
what is not ours (the xfrm socket and the firewall backends check before they write).

    module         ModuleExecutor     modprobe / modprobe -r
    password       ParameterExecutor  /sys/module/xt_SYSRQ/parameters/password
    kernel.sysrq   SysctlExecutor     /proc/sys/kernel/sysrq, and the value before us
    sa, policy,    XfrmExecutor       NETLINK_XFRM; outbound SA counters from sa_sequence
    esp-floors
    chain          FirewallExecutor   the firewall backend (one restore/commit per table)

`steps(changes, ...)` binds changes to their executors as transaction.Steps.
"""

import dataclasses

from sysrq_appliance import diff, password, sa_sequence, system
from sysrq_appliance.diff import ADD, DELETE, UPDATE
from sysrq_appliance.transaction import Step


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


def steps(changes, executors):
    """Each change as a Step: its line, its do, and its undo if a failed apply takes it back."""
    result = []
    for change in changes:
        ex = executors[change.resource]
        undo = (lambda c=change, ex=ex: ex.undo(c)) if diff.undoable(change) else None
        result.append(Step(change.describe(), lambda c=change, ex=ex: ex.do(c), undo))
    return result

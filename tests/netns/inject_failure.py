"""Run the CLI with change N of the next apply failing: python3 inject_failure.py N ARGS.

Used by the netns tests to prove that a failure at any change leaves the kernel as it was:
change N fails as when the kernel refuses it outright. Inside a batch (many policies in one
sendmsg) the changes before N took effect and the batch takes them back, as a real
partial failure does.
"""

import sys

from sysrq_appliance import cli, executors
from sysrq_appliance.transaction import StepFailed

failing = int(sys.argv.pop(1))
INJECTED = RuntimeError("injected failure")


class FailingAt:
    """An executor whose change `target` fails; everything else is the real executor's."""

    def __init__(self, real, target):
        self.real, self.target = real, target

    def __getattr__(self, name):
        return getattr(self.real, name)

    def do(self, change):
        if change is self.target:
            raise INJECTED
        self.real.do(change)

    def do_many(self, changes, atomic=True):
        index = next((i for i, c in enumerate(changes) if c is self.target), None)
        if index is None:
            return self.real.do_many(changes, atomic)
        if index:
            self.real.do_many(changes[:index], atomic)
            if atomic:
                self.real.undo_many(changes[:index])
        raise StepFailed([(self.target.describe(), INJECTED)])


real_for_host = executors.for_host


def for_host(paths, sock, backend, local, changes):
    found = real_for_host(paths, sock, backend, local, changes)
    return {resource: FailingAt(ex, changes[failing]) for resource, ex in found.items()}


executors.for_host = for_host
sys.exit(cli.main(sys.argv[1:]))

"""Run the CLI with step N of the next transaction failing: python3 inject_failure.py N ARGS.

Used by the netns tests to prove that a failure at any step leaves the kernel as it was:
step N is replaced by one that raises, as when the kernel refuses that change outright.
"""

import sys

from sysrq_appliance import cli, controller
from sysrq_appliance.transaction import Step, execute

failing = int(sys.argv.pop(1))


def execute_with_failure(steps, report=print):
    def fail():
        raise RuntimeError("injected failure")
    steps = list(steps)
    steps[failing] = Step(steps[failing].description, fail, steps[failing].undo)
    return execute(steps, report)


controller.execute = execute_with_failure
sys.exit(cli.main(sys.argv[1:]))

"""Run a list of changes in order; if one fails, undo the ones already done, newest first."""

from dataclasses import dataclass
from typing import Callable

from sysrq_appliance.errors import ApplianceError


@dataclass(frozen=True)
class Step:
    description: str                        # e.g. "add SA 10.10.25.1 -> 10.10.25.7 spi 0x..."
    do: Callable[[], None]
    undo: Callable[[], None] | None = None  # None: nothing to undo (or it is the last step)


def execute(steps, report=print):
    done = []
    for step in steps:
        try:
            step.do()
        except Exception as exc:
            failures = _undo(done)
            state = ("the kernel is as before" if not failures else
                     "could not undo: " + "; ".join(failures))
            raise ApplianceError(f"{step.description}: {exc}; undid {len(done)} earlier "
                                 f"change(s), {state}") from None
        report(f"  {step.description}")
        done.append(step)
    return len(done)


def _undo(done):
    failures = []
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception as exc:   # keep undoing the rest; say what stayed
            failures.append(f"{step.description} ({exc})")
    return failures

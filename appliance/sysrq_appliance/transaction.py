"""Run a list of changes in order; if one fails, undo the ones already done, newest first.

Anything that stops the run midway counts as a failure: a step that raises, a report that
cannot be printed (a closed pipe, a full disk), Ctrl-C or SIGTERM (which the CLI turns into
KeyboardInterrupt). The undo itself runs with SIGINT and SIGTERM blocked, so nothing is
left half-applied.
"""

import signal
from dataclasses import dataclass
from typing import Callable

from sysrq_appliance.errors import ApplianceError


@dataclass(frozen=True)
class Step:
    description: str                        # e.g. "add SA 10.10.25.1 -> 10.10.25.7 spi 0x..."
    do: Callable[[], None]
    undo: Callable[[], None] | None = None  # None: nothing to undo (or it is the last step)
    # A batch: the line of each change it makes, reported in place of `description`. Its
    # `do` is all or nothing (StepFailed says which change failed), and runs with SIGINT and
    # SIGTERM blocked, so an interruption falls between steps, never inside a batch.
    lines: tuple[str, ...] = ()


class StepFailed(ApplianceError):
    """Changes of a batch failed: `failures` [(line, error)], `done` the lines of those that
    took effect (an all-or-nothing batch has taken them back: then `undo_failures` names
    what it could not)."""

    def __init__(self, failures, done=(), undo_failures=()):
        super().__init__("; ".join(f"{line}: {error}" for line, error in failures))
        self.failures, self.done, self.undo_failures = list(failures), list(done), list(undo_failures)


def report_done(step, report):
    for line in step.lines or (step.description,):
        report(f"  {line}")


def execute(steps, report=print):
    done, step = [], None
    try:
        for step in steps:
            if step.lines:
                with _signals_blocked():   # a signal pending now is raised once it is done
                    step.do()
                    done.append(step)
            else:
                step.do()
                done.append(step)
            report_done(step, report)
    except BaseException as exc:
        failed = step if not done or done[-1] is not step else None
        with _signals_blocked():
            failures = _undo(done)
        if isinstance(exc, StepFailed):
            failures = exc.undo_failures + failures
        state = ("the kernel is as before" if not failures else
                 "could not undo: " + "; ".join(failures))
        if isinstance(exc, StepFailed) and failed is not None:
            cause = "{}: {}".format(*exc.failures[0])
        elif failed is not None and isinstance(exc, Exception):
            cause = f"{failed.description}: {exc}"
        else:
            cause = f"interrupted ({type(exc).__name__}) at {step.description}"
        undone = sum(len(s.lines) or 1 for s in done)
        raise ApplianceError(f"{cause}; undid {undone} earlier change(s), {state}") \
            from None
    return sum(len(s.lines) or 1 for s in done)


class _signals_blocked:
    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


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

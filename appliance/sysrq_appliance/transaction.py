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


def execute(steps, report=print):
    done, step = [], None
    try:
        for step in steps:
            step.do()
            done.append(step)
            report(f"  {step.description}")
    except BaseException as exc:
        failed = step if not done or done[-1] is not step else None
        with _signals_blocked():
            failures = _undo(done)
        state = ("the kernel is as before" if not failures else
                 "could not undo: " + "; ".join(failures))
        cause = (f"{failed.description}: {exc}" if failed is not None and isinstance(exc, Exception)
                 else f"interrupted ({type(exc).__name__}) at {step.description}")
        raise ApplianceError(f"{cause}; undid {len(done)} earlier change(s), {state}") \
            from None
    return len(done)


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

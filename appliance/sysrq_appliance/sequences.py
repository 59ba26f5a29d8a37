"""Rescue sequences: several SysRq requests in a row, with the waits that make them safe.

A sequence is a list of steps; each step is either keys to send (one request, fresh
seqno) or "wait SECONDS". Built-in ones can be overridden in the sender's config:

    sequences:
      reboot-safely: [s, wait 30, u, wait 10, b]   # a slow disk array needs longer
"""

import re
from dataclasses import dataclass

from sysrq_appliance import sysrq
from sysrq_appliance.errors import InputError, excerpt

BUILTIN = {
    # sync, let it reach the disks, remount read-only, let that finish, reboot.
    "reboot-safely": ("s", "wait 10", "u", "wait 5", "b"),
    "thaw": ("j",),
    "diagnose": ("w", "wait 1", "l", "wait 1", "m"),
}
HELP = {
    "reboot-safely": "s (sync), wait 10 s, u (remount read-only), wait 5 s, b (reboot)",
    "thaw": "j: thaw every frozen filesystem (fsfreeze)",
    "diagnose": "w (blocked tasks), l (CPU backtraces), m (memory) into the kernel log",
}
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")        # always used with fullmatch
WAIT_RE = re.compile(r"wait ([0-9]{1,4}(?:\.[0-9]{1,3})?)")
MAX_SEQUENCES = 64     # in one config
MAX_STEPS = 20
MAX_WAIT = 600          # seconds, one step
MAX_TOTAL_WAIT = 900    # seconds, the whole sequence: a rescue, not a schedule


@dataclass(frozen=True)
class Step:
    keys: str = ""        # empty for a wait
    seconds: float = 0.0


def parse(items, field):
    """Validate a sequence's list of strings into Steps; errors name `field`."""
    if not isinstance(items, (list, tuple)) or not items:
        raise InputError(f"{field}: not a non-empty list; e.g. [s, wait 10, u, wait 5, b]")
    if len(items) > MAX_STEPS:
        raise InputError(f"{field}: {len(items)} steps; at most {MAX_STEPS}")
    steps = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"{field}[{i}]: {excerpt(item)} is neither SysRq keys nor 'wait N'")
        text = item.strip()
        if match := WAIT_RE.fullmatch(text):
            seconds = float(match.group(1))
            if seconds > MAX_WAIT:
                raise InputError(f"{field}[{i}]: wait {seconds:g} is over {MAX_WAIT} seconds")
            steps.append(Step(seconds=seconds))
            continue
        try:
            steps.append(Step(keys=sysrq.check_keys(text)))
        except InputError:
            raise InputError(f"{field}[{i}]: {excerpt(text)} is neither SysRq keys nor "
                             "'wait N'") from None
    total = sum(step.seconds for step in steps)
    if total > MAX_TOTAL_WAIT:
        raise InputError(f"{field}: waits add up to {total:g} s; at most {MAX_TOTAL_WAIT} s "
                         "in one sequence")
    return tuple(steps)



def resolve(name, custom):
    """The steps of sequence `name`: the config's own definition first, then built-ins."""
    if name in custom:
        return custom[name]
    if name in BUILTIN:
        return parse(BUILTIN[name], f"sequence {name}")
    known = ", ".join(sorted({*BUILTIN, *custom}))
    raise InputError(f"--sequence: {excerpt(name)} is not a sequence; known: {known}")


def refuse_masked(steps, allow, target, what):
    """Refuse before sending anything if the target's allow list would drop a step.

    `allow` is the peer's allow list in the sender's config (None: unknown, no check)."""
    if allow is None:
        return
    mask = sysrq.mask_for(allow)
    for step in steps:
        for key in step.keys:
            if not sysrq.key_allowed(key, mask):
                need = next((n for n, (_, keys) in sysrq.FUNCTIONS.items() if key in keys),
                            "all")
                raise InputError(f"{what}: {target} allows only "
                                 f"{', '.join(allow)}; key {key!r} needs '{need}' in the "
                                 "target's sysrq.allow (and in this peer's allow)")

"""The magic SysRq key table and the kernel.sysrq bitmask (Documentation/admin-guide/sysrq.rst).

The mask applies to every caller of handle_sysrq(): the keyboard and xt_SYSRQ alike,
but not /proc/sysrq-trigger. Keys whose kernel operation has no enable bit (d, q and the
keys that only print help) run only when the mask is 1 ("all").
"""

from sysrq_appliance.errors import InputError, excerpt

# allow-name -> (bit, keys it enables), from drivers/tty/sysrq.c enable_mask values
FUNCTIONS = {
    "loglevel": (0x2, "0123456789"),
    "keyboard": (0x4, "kr"),
    "dump": (0x8, "clmptwz"),       # note: c (crash) is a "dump" operation in the kernel
    "sync": (0x10, "s"),
    "remount": (0x20, "u"),
    "signal": (0x40, "efij"),       # j (thaw filesystems) is gated by the signal bit
    "reboot": (0x80, "bo"),
    "nice": (0x100, "n"),
}
ALL = "all"
ALL_MASK = 1

# Keys with a kernel operation but no enable bit of their own: only with "all".
_ONLY_WITH_ALL = "dq"
# Unregistered keys print the help text whenever SysRq is enabled at all (mask != 0).
_HELP_KEYS = "aghvxy"

KEYS = "0123456789abcdefghijklmnopqrstuvwxyz"

MAX_KEYS = 32    # keys in one request: a rescue needs a handful

# Keys after which the machine cannot answer: confirmation is impossible.
NO_CONFIRMATION_KEYS = "bco"


def mask_for(allow):
    """kernel.sysrq value for a list of allow-names ("all" alone means 1)."""
    if ALL in allow:
        return ALL_MASK
    mask = 0
    for name in allow:
        mask |= FUNCTIONS[name][0]
    return mask


def names_for(mask):
    """Decode a kernel.sysrq value into allow-names (for status)."""
    if mask == ALL_MASK:
        return [ALL]
    return [name for name, (bit, _keys) in FUNCTIONS.items() if mask & bit]


def key_allowed(key, mask):
    """Would handle_sysrq(key) act under this kernel.sysrq mask?"""
    if mask == 0:
        return False
    if mask == ALL_MASK or key in _HELP_KEYS:
        return True
    if key in _ONLY_WITH_ALL:
        return False
    return any(key in keys and mask & bit for bit, keys in FUNCTIONS.values())


def check_keys(keys, single=False):
    """Validate a request's keys against the kernel's key table; raise InputError if bad."""
    if not keys:
        raise InputError("KEYS: empty; give one or more SysRq keys, e.g. 's' or 'sub'")
    if len(keys) > MAX_KEYS:
        raise InputError(f"KEYS: {len(keys)} keys; at most {MAX_KEYS} in one request")
    bad = sorted({k for k in keys if k not in KEYS})
    if bad:
        raise InputError(f"KEYS: {excerpt(''.join(bad))} is not a SysRq key; use 0-9 or a-z "
                         "(see 'sysrq-appliance send --help')")
    if single and len(keys) != 1:
        raise InputError(f"KEYS: {keys!r} has {len(keys)} keys; the plain wire format "
                         "carries exactly one")
    return keys

"""python-iptables (module `iptc`) with the fixes this project needs, each small and guarded.

`load()` imports iptc and applies the fixes that the installed versions need;
`create_match(rule, name)` is `rule.create_match(name)` with the per-match fix.

All three defects are in every python-iptables release up to 1.2.0, the newest one checked
(its source still has them); Debian 12 and 13 ship 1.0.1. A newer release gets none of the
fixes until someone checks it: the legacy backend's read-back and
tests/netns/test_firewall_netns.py then show which are still needed.

- Issue 290 (open): the policy match loses its element options (--proto, --mode,
  --tunnel-src, --tunnel-dst). `final_check()` re-parses every match from its own save
  output (`_update_parameters`), but libxt_policy saves only counted elements and counts
  the last one in its own final check, which runs after the re-parse. Fix: skip the
  re-parse on policy matches (`create_match`).
- Issue 353 (open): with libxtables 1.8.11 setting any option of an x6-style extension
  (udp --dport, policy, limit, ...) fails with "no such parameter". 1.8.11 added the field
  `base` to `struct xt_option_entry` (48 -> 56 bytes); python-iptables' ctypes copy of it
  walks the option array with the old stride. Fix: when libxtables >= 1.8.11, look options
  up (and check mandatory ones) walking the array with the 1.8.11 stride, handing back each
  entry at its real address.
- Every `Target(rule, name)` asks each table whether `name` is one of its chains, through
  `Rule.tables`, which opens all five tables (behaviour since its pull request 15, no issue
  filed). With legacy iptables, opening a table creates it in the network namespace: an
  empty nat table registers NAT hooks and conntrack. Fix: ask only the tables that exist
  (/proc/net/ip_tables_names); a chain cannot be in a table that does not exist.
"""

from __future__ import annotations

import ctypes
import functools
import re

from sysrq_appliance.firewall import FirewallError, run

CHECKED_UP_TO = (1, 2, 0)  # newest python-iptables whose source was checked for the defects
STRIDE_CHANGED_IN = (1, 8, 11)  # libxtables release that added xt_option_entry.base


def version_tuple(text: str) -> tuple[int, ...]:
    """(1, 8, 11) from "iptables v1.8.11 (legacy)" or "1.8.11"."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if found is None:
        raise FirewallError(f"no version number in {text!r}")
    return tuple(int(part or 0) for part in found.groups())


def libxtables_version() -> tuple[int, ...]:
    """The version of the system's libxtables.

    The library carries no version of its own (its file is libxtables.so.12.7.0 in both
    1.8.9 and 1.8.11), so ask iptables-legacy: Debian's iptables package depends on
    libxtables12 of exactly its own version.
    """
    return version_tuple(run(["iptables-legacy", "-V"]))


def affected(iptc) -> bool:
    """The installed python-iptables is one known to have all three defects."""
    return version_tuple(iptc.version.__version__) <= CHECKED_UP_TO


@functools.cache
def load():
    """The iptc module, with the fixes for the installed versions applied (once)."""
    try:
        import iptc
    except ImportError as exc:  # also raised when libxtables/libiptc cannot be loaded
        raise FirewallError(f"the legacy backend needs python3-iptables: {exc}") from exc
    if affected(iptc):
        probe_existing_tables_only(iptc)
        if libxtables_version() >= STRIDE_CHANGED_IN:
            walk_options_with_1_8_11_stride(iptc)
    return iptc


def create_match(rule, name: str):
    """`rule.create_match(name)`; a policy match keeps its element options (issue 290)."""
    match = rule.create_match(name)
    if name == "policy" and affected(load()):
        match._update_parameters = _keep_parameters
    return match


def _keep_parameters():
    """Stands in for IPTCModule._update_parameters on a policy match (issue 290)."""


def walk_options_with_1_8_11_stride(iptc) -> None:
    """Issue 353: read x6 option tables as libxtables >= 1.8.11 lays them out (once)."""
    xtables = iptc.xtables
    if getattr(xtables.xtables._option_lookup, "stride_1_8_11", False):
        return

    class OptionEntry(ctypes.Structure):  # struct xt_option_entry, iptables 1.8.11
        _fields_ = [*xtables.xt_option_entry._fields_, ("base", ctypes.c_uint)]

    stride = ctypes.sizeof(OptionEntry)

    def entries(table):
        """Each entry up to the terminating one without a name, as python-iptables' type."""
        address = ctypes.cast(table, ctypes.c_void_p).value
        while OptionEntry.from_address(address).name:
            yield xtables.xt_option_entry.from_address(address)
            address += stride

    def option_lookup(self, table, name):
        return next((entry for entry in entries(table) if entry.name == name), None)

    options_fcheck = xtables.xtables._options_fcheck

    def options_fcheck_1_8_11(self, name, xflags, table):
        return options_fcheck(self, name, xflags, list(entries(table)))

    option_lookup.stride_1_8_11 = True
    xtables.xtables._option_lookup = option_lookup
    xtables.xtables._options_fcheck = options_fcheck_1_8_11


def probe_existing_tables_only(iptc) -> None:
    """Creating a Target opens only the tables that already exist (see module doc)."""
    iptc.Rule.tables = property(lambda rule: _existing(iptc.Table, "/proc/net/ip_tables_names"))
    iptc.Rule6.tables = property(lambda rule: _existing(iptc.Table6, "/proc/net/ip6_tables_names"))


def _existing(table_class, names_file: str) -> list:
    try:
        with open(names_file, encoding="ascii") as names:
            existing = set(names.read().split())
    except FileNotFoundError:  # ip_tables not loaded: no table exists
        existing = set()
    return [table_class(name) for name in table_class.ALL if name in existing]

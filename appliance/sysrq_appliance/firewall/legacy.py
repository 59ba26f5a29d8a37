"""The legacy backend: python-iptables (libiptc), read back with iptables-legacy-save.

python-iptables drives only legacy iptables (its issue 319): what it writes is invisible
to iptables-nft. The whole change of a table is built in one libiptc handle with
autocommit off and committed once, so the kernel swaps the table in a single step. From
the first read to the read-back we hold the xtables lock, as iptables-legacy does, so no
concurrent iptables-legacy can slip a change in between (a libiptc commit replaces the
whole table: the change would be lost). The fixes python-iptables needs are in
iptc_compat; whether they worked is checked by the read-back in ChainBackend.install.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from sysrq_appliance.firewall import (CHAIN, LEGACY, ChainBackend, ChainSpec, FirewallError,
                                      ObservedChain, RuleParts, chain_rules, jump_in_place,
                                      rule_parts)
from sysrq_appliance import lock
from sysrq_appliance.firewall import iptc_compat

LOCK_WAIT = 10.0  # seconds


class LegacyBackend(ChainBackend):
    name = LEGACY
    save_tools = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}

    def _locked(self):
        return xtables_lock()

    def _write(self, spec: ChainSpec, before: ObservedChain | None) -> None:
        iptc = iptc_compat.load()
        with _transaction(iptc, spec.family) as table:
            if before is None:
                table.create_chain(CHAIN)
            else:
                table.flush_entries(CHAIN)
            chain = iptc.Chain(table, CHAIN)
            for rule in chain_rules(spec):
                chain.append_rule(_rule(iptc, spec.family,
                                        rule_parts(rule, spec.family, spec.target)))
            if not jump_in_place(before):
                _delete_jumps(iptc, table, before)
                iptc.Chain(table, "INPUT").insert_rule(_jump_rule(iptc, spec.family))

    def _delete(self, before: ObservedChain) -> None:
        iptc = iptc_compat.load()
        with _transaction(iptc, before.family) as table:
            _delete_jumps(iptc, table, before)
            table.flush_entries(CHAIN)
            table.delete_chain(CHAIN)


@contextlib.contextmanager
def _transaction(iptc, family: int):
    """The filter table in one libiptc handle; committed once if the block succeeds."""
    try:
        if family == 4:
            table = iptc.Table(iptc.Table.FILTER, autocommit=False)
        else:
            table = iptc.Table6(iptc.Table6.FILTER, autocommit=False)
        table.refresh()  # a fresh handle: the table object is cached by python-iptables
        try:
            yield table
            table.commit()
        finally:
            table.close()
    except (iptc.IPTCError, iptc.XTablesError, ValueError) as exc:
        raise FirewallError(f"legacy backend (python-iptables): {exc}") from exc


def _new_rule(iptc, family: int):
    return iptc.Rule() if family == 4 else iptc.Rule6()


def _rule(iptc, family: int, parts: RuleParts):
    """The python-iptables rule for RuleParts: the same matches and options, in the same
    order, as the text the nft backend writes (option `--a-b` is attribute `a_b`)."""
    rule = _new_rule(iptc, family)
    if parts.src:
        rule.src = parts.src
    if parts.dst:
        rule.dst = parts.dst
    rule.protocol = parts.protocol
    for match in parts.matches:
        created = iptc_compat.create_match(rule, match.name)   # policy: issue 290
        for option, value in match.options:
            setattr(created, option.replace("-", "_"), value)
    target = iptc.Target(rule, parts.target)
    for option, value in parts.target_options:
        setattr(target, option.replace("-", "_"), value)
    rule.target = target
    return rule


def _jump_rule(iptc, family: int):
    rule = _new_rule(iptc, family)
    rule.target = iptc.Target(rule, CHAIN)
    return rule


def _delete_jumps(iptc, table, before: ObservedChain | None) -> None:
    """Delete the jumps `before` counted: each is `-A INPUT -j SYSRQ-APPLIANCE` exactly."""
    input_chain = iptc.Chain(table, "INPUT")
    for _ in range(before.jump_count if before is not None else 0):
        input_chain.delete_rule(_jump_rule(iptc, before.family))


@contextlib.contextmanager
def xtables_lock(wait: float = LOCK_WAIT):
    """Hold the lock iptables-legacy takes ($XTABLES_LOCKFILE, default /run/xtables.lock)."""
    path = os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if not lock.wait_for(fd, fcntl.LOCK_EX, wait):
            raise FirewallError(f"another iptables holds {path} for more than "
                                f"{wait:.0f} s; try again")
        yield
    finally:
        os.close(fd)

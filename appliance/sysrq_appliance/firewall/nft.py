"""The nf_tables backend: `iptables-nft-restore --noflush`, one transaction per table.

A restore script names only our chain and our jump, so `--noflush` leaves every other
chain and rule alone; the kernel applies the whole script at COMMIT or none of it.

    *filter
    -F SYSRQ-APPLIANCE                  (or ":SYSRQ-APPLIANCE - [0:0]" to create it)
    -A SYSRQ-APPLIANCE ...              render(spec)   (firewall.install_script)
    -D INPUT -j SYSRQ-APPLIANCE         once per jump, only when the jump is not exactly
    -I INPUT 1 -j SYSRQ-APPLIANCE       one at the top of INPUT
    COMMIT
"""

from __future__ import annotations

from sysrq_appliance.firewall import (NFT, ChainBackend, ChainSpec, ObservedChain, check_script,
                                      install_script, remove_script, run)

_RESTORE = {4: "iptables-nft-restore", 6: "ip6tables-nft-restore"}


class NftBackend(ChainBackend):
    name = NFT
    save_tools = {4: "iptables-nft-save", 6: "ip6tables-nft-save"}

    def _write(self, spec: ChainSpec, before: ObservedChain | None) -> None:
        _restore(spec.family, install_script(spec, before))

    def _delete(self, before: ObservedChain) -> None:
        _restore(before.family, remove_script(before))


def _restore(family: int, script: list[str]) -> None:
    run([_RESTORE[family], "--noflush"], stdin="\n".join(check_script(script)) + "\n")

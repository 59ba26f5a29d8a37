"""Outbound ESP sequence numbers that never start over.

Our SA keys are static (from `pair`), so an SA added again after a reboot or a
down/apply would restart its counter at 1. With AES-GCM that reuses nonces under the same
key, and the peer's replay window, which remembers the higher numbers, drops everything
(the confirmations stop arriving). So each outbound SA starts where the last one of that
SPI may have ended: a floor per SPI in one file under the state directory, reserved ahead
before the SAs are added, so that even a crash never hands out a number twice.
"""

import json
import os

from sysrq_appliance.errors import ApplianceError
from sysrq_appliance.secretfile import write_secret

RESERVE = 1 << 20          # numbers reserved per SA added; the SAs carry only triggers
SETTLE_MARGIN = 1 << 10    # packets an SA may still send between our dump and its deletion
LIMIT = 0xFFFFFFFF         # 32-bit sequence numbers (no ESN)


class Floors:
    """The floors of every SPI: read once, written once per change (one fsync, not one per
    SA: a fleet of 1000 targets re-adds 1000 outbound SAs after a reboot)."""

    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "esp-seq.json")
        try:
            with open(self.path, encoding="ascii") as f:
                self.floors = {int(spi): int(value) for spi, value in json.load(f).items()}
        except (FileNotFoundError, ValueError, AttributeError):
            self.floors = {}

    def floor(self, spi):
        return self.floors.get(spi, 0)

    def _store(self, changes):
        if changes:
            self.floors.update(changes)
            write_secret(self.path, json.dumps(
                {str(spi): value for spi, value in sorted(self.floors.items())}).encode())

    def allocate(self, spis):
        """spi -> the oseq to add that SA with; the ranges above are recorded as used first."""
        starts = {spi: self.floor(spi) for spi in spis}
        for spi, start in starts.items():
            if start + RESERVE > LIMIT:
                raise ApplianceError(f"SA spi {spi:#010x} has used up its sequence numbers; "
                                     "make new keys and SPIs with 'sysrq-appliance pair'")
        self._store({spi: start + RESERVE for spi, start in starts.items()})
        return starts

    def keep_ahead(self, live):
        """Live SAs (spi -> oseq) that used half their reserve get the floor moved ahead."""
        self._store({spi: min(oseq + RESERVE, LIMIT) for spi, oseq in live.items()
                     if self.floor(spi) - oseq < RESERVE // 2})

    def settle(self, last):
        """After our SAs are deleted (spi -> last oseq seen): the next may start soon after.
        (0 means the kernel did not say: keep the reserved floor.)"""
        self._store({spi: oseq + SETTLE_MARGIN for spi, oseq in last.items()
                     if 0 < oseq and oseq + SETTLE_MARGIN < self.floor(spi)})

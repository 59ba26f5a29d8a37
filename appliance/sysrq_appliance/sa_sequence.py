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

from sysrq_appliance.errors import ApplianceError, InputError
from sysrq_appliance.secretfile import read_secret, write_secret

RESERVE = 1 << 20          # numbers reserved per SA added; the SAs carry only triggers
SETTLE_MARGIN = 1 << 10    # packets an SA may still send between our dump and its deletion
LIMIT = 0xFFFFFFFF         # 32-bit sequence numbers (no ESN)
MAX_FILE_BYTES = 4 << 20   # 16,384 peers x 2 SPIs take about 1 MiB


class FloorsDamaged(InputError):
    """The floors file exists but cannot be trusted: adding an outbound SA could reuse
    AES-GCM nonces under the same static key, so none is added."""


class Floors:
    """The floors of every SPI: read once, written once per change (one fsync, not one per
    SA: a fleet of 1000 targets re-adds 1000 outbound SAs after a reboot)."""

    def __init__(self, state_dir):
        self.path = floors_path(state_dir)
        self.floors = read_floors(self.path)

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


def floors_path(state_dir):
    return os.path.join(state_dir, "esp-seq.json")


def read_floors(path):
    """spi -> floor from the file; {} only when the file does not exist (a first apply).

    Fails closed: a file we cannot read or trust raises FloorsDamaged, never reads as {}."""
    if not os.path.lexists(path):
        return {}
    try:
        data = read_secret(path, "ESP sequence floors", limit=MAX_FILE_BYTES)
    except InputError as exc:
        raise FloorsDamaged(f"{exc}; no outbound SA is added until it is fixed") from None
    try:
        return parse_floors(data)
    except InputError as exc:
        raise FloorsDamaged(
            f"{exc} in {path}, so no outbound SA is added (its counter would restart under "
            "the same static key: AES-GCM nonce reuse); recover: make new keys and SPIs for "
            f"every peer ('sysrq-appliance pair'), install them on both ends, delete {path}, "
            "then apply") from None


def _unique(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")   # which floor would count? neither: damaged
    return dict(pairs)


def parse_floors(data):
    """Pure: the file's bytes -> {spi: floor}; InputError says what is wrong."""
    try:
        raw = json.loads(data.decode("ascii"), object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError("ESP sequence floors: not valid JSON") from None
    if not isinstance(raw, dict):
        raise InputError("ESP sequence floors: not a JSON object of SPI -> number")
    floors = {}
    for spi, value in raw.items():
        if not (spi.isascii() and spi.isdigit() and 0 < int(spi) <= 0xFFFFFFFF) \
                or isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value <= LIMIT:
            raise InputError("ESP sequence floors: an entry is not SPI (1-4294967295) -> "
                             f"number (0-{LIMIT})")
        floors[int(spi)] = value
    return floors

"""Outbound ESP sequence numbers that never start over.

Our SA keys are static (from `pair`), so an SA added again after a reboot or a
down/apply would restart its counter at 1. With AES-GCM that reuses nonces under the same
key, and the peer's replay window, which remembers the higher numbers, drops everything
(the confirmations stop arriving). So each outbound SA starts where the last one of that
SPI may have ended: a floor kept per SPI under the state directory, reserved ahead before
the SA is added, so that even a crash never hands out a number twice.
"""

import os

from sysrq_appliance.errors import ApplianceError
from sysrq_appliance.secretfile import write_secret

RESERVE = 1 << 20          # numbers reserved per SA added; the SAs carry only triggers
LIMIT = 0xFFFFFFFF         # 32-bit sequence numbers (no ESN)


def _path(state_dir, spi):
    return os.path.join(state_dir, f"esp-seq.{spi:08x}")


def floor(state_dir, spi):
    try:
        with open(_path(state_dir, spi), encoding="ascii") as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return 0


def _store(state_dir, spi, value):
    write_secret(_path(state_dir, spi), f"{value}\n".encode("ascii"))


def allocate(state_dir, spi):
    """The oseq to add SA `spi` with; the range above it is recorded as used first."""
    start = floor(state_dir, spi)
    if start + RESERVE > LIMIT:
        raise ApplianceError(f"SA spi {spi:#010x} has used up its sequence numbers; make new "
                             "keys and SPIs with 'sysrq-appliance pair'")
    _store(state_dir, spi, start + RESERVE)
    return start


def keep_ahead(state_dir, spi, live_oseq):
    """A live SA that used half its reserve gets the floor moved ahead of it."""
    if floor(state_dir, spi) - live_oseq < RESERVE // 2:
        _store(state_dir, spi, min(live_oseq + RESERVE, LIMIT))


def settle(state_dir, spi, last_oseq):
    """After our SA is deleted: the next one may start right after its last number.
    (0 means the kernel did not say: keep the reserved floor.)"""
    if 0 < last_oseq < floor(state_dir, spi):
        _store(state_dir, spi, last_oseq + 1)

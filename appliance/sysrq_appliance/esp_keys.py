"""ESP key files: one key per direction, hex, in a root-only 0600 file.

    # ESP keys for the tunnel to web1 (rfc4106(gcm(aes))). The peer's file has them swapped.
    in  0123...   key of the SA carrying peer -> this host
    out 89ab...   key of the SA carrying this host -> peer

Two keys, not one: AES-GCM must never reuse a key in both directions (nonce reuse).
"""

import secrets
from dataclasses import dataclass, field

from sysrq_appliance.config import ALGORITHMS
from sysrq_appliance.errors import InputError
from sysrq_appliance.secretfile import read_secret


@dataclass(frozen=True)
class KeyPair:
    inbound: bytes = field(repr=False)
    outbound: bytes = field(repr=False)

    def swapped(self):
        """The same tunnel seen from the other host."""
        return KeyPair(inbound=self.outbound, outbound=self.inbound)


def generate(algorithm):
    length = max(ALGORITHMS[algorithm])
    return KeyPair(secrets.token_bytes(length), secrets.token_bytes(length))


def render(keys, peer_name, algorithm):
    return (f"# ESP keys for the tunnel to {peer_name} ({algorithm}). "
            "The peer's file has them swapped.\n"
            f"in  {keys.inbound.hex()}\nout {keys.outbound.hex()}\n").encode()


def parse(data, source, algorithm):
    """Parse key-file bytes; errors name the file and line, never the key material."""
    found = {}
    for number, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in ("in", "out") or words[0] in found:
            raise InputError(f"{source}: line {number}: expected 'in HEX' and 'out HEX' once "
                             "each; regenerate with 'sysrq-appliance pair'")
        try:
            key = bytes.fromhex(words[1])
        except ValueError:
            raise InputError(f"{source}: line {number}: the {words[0]} key is not hex; "
                             "regenerate with 'sysrq-appliance pair'") from None
        lengths = ALGORITHMS[algorithm]
        if len(key) not in lengths:
            allowed = " or ".join(str(n * 8) for n in lengths)
            raise InputError(f"{source}: line {number}: the {words[0]} key has {len(key) * 8} "
                             f"bits; {algorithm} takes {allowed}")
        found[words[0]] = key
    for direction in ("in", "out"):
        if direction not in found:
            raise InputError(f"{source}: no '{direction}' key; the file needs 'in HEX' and "
                             "'out HEX'")
    if found["in"] == found["out"]:
        raise InputError(f"{source}: the in and out keys are equal; each direction needs its "
                         "own key (regenerate with 'sysrq-appliance pair')")
    return KeyPair(found["in"], found["out"])


def load(path, field_name, algorithm, owner=None, trusted=None):
    return parse(read_secret(path, field_name, owner, trusted=trusted), f"{field_name}: {path}",
                 algorithm)

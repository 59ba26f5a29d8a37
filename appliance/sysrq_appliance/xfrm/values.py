"""What we manage, as plain typed values that read like `ip xfrm`.

We create one shape of object and only that shape is represented: ESP SAs in tunnel mode
(`ip xfrm state`), and host-to-host policies with one required ESP tunnel template
(`ip xfrm policy`). Ours have a reqid in REQID_BASE/REQID_MASK (`is_ours`). No kernel and
no pyroute2 here: plan, diff and the tests build and compare these freely.
"""

import functools
import ipaddress
from dataclasses import dataclass, field

IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_ESP, IPPROTO_ICMPV6 = 1, 17, 50, 58
REQID_BASE = 0x53520000  # "SR"
REQID_MASK = 0xFFFF0000
DIRECTIONS = ("in", "out", "fwd")  # XFRM_POLICY_IN, _OUT, _FWD
REPLAY_WINDOW = 32


def is_ours(reqid: int) -> bool:
    return (reqid & REQID_MASK) == REQID_BASE


@functools.lru_cache(maxsize=65536)
def _parse_address(value):
    """(canonical text, version) of an address given as text or packed bytes.

    Cached: a fleet's dump parses the same few thousand addresses over and over."""
    ip = ipaddress.ip_address(value)
    return str(ip), ip.version


def _canonical(obj, *names):
    """Keep addresses in the form dumps give them back, so that added == dumped."""
    versions = set()
    for name in names:
        text, version = _parse_address(getattr(obj, name))
        object.__setattr__(obj, name, text)
        versions.add(version)
    if len(versions) != 1:
        raise ValueError(f"{type(obj).__name__}: {' and '.join(names)} are of different families")


@dataclass(frozen=True)
class Selector:
    """Host-to-host traffic `src A/32 dst B/32 [proto P] [sport S] [dport D]`; None: any port.
    For ICMP/ICMPv6 the kernel carries the ICMP type in sport and the code in dport."""
    src: str
    dst: str
    proto: int = 0
    sport: int | None = None
    dport: int | None = None

    def __post_init__(self):
        _canonical(self, "src", "dst")
        ports = [p for p in (self.sport, self.dport) if p is not None]
        if (ports and not self.proto) or not 0 <= self.proto <= 255 or not all(0 <= p <= 0xFFFF for p in ports):
            raise ValueError(f"Selector: bad protocol {self.proto} or ports {ports}")


@dataclass(frozen=True)
class Algorithm:
    """bits: ICV bits for AEAD, truncation bits for auth, unused (0) for crypt."""
    name: str
    key: bytes = field(repr=False)  # secret: never in repr, str or error messages
    bits: int = 0

    def __post_init__(self):
        if not isinstance(self.key, bytes) or not self.name.isascii() or len(self.name) > 63:
            raise ValueError(f"Algorithm {self.name!r}: needs an ASCII name < 64 chars and a bytes key")


@dataclass(frozen=True)
class State:
    """ip xfrm state: ESP, tunnel mode, replay window 32, no lifetime limits."""
    src: str
    dst: str
    spi: int
    reqid: int
    aead: Algorithm | None = None
    crypt: Algorithm | None = None
    auth: Algorithm | None = None  # sent as XFRMA_ALG_AUTH_TRUNC
    # Outbound sequence counter to start from (XFRMA_REPLAY_VAL; 0: the kernel's default).
    # Keys are static, so a counter restarting at 1 after a reboot would reuse AES-GCM
    # nonces and trip the peer's replay window; the controller keeps it growing instead.
    oseq: int = field(default=0, compare=False)

    def __post_init__(self):
        _canonical(self, "src", "dst")
        if not 0 < self.spi <= 0xFFFFFFFF or not 0 <= self.reqid <= 0xFFFFFFFF:
            raise ValueError(f"State: spi {self.spi:#x} or reqid {self.reqid:#x} out of range")
        if (self.aead is None) == (self.crypt is None) or (self.aead and self.auth):
            raise ValueError("State: needs either aead, or crypt with optional auth")


@dataclass(frozen=True)
class StateCounters:
    bytes: int
    packets: int
    replay: int
    integrity_failed: int
    replay_window: int  # packets dropped as outside the replay window


@dataclass(frozen=True)
class Template:
    """tmpl src S dst D proto esp reqid R mode tunnel (level required)."""
    src: str
    dst: str
    reqid: int

    def __post_init__(self):
        _canonical(self, "src", "dst")


@dataclass(frozen=True)
class Policy:
    """ip xfrm policy.  template=None only in dumps: a foreign policy at a host-to-host
    selector with another shape (no or several templates, not ESP tunnel, level use, block)."""
    selector: Selector
    dir: str  # "in" | "out" | "fwd"
    template: Template | None
    priority: int = 100

    def __post_init__(self):
        if self.dir not in DIRECTIONS:
            raise ValueError(f"Policy: dir {self.dir!r} is not one of {DIRECTIONS}")


# --- As `ip xfrm` commands (keys never shown) ------------------------------------------------

_PROTOCOL_NAMES = {IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "ipv6-icmp"}


def ip_state_command(verb: str, s: State) -> str:
    """`ip xfrm state VERB ...` for `s`; keys shown as <key>."""
    line = f"ip xfrm state {verb} src {s.src} dst {s.dst} proto esp spi {s.spi:#010x}"
    if verb != "add":
        return line
    line += f" reqid {s.reqid:#x} mode tunnel replay-window {REPLAY_WINDOW}"
    if s.aead is not None:
        line += f" aead '{s.aead.name}' <key> {s.aead.bits}"
    if s.crypt is not None:
        line += f" enc '{s.crypt.name}' <key>"
    if s.auth is not None:
        line += f" auth-trunc '{s.auth.name}' <key> {s.auth.bits}"
    return line


def ip_policy_command(verb: str, p: Policy) -> str:
    """`ip xfrm policy VERB ...` for `p`."""
    sel = p.selector
    bits = 32 if ":" not in sel.src else 128
    line = f"ip xfrm policy {verb} src {sel.src}/{bits} dst {sel.dst}/{bits}"
    if sel.proto:
        line += f" proto {_PROTOCOL_NAMES.get(sel.proto, sel.proto)}"
        words = ("type", "code") if sel.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) else ("sport", "dport")
        line += "".join(f" {w} {v}" for w, v in zip(words, (sel.sport, sel.dport)) if v is not None)
    line += f" dir {p.dir}"
    if verb == "delete" or p.template is None:
        return line
    t = p.template
    return (line + f" priority {p.priority} tmpl src {t.src} dst {t.dst} proto esp"
            f" reqid {t.reqid:#x} mode tunnel")

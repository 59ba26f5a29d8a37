"""Our firewall chain: what it should hold, how we read it back, which backend writes it.

Everything we own lives in table filter, for IPv4 and IPv6 alike:

    -A INPUT -j SYSRQ-APPLIANCE                       exactly one, at the top of INPUT
    -A SYSRQ-APPLIANCE -s PEER/32 -d LOCAL/32 -p udp -m udp --dport 9 -m length --length 28
       -m policy --dir in --pol ipsec --proto esp --mode tunnel --tunnel-dst LOCAL
       --tunnel-src PEER [-m mac --mac-source MAC] -j REJECT --reject-with icmp-port-unreachable
                                                      the health probe, per peer, first
    -A SYSRQ-APPLIANCE -s PEER/32 -d LOCAL/32 -p udp -m udp --dport 9 -m policy --dir in
       --pol ipsec --proto esp --mode tunnel --tunnel-dst LOCAL --tunnel-src PEER
       [-m mac --mac-source MAC] -m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 20
       --hashlimit-mode srcip,srcport --hashlimit-name sysrq-appliance
       --hashlimit-htable-expire 10000 -j SYSRQ
    -A SYSRQ-APPLIANCE -p udp -m udp --dport 9 -j DROP    every other packet to the port

The probe (`check` on the admin host) is a UDP datagram with no payload, which no request
can be: the shortest, on the plain wire, is 2 bytes, a hashed one over 40. Its IP length is
the header and 8 bytes of UDP (28 for IPv4, 48 for IPv6: a header with options or extension
headers is longer, so the length alone says "empty"). Arriving through the tunnel it is
rejected with ICMP port-unreachable, which leaves through the same out-policy as a
confirmation: SAs, policies, our chain and its jump and the policy match are proven, and
xt_SYSRQ never sees it (no SysRq function, no kernel log line).

`render()` produces these lines exactly as `iptables-save` prints them, so one string list
serves to write the chain (nft backend) and to check what the kernel holds (both backends).
Nothing else is ever touched: not other chains, not other rules of INPUT, not its policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
import subprocess
from typing import Protocol

from sysrq_appliance.backends import BACKENDS, LEGACY, NFT  # noqa: F401 (re-exported)
from sysrq_appliance.errors import ApplianceError, InputError, excerpt

CHAIN = "SYSRQ-APPLIANCE"
JUMP = f"-A INPUT -j {CHAIN}"
RATE = "10/sec"
BURST = 20
# The rate limit counts per sending socket (source address and port), not per rule: a flood
# from one socket (a runaway script, a stuck retry loop) cannot starve the rescue request
# that `send` makes from a fresh socket, while each socket stays capped at 10/sec.
LIMIT_MODE = "srcip,srcport"
LIMIT_NAME = "sysrq-appliance"
# Explicit, though 10 s is iptables' own default here: python-iptables loses the default
# that libxt_hashlimit computes in its final check (the kernel then refuses expire 0).
LIMIT_EXPIRE_MS = 10000

# A probe's IP length: header + UDP header, no payload (see above).
PROBE_LENGTH = {4: 28, 6: 48}
REJECT_WITH = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}

_TARGET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,28}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_COUNTED_RULE = re.compile(r"\[(\d+):(\d+)\] (-A (\S+)( .*)?)")


class FirewallError(ApplianceError):
    """iptables refused a change, or the kernel holds something other than we wrote."""


@dataclasses.dataclass(frozen=True)
class PeerRule:
    """One sender allowed to trigger: its tunnel address, ours, the UDP port, its MAC."""

    peer: str
    local: str
    port: int
    mac: str | None = None


@dataclasses.dataclass(frozen=True)
class ProbeRule:
    """The health probe from the sender of `of` (the same addresses, port and MAC),
    answered (REJECT) before it can reach that PeerRule's SYSRQ."""

    of: PeerRule


@dataclasses.dataclass(frozen=True)
class DropRule:
    """Every other packet to the SysRq port, dropped (ChainSpec.drop_other)."""

    port: int


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """The desired content of our chain for one address family (4 or 6)."""

    family: int
    rules: tuple[PeerRule, ...]
    port: int
    drop_other: bool = True
    target: str = "SYSRQ"


@dataclasses.dataclass(frozen=True)
class ObservedChain:
    """Our chain as the kernel holds it.

    `lines` are its rules in `iptables-save` form, `counters` their (packets, bytes);
    `jump_present` is true when INPUT's first rule is our jump, `jump_count` counts our
    jump rules (`-A INPUT -j SYSRQ-APPLIANCE`) anywhere in INPUT.
    """

    family: int
    lines: tuple[str, ...]
    counters: tuple[tuple[int, int], ...]
    jump_present: bool
    jump_count: int

    @property
    def rules(self) -> tuple:
        """Each line as the rule value it renders from — (PeerRule, target), ProbeRule or
        DropRule — or None for a line we never write."""
        return tuple(parse_rule(line, self.family) for line in self.lines)


class Backend(Protocol):
    name: str

    def observe(self, family: int) -> ObservedChain | None:
        """Our chain and jump, or None when our chain does not exist."""

    def install(self, spec: ChainSpec) -> None:
        """Make our chain exactly `spec` with one jump at the top of INPUT; idempotent."""

    def remove(self, family: int) -> None:
        """Remove our jump(s) and our chain; nothing to do when absent."""


# ---------------------------------------------------------------------------- rendering

def render(spec: ChainSpec) -> list[str]:
    """The rule lines of our chain, exactly as `iptables-save` prints them."""
    if spec.family not in (4, 6):
        raise InputError(f"firewall: address family must be 4 or 6, not {spec.family!r}")
    if not _TARGET_NAME.fullmatch(spec.target):
        raise InputError(f"firewall: bad target name {spec.target!r}")
    return [rule_line(rule, spec.family, spec.target) for rule in chain_rules(spec)]


def chain_rules(spec: ChainSpec) -> list:
    """The rule values of our chain in order: per peer its probe, then its trigger; the
    drop rule last."""
    rules = []
    for peer in spec.rules:
        rules += [ProbeRule(peer), peer]
    if spec.drop_other:
        rules.append(DropRule(spec.port))
    return rules


@dataclasses.dataclass(frozen=True)
class Match:
    """`-m NAME --OPTION VALUE ...`, options in the order iptables-save prints them."""

    name: str
    options: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class RuleParts:
    """One rule of our chain as data: `-s SRC -d DST -p PROTOCOL MATCHES -j TARGET`. The
    one rendering of our rules: save_line() writes it as text (the nft backend, plan, the
    read-back check), the legacy backend builds python-iptables objects from it."""

    src: str | None
    dst: str | None
    protocol: str
    matches: tuple[Match, ...]
    target: str
    target_options: tuple[tuple[str, str], ...] = ()


def rule_parts(rule, family: int, target: str = "SYSRQ") -> RuleParts:
    """A PeerRule (jumping to `target`), a ProbeRule or a DropRule, checked, as RuleParts."""
    if isinstance(rule, DropRule):
        return RuleParts(None, None, "udp", (Match("udp", (("dport", str(_port(rule.port))),)),),
                         "DROP")
    probe = isinstance(rule, ProbeRule)
    if probe:
        rule = rule.of
    peer, local = _address(rule.peer, family), _address(rule.local, family)
    host = 32 if family == 4 else 128
    matches = [Match("udp", (("dport", str(_port(rule.port))),))]
    if probe:
        matches.append(Match("length", (("length", str(PROBE_LENGTH[family])),)))
    matches.append(Match("policy", (("dir", "in"), ("pol", "ipsec"), ("proto", "esp"),
                                    ("mode", "tunnel"), ("tunnel-dst", local),
                                    ("tunnel-src", peer))))
    if rule.mac is not None:
        matches.append(Match("mac", (("mac-source", _mac(rule.mac)),)))
    if probe:
        return RuleParts(f"{peer}/{host}", f"{local}/{host}", "udp", tuple(matches), "REJECT",
                         (("reject-with", REJECT_WITH[family]),))
    matches.append(Match("hashlimit", (
        ("hashlimit-upto", RATE), ("hashlimit-burst", str(BURST)),
        ("hashlimit-mode", LIMIT_MODE), ("hashlimit-name", LIMIT_NAME),
        ("hashlimit-htable-expire", str(LIMIT_EXPIRE_MS)))))
    return RuleParts(f"{peer}/{host}", f"{local}/{host}", "udp", tuple(matches), target)


def save_line(parts: RuleParts) -> str:
    """RuleParts exactly as `iptables-save` prints the rule."""
    words = [f"-A {CHAIN}"]
    words += [f"-s {parts.src}"] if parts.src else []
    words += [f"-d {parts.dst}"] if parts.dst else []
    words.append(f"-p {parts.protocol}")
    for match in parts.matches:
        words.append(f"-m {match.name}")
        words += [f"--{option} {value}" for option, value in match.options]
    words.append(f"-j {parts.target}")
    words += [f"--{option} {value}" for option, value in parts.target_options]
    return " ".join(words)


def rule_line(rule, family: int, target: str = "SYSRQ") -> str:
    """One rule value as its `iptables-save` line: a PeerRule (jumping to `target`), a
    ProbeRule or a DropRule. render() of a whole chain is made of these."""
    return save_line(rule_parts(rule, family, target))


_PEER_LINE = re.compile(
    rf"-A {re.escape(CHAIN)} -s (?P<peer>[0-9a-f.:]+)/(?:32|128) -d (?P<local>[0-9a-f.:]+)/(?:32|128)"
    r" -p udp -m udp --dport (?P<port>[0-9]{1,5}) -m policy .*?"
    r"(?: -m mac --mac-source (?P<mac>[0-9a-f:]{17}))? -m hashlimit .* -j (?P<target>\S+)")
_PROBE_LINE = re.compile(
    rf"-A {re.escape(CHAIN)} -s (?P<peer>[0-9a-f.:]+)/(?:32|128) -d (?P<local>[0-9a-f.:]+)/(?:32|128)"
    r" -p udp -m udp --dport (?P<port>[0-9]{1,5}) -m length --length [0-9]+ -m policy .*?"
    r"(?: -m mac --mac-source (?P<mac>[0-9a-f:]{17}))? -j REJECT --reject-with \S+")
_DROP_LINE = re.compile(rf"-A {re.escape(CHAIN)} -p udp -m udp --dport (?P<port>[0-9]{{1,5}}) -j DROP")


def parse_rule(line: str, family: int):
    """The rule value `line` renders from: (PeerRule, target), ProbeRule, DropRule, or None
    when the line is not exactly what rule_line would write for it (someone else's, or
    altered)."""
    try:
        if match := _DROP_LINE.fullmatch(line):
            rule = DropRule(int(match["port"]))
            return rule if rule_line(rule, family) == line else None
        if match := _PROBE_LINE.fullmatch(line):
            rule = ProbeRule(PeerRule(match["peer"], match["local"], int(match["port"]),
                                      match["mac"]))
            return rule if rule_line(rule, family) == line else None
        if match := _PEER_LINE.fullmatch(line):
            rule = PeerRule(match["peer"], match["local"], int(match["port"]), match["mac"])
            target = match["target"]
            return (rule, target) if rule_line(rule, family, target) == line else None
    except InputError:   # an address of the other family, a port out of range
        return None
    return None


def token(value: str, what: str) -> str:
    """A field of a rule line: one word of printable characters, or InputError.

    Defence in depth: the config already validates every field, but a restore script is a
    program, and a newline in a field would be a line of someone else's choosing."""
    if not isinstance(value, str) or not value or not value.isprintable() \
            or any(c.isspace() for c in value):
        raise InputError(f"firewall: {what} {excerpt(value)} holds whitespace or a control "
                         "character; refusing to write it into a rule")
    return value


def check_script(lines: list[str]) -> list[str]:
    """Every line of a restore script printable, with no line breaks inside."""
    for line in lines:
        if not line.isprintable():
            raise InputError(f"firewall: refusing a restore line with a control character: "
                             f"{excerpt(line)}")
    return lines


def _address(text: str, family: int) -> str:
    token(text, "address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InputError(f"firewall: {text!r} is not an IP address") from None
    if getattr(address, "scope_id", None):
        raise InputError(f"firewall: {text!r} has a zone id; give the address alone")
    if address.version != family:
        raise InputError(f"firewall: {text} is not an IPv{family} address")
    return str(address)


def _port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"firewall: port must be 1-65535, not {port!r}")
    return port


def _mac(text: str) -> str:
    mac = token(text, "MAC").lower()
    if not _MAC.fullmatch(mac):
        raise InputError(f"firewall: {text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


# ---------------------------------------------------------------------------- reading back

def parse_save(text: str, family: int) -> ObservedChain | None:
    """Our chain and jumps from the filter table in `iptables-save -c` output."""
    in_filter = exists = False
    lines, counters, input_rules = [], [], []
    for line in text.splitlines():
        if line.startswith("*"):
            in_filter = line == "*filter"
        elif not in_filter:
            continue
        elif line.startswith(f":{CHAIN} "):
            exists = True
        elif match := _COUNTED_RULE.fullmatch(line):
            packets, octets, rule, chain = match.group(1, 2, 3, 4)
            if chain == CHAIN:
                lines.append(rule)
                counters.append((int(packets), int(octets)))
            elif chain == "INPUT":
                input_rules.append(rule)
    if not exists:
        return None
    return ObservedChain(family=family, lines=tuple(lines), counters=tuple(counters),
                         jump_present=input_rules[:1] == [JUMP],
                         jump_count=input_rules.count(JUMP))


def jump_in_place(observed: ObservedChain | None) -> bool:
    """Exactly one jump to our chain, and it is INPUT's first rule."""
    return observed is not None and observed.jump_present and observed.jump_count == 1


def mismatch(observed: ObservedChain | None, spec: ChainSpec) -> str | None:
    """What differs between the kernel's state and `spec`, or None when nothing does."""
    if observed is None:
        return f"chain {CHAIN} does not exist"
    if not jump_in_place(observed):
        return (f"INPUT has {observed.jump_count} jump(s) to {CHAIN}, "
                f"first rule is{'' if observed.jump_present else ' not'} ours")
    wanted = render(spec)
    if list(observed.lines) != wanted:
        return ("chain content differs:\n  wanted: " + "\n          ".join(wanted)
                + "\n  found:  " + "\n          ".join(observed.lines))
    return None


# ---------------------------------------------------------------------------- as a script

DELETE_JUMP = f"-D INPUT -j {CHAIN}"
INSERT_JUMP = f"-I INPUT 1 -j {CHAIN}"
TOOLS = {4: "iptables", 6: "ip6tables"}


def install_script(spec: ChainSpec, before: ObservedChain | None) -> list[str]:
    """The iptables-restore script that turns `before` into `spec`."""
    script = ["*filter", f"-F {CHAIN}" if before is not None else f":{CHAIN} - [0:0]"]
    script += render(spec)
    if not jump_in_place(before):
        script += [DELETE_JUMP] * (before.jump_count if before is not None else 0)
        script.append(INSERT_JUMP)
    return script + ["COMMIT"]


def remove_script(before: ObservedChain) -> list[str]:
    """The iptables-restore script that removes our jumps and chain."""
    return ["*filter", *[DELETE_JUMP] * before.jump_count, f"-F {CHAIN}", f"-X {CHAIN}", "COMMIT"]


def as_commands(family: int, script: list[str]) -> tuple[str, ...]:
    """A restore script as the `iptables` commands it stands for (one transaction in fact)."""
    tool = TOOLS[family]
    commands = []
    for line in script:
        if line.startswith(":"):
            commands.append(f"{tool} -N {line[1:].split()[0]}")
        elif line.startswith("-"):
            commands.append(f"{tool} {line}")
    return tuple(commands)


# ---------------------------------------------------------------------------- shared machinery

def run(argv: list[str], stdin: str | None = None) -> str:
    """Run an iptables tool: its stdout, or FirewallError carrying its stderr."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        said = "; ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        raise FirewallError(f"{argv[0]} failed (exit {done.returncode}): {said[:500]}")
    return done.stdout


class ChainBackend:
    """The install/remove procedure common to both backends.

    A backend names its save tools and supplies `_write` (our chain as `spec` plus the
    jump fixed, in one commit) and `_delete` (our jumps and chain, in one commit).
    Every write is read back: if the kernel then holds anything but `spec`, our chain
    and jump are removed (fail closed) and FirewallError says what differed.
    """

    name: str
    save_tools: dict[int, str]

    def _write(self, spec: ChainSpec, before: ObservedChain | None) -> None:
        raise NotImplementedError

    def _delete(self, before: ObservedChain) -> None:
        raise NotImplementedError

    def _locked(self):
        """Held around read-modify-write; legacy iptables needs the xtables lock."""
        return contextlib.nullcontext()

    def observe(self, family: int) -> ObservedChain | None:
        if family not in self.save_tools:
            raise InputError(f"firewall: address family must be 4 or 6, not {family!r}")
        return parse_save(run([self.save_tools[family], "-c"]), family)

    def install(self, spec: ChainSpec) -> None:
        render(spec)  # reject a bad spec before touching anything
        with self._locked():
            before = self.observe(spec.family)
            if mismatch(before, spec) is None:
                return
            self._write(spec, before)
            problem = mismatch(self.observe(spec.family), spec)
            if problem is None:
                return
            self._remove(spec.family)
        raise FirewallError(f"{self.name} backend: after writing IPv{spec.family} {CHAIN}, "
                            f"{problem}\n(our chain and jump were removed again)")

    def remove(self, family: int) -> None:
        with self._locked():
            self._remove(family)

    def _remove(self, family: int) -> None:
        before = self.observe(family)
        if before is None:
            return
        self._delete(before)
        if self.observe(family) is not None:
            raise FirewallError(f"{self.name} backend: IPv{family} {CHAIN} still exists after removal")


# ---------------------------------------------------------------------------- backend choice



def legacy_chain_present() -> bool:
    """Our chain in the IPv4 legacy tables (a warning when iptables uses nf_tables)."""
    from sysrq_appliance.firewall.legacy import LegacyBackend
    try:
        out = subprocess.run([LegacyBackend.save_tools[4]], capture_output=True,
                             text=True).stdout
    except FileNotFoundError:
        return False
    return f":{CHAIN} " in out


def detect_backend() -> str:
    """"nft" or "legacy": the backend the system's `iptables` uses (`iptables -V`)."""
    version = run(["iptables", "-V"])
    if "(nf_tables)" in version:
        return NFT
    if "(legacy)" in version:
        return LEGACY
    raise FirewallError(f"cannot tell the iptables backend from `iptables -V`: {version.strip()!r}")


def get_backend(name: str) -> Backend:
    """The backend called `name`: "auto" (as `iptables -V` says), "nft" or "legacy"."""
    if name == "auto":
        name = detect_backend()
    if name == NFT:
        from sysrq_appliance.firewall.nft import NftBackend
        return NftBackend()
    if name == LEGACY:
        from sysrq_appliance.firewall.legacy import LegacyBackend
        return LegacyBackend()
    raise InputError(f"firewall.backend must be auto, nft or legacy, not {name!r}")

"""The kernel's xfrm structures (include/uapi/linux/xfrm.h): requests declared on pyroute2's
netlink framework and encoded from our values; replies decoded back into values with
fixed-layout `struct` reads (a fleet's dump is thousands of them). All pure.

pyroute2 has no XFRM API, only its generic framework, so the structures are declared here
as pyroute2 messages (`fields`, `nla_map`). pyroute2 packs each field on its own, so C
padding is spelled out as `x` fields; the layout is the LP64 one (u64 aligned to 8) of amd64
and arm64. Sizes: xfrm_usersa_info 224, xfrm_userpolicy_info 168, xfrm_user_tmpl 64,
xfrm_usersa_id 24 bytes (tests/unit/test_xfrm_encoding.py checks them).
"""

import ipaddress
import struct
from socket import AF_INET, AF_INET6

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, nla, nlmsg

from .values import (DIRECTIONS, IPPROTO_ESP, REPLAY_WINDOW, Algorithm, Policy, Selector, State,
                     StateCounters, Template, _parse_address)

XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 16, 17, 18
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 19, 20, 21
XFRM_MSG_UPDPOLICY, XFRM_MSG_UPDSA = 25, 26  # UPDSA unused: see XfrmSocket.update_state
XFRMA_ALG_AUTH, XFRMA_ALG_CRYPT, XFRMA_TMPL, XFRMA_SRCADDR, XFRMA_POLICY_TYPE = 1, 2, 5, 13, 16
XFRMA_REPLAY_VAL = 10
XFRMA_ALG_AEAD, XFRMA_ALG_AUTH_TRUNC, XFRMA_MARK, XFRMA_IF_ID = 18, 20, 21, 31
XFRM_INF = 2**64 - 1
XFRM_MODE_TUNNEL = 1
ANY_ALGORITHM = 0xFFFFFFFF  # template aalgos/ealgos/calgos, as iproute2 sends them


def _selector_fields():  # struct xfrm_selector, 56 bytes
    return (("sel_daddr", "16s"), ("sel_saddr", "16s"), ("sel_dport", ">H"), ("sel_dport_mask", ">H"),
            ("sel_sport", ">H"), ("sel_sport_mask", ">H"), ("sel_family", "H"), ("sel_prefixlen_d", "B"),
            ("sel_prefixlen_s", "B"), ("sel_proto", "B"), ("sel_pad", "3x"), ("sel_ifindex", "i"),
            ("sel_user", "I"))


_LIFETIMES = (tuple((f"lft_{n}", "Q") for n in (  # struct xfrm_lifetime_cfg, 64 bytes
    "soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit",
    "soft_add_expires_seconds", "hard_add_expires_seconds", "soft_use_expires_seconds",
    "hard_use_expires_seconds"))
    + tuple((f"cur_{n}", "Q") for n in ("bytes", "packets", "add_time", "use_time")))  # _cur, 32
_NO_LIMITS = {f"lft_{n}_limit": XFRM_INF for n in ("soft_byte", "hard_byte", "soft_packet", "hard_packet")}


class _xfrm_msg(nlmsg):
    """The attributes we write; the message classes below share them."""

    class _algo(nla):
        """struct xfrm_algo{,_auth,_aead}: fixed fields, then the key (a flexible array)."""

        def ft_encode(self, offset):
            offset, _ = super().ft_encode(offset)  # the fixed 68 or 72 bytes: no padding
            key = self["alg_key"]
            pad = -len(key) % 4
            self.data.extend(key + bytes(pad))
            return offset + len(key) + pad, pad  # nla_len counts the key, not the padding

    class xfrm_algo(_algo):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"))

    class xfrm_algo_auth(_algo):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_trunc_len", "I"))

    class xfrm_algo_aead(_algo):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_icv_len", "I"))

    class xfrm_user_tmpl(nla):
        """XFRMA_TMPL: one 64-byte template (we write one; decode_policy reads arrays)."""
        fields = (("id_daddr", "16s"), ("id_spi", ">I"), ("id_proto", "B"), ("pad1", "3x"),
                  ("family", "H"), ("pad2", "2x"), ("saddr", "16s"), ("reqid", "I"), ("mode", "B"),
                  ("share", "B"), ("optional", "B"), ("pad3", "x"),
                  ("aalgos", "I"), ("ealgos", "I"), ("calgos", "I"))

    class xfrm_address(nla):
        fields = (("value", "16s"),)

    class xfrm_replay_state(nla):
        """The SA's sequence counters: oseq = the last sequence number sent."""
        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    nla_map = ((XFRMA_ALG_CRYPT, "XFRMA_ALG_CRYPT", "xfrm_algo"),
               (XFRMA_TMPL, "XFRMA_TMPL", "xfrm_user_tmpl"),
               (XFRMA_REPLAY_VAL, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
               (XFRMA_SRCADDR, "XFRMA_SRCADDR", "xfrm_address"),
               (XFRMA_ALG_AEAD, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
               (XFRMA_ALG_AUTH_TRUNC, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"))


class xfrm_usersa_info(_xfrm_msg):
    """224 bytes: NEWSA requests (decode_state reads the replies)."""
    fields = (_selector_fields() + (("id_daddr", "16s"), ("id_spi", ">I"), ("id_proto", "B"), ("pad1", "3x"),
                                    ("saddr", "16s")) + _LIFETIMES
              + (("stats_replay_window", "I"), ("stats_replay", "I"), ("stats_integrity_failed", "I"),
                 ("seq", "I"), ("reqid", "I"), ("family", "H"), ("mode", "B"), ("replay_window", "B"),
                 ("flags", "B"), ("pad2", "7x")))


class xfrm_usersa_id(_xfrm_msg):
    """24 bytes: DELSA and GETSA requests (+ XFRMA_SRCADDR, which iproute2 always sends)."""
    fields = (("daddr", "16s"), ("spi", ">I"), ("family", "H"), ("proto", "B"), ("pad", "x"))


class xfrm_userpolicy_info(_xfrm_msg):
    """168 bytes: NEWPOLICY/UPDPOLICY requests (decode_policy reads the replies)."""
    fields = (_selector_fields() + _LIFETIMES
              + (("priority", "I"), ("index", "I"), ("dir", "B"), ("action", "B"), ("flags", "B"),
                 ("share", "B"), ("pad", "4x")))


class xfrm_userpolicy_id(_xfrm_msg):
    """64 bytes: DELPOLICY and GETPOLICY requests."""
    fields = _selector_fields() + (("index", "I"), ("dir", "B"), ("pad", "3x"))


# --- Encoding and decoding (pure) -----------------------------------------------------------

def _new(cls, **values):
    msg = cls()
    msg.update({name: b"" for name, fmt in cls.fields if fmt.endswith("s")})  # zero-filled
    msg.update(values)
    return msg


def _addr(text):
    ip = ipaddress.ip_address(text)
    return (AF_INET if ip.version == 4 else AF_INET6), ip.packed.ljust(16, b"\0")


def _text(family, raw):
    return _parse_address(bytes(raw[:4] if family == AF_INET else raw[:16]))[0]


def _selector_values(sel):
    family, dst = _addr(sel.dst)
    bits = 32 if family == AF_INET else 128
    return {"sel_daddr": dst, "sel_saddr": _addr(sel.src)[1], "sel_family": family, "sel_proto": sel.proto,
            "sel_prefixlen_d": bits, "sel_prefixlen_s": bits,
            "sel_sport": sel.sport or 0, "sel_sport_mask": 0 if sel.sport is None else 0xFFFF,
            "sel_dport": sel.dport or 0, "sel_dport_mask": 0 if sel.dport is None else 0xFFFF}


def state_msg(s: State) -> xfrm_usersa_info:
    """`ip xfrm state add src S dst D proto esp spi SPI reqid R mode tunnel replay-window 32 ALGS`
    (no SA selector, as iproute2 without `sel`)."""
    family, dst = _addr(s.dst)
    msg = _new(xfrm_usersa_info, id_daddr=dst, id_spi=s.spi, id_proto=IPPROTO_ESP, saddr=_addr(s.src)[1],
               reqid=s.reqid, family=family, mode=XFRM_MODE_TUNNEL, replay_window=REPLAY_WINDOW, **_NO_LIMITS)
    for attr, alg, bits in (("XFRMA_ALG_AEAD", s.aead, "alg_icv_len"), ("XFRMA_ALG_CRYPT", s.crypt, None),
                            ("XFRMA_ALG_AUTH_TRUNC", s.auth, "alg_trunc_len")):
        if alg is not None:
            value = {"alg_name": alg.name.encode(), "alg_key_len": len(alg.key) * 8, "alg_key": alg.key}
            msg["attrs"].append((attr, {**value, bits: alg.bits} if bits else value))
    if s.oseq:
        msg["attrs"].append(("XFRMA_REPLAY_VAL", {"oseq": s.oseq, "seq": 0, "bitmap": 0}))
    return msg


def state_id_msg(s: State) -> xfrm_usersa_id:
    """`ip xfrm state delete|get src S dst D proto esp spi SPI`."""
    family, dst = _addr(s.dst)
    msg = _new(xfrm_usersa_id, daddr=dst, spi=s.spi, family=family, proto=IPPROTO_ESP)
    msg["attrs"].append(("XFRMA_SRCADDR", _addr(s.src)[1]))
    return msg


def policy_msg(p: Policy) -> xfrm_userpolicy_info:
    """`ip xfrm policy add SELECTOR dir DIR priority P tmpl src S dst D proto esp reqid R mode tunnel`."""
    if p.template is None:
        raise ValueError("Policy: we only write policies with a template")
    family, dst = _addr(p.template.dst)
    msg = _new(xfrm_userpolicy_info, priority=p.priority, dir=DIRECTIONS.index(p.dir),
               **_selector_values(p.selector), **_NO_LIMITS)
    msg["attrs"].append(("XFRMA_TMPL", {
        "id_daddr": dst, "id_spi": 0, "id_proto": IPPROTO_ESP, "family": family,
        "saddr": _addr(p.template.src)[1], "reqid": p.template.reqid, "mode": XFRM_MODE_TUNNEL,
        "share": 0, "optional": 0, "aalgos": ANY_ALGORITHM, "ealgos": ANY_ALGORITHM, "calgos": ANY_ALGORITHM}))
    return msg


def socket_policy_bytes(p: Policy) -> bytes:
    """The same policy as the IP_XFRM_POLICY socket option takes it: the 168-byte
    xfrm_userpolicy_info followed by the 64-byte template, without netlink headers."""
    msg = policy_msg(p)
    msg.encode()
    body = bytes(msg.data[16:16 + 168])          # after the 16-byte nlmsghdr
    template = bytes(msg.data[16 + 168 + 4:16 + 168 + 4 + 64])   # after the 4-byte nlattr
    return body + template


def policy_id_msg(p: Policy) -> xfrm_userpolicy_id:
    """`ip xfrm policy delete|get SELECTOR dir DIR`."""
    return _new(xfrm_userpolicy_id, dir=DIRECTIONS.index(p.dir), **_selector_values(p.selector))


def request_bytes(msg, msg_type: int, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> bytes:
    """The whole request as XfrmSocket sends it, with sequence number and port 0 (for tests)."""
    msg["header"].update(type=msg_type, flags=flags, sequence_number=0, pid=0)
    msg.reset()
    msg.encode()
    return bytes(msg.data)


# --- Decoding replies (pure): fixed layouts read with struct --------------------------------
# A fleet's dump is thousands of replies; pyroute2's generic decoder spent ~0.1 ms on each.

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_MULTI, NLM_F_DUMP_INTR = 0x2, 0x10
_NLMSGHDR = struct.Struct("=IHHII")      # length, type, flags, sequence number, port
_NLATTR = struct.Struct("=HH")           # length, type
_SELECTOR = struct.Struct("=16s16s8xHBBB3xi4x")   # daddr saddr (ports) family plen_d plen_s proto ifindex
_PORTS = struct.Struct(">HHHH")          # dport, dport_mask, sport, sport_mask at offset 32
_POLICY_TAIL = struct.Struct("=I4xBB")   # priority, (index), dir, action at offset 152
_SA_ID = struct.Struct("=16s4sB3x16s")   # id.daddr, id.spi (big endian), id.proto, saddr at 56
_SA_COUNTERS = struct.Struct("=QQ16xIII4xIHB")   # cur bytes, packets (at 160), stats, reqid, family, mode
_TEMPLATE = struct.Struct("=16s4sB3xH2x16sIBxBx12x")  # daddr spi proto family saddr reqid mode optional
POLICY_INFO_BYTES, SA_INFO_BYTES, TEMPLATE_BYTES = 168, 224, 64


def _align(n):
    return (n + 3) & ~3


def split_messages(buf):
    """(type, flags, sequence number, body) of each netlink message in `buf`."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(buf):
        length, msg_type, flags, seq, _port = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > len(buf):
            break
        yield msg_type, flags, seq, bytes(buf[offset + _NLMSGHDR.size:offset + length])
        offset += _align(length)


def _attributes(body, start):
    """{type: payload} of the attributes after the fixed part; the first of a type wins."""
    found, offset = {}, start
    while offset + _NLATTR.size <= len(body):
        length, kind = _NLATTR.unpack_from(body, offset)
        if length < _NLATTR.size:
            break
        found.setdefault(kind, body[offset + _NLATTR.size:offset + length])
        offset += _align(length)
    return found


def _text(family, raw):
    return _parse_address(raw[:4] if family == AF_INET else raw[:16])[0]


def _u32s(payload, count):
    return struct.unpack_from(f"={count}I", payload.ljust(4 * count, b"\0"))


def _marked(attrs):
    """A mark or an xfrm interface id makes it a different kernel object from any of ours."""
    mark = attrs.get(XFRMA_MARK)
    return (mark is not None and any(_u32s(mark, 2))) or \
        (XFRMA_IF_ID in attrs and bool(_u32s(attrs[XFRMA_IF_ID], 1)[0]))


def _read_selector(body):
    """The Selector, or None if not host to host with whole ports (not a shape of ours)."""
    daddr, saddr, family, plen_d, plen_s, proto, ifindex = _SELECTOR.unpack_from(body)
    dport, dport_mask, sport, sport_mask = _PORTS.unpack_from(body, 32)
    bits = {AF_INET: 32, AF_INET6: 128}.get(family)
    ports = {"sport": {0: None, 0xFFFF: sport}.get(sport_mask, -1),
             "dport": {0: None, 0xFFFF: dport}.get(dport_mask, -1)}
    if bits is None or (plen_s, plen_d) != (bits, bits) or ifindex or -1 in ports.values():
        return None
    try:
        return Selector(_text(family, saddr), _text(family, daddr), proto, **ports)
    except ValueError:  # ports without a protocol
        return None


def _algorithm(payload, with_bits=False):
    """struct xfrm_algo{,_auth,_aead}: name, key length in bits, [icv/trunc bits], key."""
    if payload is None:
        return None
    fixed = 72 if with_bits else 68
    name = payload[:64].split(b"\0", 1)[0].decode("ascii")
    key_bits, bits = _u32s(payload[64:72], 2)
    return Algorithm(name, payload[fixed:fixed + (key_bits + 7) // 8], bits if with_bits else 0)


def decode_state(body) -> tuple[State, StateCounters] | None:
    """A NEWSA body as (State, StateCounters), or None for SAs of a shape we never create
    (not ESP tunnel, marked) and for larval ones (spi 0: the kernel waits for a key manager)."""
    if len(body) < SA_INFO_BYTES:
        return None
    daddr, spi, proto, saddr = _SA_ID.unpack_from(body, 56)
    nbytes, packets, window, replay, integrity, reqid, family, mode = \
        _SA_COUNTERS.unpack_from(body, 160)
    spi = int.from_bytes(spi, "big")
    attrs = _attributes(body, SA_INFO_BYTES)
    if (proto != IPPROTO_ESP or mode != XFRM_MODE_TUNNEL or not spi
            or family not in (AF_INET, AF_INET6) or _marked(attrs)):
        return None
    replay_val = attrs.get(XFRMA_REPLAY_VAL)
    try:
        state = State(_text(family, saddr), _text(family, daddr), spi, reqid,
                      aead=_algorithm(attrs.get(XFRMA_ALG_AEAD), True),
                      crypt=_algorithm(attrs.get(XFRMA_ALG_CRYPT)),
                      auth=_algorithm(attrs.get(XFRMA_ALG_AUTH_TRUNC), True),
                      oseq=_u32s(replay_val, 1)[0] if replay_val is not None else 0)
    except ValueError:  # e.g. an algorithm combination we never use
        return None
    return state, StateCounters(nbytes, packets, replay, integrity, window)


def decode_policy(body) -> Policy | None:
    """A NEWPOLICY body as Policy, or None for policies that cannot collide with ours
    (not host to host, sub type, marked); template=None for other foreign shapes."""
    if len(body) < POLICY_INFO_BYTES:
        return None
    selector = _read_selector(body)
    priority, direction, action = _POLICY_TAIL.unpack_from(body, 152)
    attrs = _attributes(body, POLICY_INFO_BYTES)
    ptype = attrs.get(XFRMA_POLICY_TYPE)
    if selector is None or direction >= len(DIRECTIONS) or _marked(attrs) or (ptype and ptype[0]):
        return None
    templates = attrs.get(XFRMA_TMPL, b"")
    template = None
    if len(templates) // TEMPLATE_BYTES == 1 and action == 0:
        daddr, spi, proto, family, saddr, reqid, mode, optional = _TEMPLATE.unpack_from(templates)
        if (proto, spi, mode, optional) == (IPPROTO_ESP, bytes(4), XFRM_MODE_TUNNEL, 0) \
                and family in (AF_INET, AF_INET6):
            template = Template(_text(family, saddr), _text(family, daddr), reqid)
    return Policy(selector, DIRECTIONS[direction], template, priority)

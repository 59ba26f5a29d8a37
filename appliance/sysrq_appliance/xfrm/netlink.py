"""The NETLINK_XFRM socket: one method per kernel verb, each with its `ip xfrm` equivalent.

Foreign objects are never changed: update and delete first ask the kernel what sits at
that key, and refuse if it is not ours.
"""

import errno
import ipaddress
import os
import socket
import struct

from pyroute2.netlink import NETLINK_XFRM, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, nlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkSocket

from ..errors import ApplianceError
from .messages import (NLM_F_DUMP_INTR, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, XFRM_MSG_DELPOLICY,
                       XFRM_MSG_DELSA, XFRM_MSG_GETPOLICY, XFRM_MSG_GETSA, XFRM_MSG_NEWPOLICY,
                       XFRM_MSG_NEWSA, XFRM_MSG_UPDPOLICY, decode_policy, decode_state,
                       _align, policy_id_msg, policy_msg, split_messages, state_id_msg,
                       state_msg)
from .values import IPPROTO_ICMP, IPPROTO_ICMPV6, Policy, State, StateCounters, is_ours


class XfrmError(ApplianceError):
    """The kernel refused an xfrm request; `errno` is its error number (0: refused by us)."""

    def __init__(self, message: str, errno: int = 0):
        super().__init__(message)
        self.errno = errno


class XfrmExists(XfrmError):
    """EEXIST: an add found an SA or policy already at that key."""


class XfrmNotFound(XfrmError):
    """ESRCH (SA) or ENOENT (policy): nothing at that key."""


class EspUnsupported(XfrmError):
    """The kernel lacks ESP, or the SA's algorithm; str() starts with MESSAGE."""
    MESSAGE = "this kernel has no ESP support"


# Measured on a kernel without INET_ESP: EPROTONOSUPPORT ("Requested type not found"), and
# ENOSYS first when the algorithm is missing too ("Requested AEAD algorithm not found").
ESP_ERRNOS = (errno.EPROTONOSUPPORT, errno.ENOSYS, errno.ENOPROTOOPT)


def _describe_state(s):
    return f"src {s.src} dst {s.dst} proto esp spi {s.spi:#010x} reqid {s.reqid:#x}"


def _describe_policy(p):
    sel = p.selector
    bits = 32 if ipaddress.ip_address(sel.src).version == 4 else 128
    text = f"src {sel.src}/{bits} dst {sel.dst}/{bits}" + (f" proto {sel.proto}" if sel.proto else "")
    words = ("type", "code") if sel.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) else ("sport", "dport")
    text += "".join(f" {w} {v}" for w, v in zip(words, (sel.sport, sel.dport)) if v is not None)
    return f"{text} dir {p.dir}"


def _error(verb, what, e):
    subject = f"ip xfrm {verb} {what}".rstrip()
    reason = os.strerror(e.code)
    kernel = e.args[1] if len(e.args) > 1 and e.args[1] != reason else None  # extack text
    detail = f"{reason} (kernel: {kernel})" if kernel else reason
    if verb.startswith("state ") and e.code in ESP_ERRNOS:
        return EspUnsupported(f"{EspUnsupported.MESSAGE} ({subject}: {detail}); "
                              "it needs esp4/esp6 and the SA's crypto algorithms", e.code)
    cls = {errno.EEXIST: XfrmExists, errno.ESRCH: XfrmNotFound, errno.ENOENT: XfrmNotFound}.get(e.code, XfrmError)
    return cls(f"{subject}: {detail}", e.code)


# --- The socket -----------------------------------------------------------------------------

class XfrmSocket(NetlinkSocket):
    """NETLINK_XFRM in the network namespace that is current when it is created: pyroute2's
    NetlinkSocket speaking the messages of `messages`.

        with XfrmSocket() as xfrm:
            xfrm.add_policy(policy)                  # one request, its answer
            errors = xfrm.add_policies(policies)     # many per sendmsg, ACKs read together
    """

    # Requests per sendmsg: well under the send buffer (the kernel refuses a message larger
    # than it), and their ACKs well under the receive buffer, or the kernel drops the ACKs
    # that do not fit. One ACK takes up to ~1.3 KiB of that buffer (the skb's truesize, more
    # when it carries a refused request back), so a batch has at most rcvbuf / ACK_BYTES
    # requests: ~200 with Debian's default net.core.rmem_max, where 64 KiB of 60-byte SA
    # deletes (1,092) overflowed it.
    BATCH_BYTES = 64 * 1024
    ACK_BYTES = 2048
    RECV_BYTES = 1 << 20

    def __init__(self):
        try:
            super().__init__(NETLINK_XFRM, ext_ack=True)  # ext_ack: the kernel says why
        except OSError as e:
            raise XfrmError(f"cannot open NETLINK_XFRM: {e.strerror} (no XFRM_USER in this kernel?)",
                            e.errno) from None
        self.bind()
        self._batch_seq = BATCH_SEQ_BASE

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, verb, what, msg, msg_type, flags=NLM_F_REQUEST | NLM_F_ACK):
        try:
            return self._exchange(msg, msg_type, flags)
        except NetlinkError as e:
            raise _error(verb, what, e) from None  # one line; the kernel's reason is in it

    def _next_seq(self):
        self._batch_seq = BATCH_SEQ_BASE + (self._batch_seq + 1 - BATCH_SEQ_BASE) % BATCH_SEQ_SPAN
        return self._batch_seq

    def _exchange(self, msg, msg_type, flags):
        """Send one request; return the (type, body) of the messages that answer it: a dump's,
        a get's one, none for an ACK. NetlinkError if the kernel refuses it. Replies are read
        as bytes (decode_state/decode_policy take it from there): pyroute2's generic decoder
        spent ~0.1 ms on each message of a fleet's dump."""
        seq = self._next_seq()
        msg["header"].update(type=msg_type, flags=flags, sequence_number=seq, pid=0)
        msg.reset()
        msg.encode()
        self._sock.sendto(bytes(msg.data), (0, 0))
        found = []
        while True:
            for kind, reply_flags, reply_seq, body in split_messages(self._sock.recv(self.RECV_BYTES)):
                if reply_seq != seq:
                    continue
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code, extack = _error_code(body, reply_flags if kind == NLMSG_ERROR else 0)
                    if code:
                        raise NetlinkError(code, extack) if extack else NetlinkError(code)
                    return found
                if reply_flags & NLM_F_DUMP_INTR:   # pyroute2 raised NetlinkDumpInterrupted
                    raise NetlinkError(errno.EINTR, "the dump was interrupted by a change; run it again")
                found.append((kind, body))
                if not reply_flags & NLM_F_MULTI:   # the one answer to a get
                    return found

    def request_many(self, requests):
        """Send [(msg, msg_type), ...] as acknowledged requests, as many per sendmsg as fit in
        BATCH_BYTES, and read their ACKs together. Returns, per request, the kernel's
        NetlinkError or None. The kernel handles each request on its own: one that fails
        does not stop the ones after it."""
        outcome = [None] * len(requests)
        data, pending = bytearray(), {}
        most = max(1, self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // self.ACK_BYTES)
        for index, (msg, msg_type) in enumerate(requests):
            msg["header"].update(type=msg_type, flags=NLM_F_REQUEST | NLM_F_ACK,
                                 sequence_number=self._next_seq(), pid=0)
            msg.reset()
            msg.encode()
            if data and (len(data) + len(msg.data) > self.BATCH_BYTES or len(pending) >= most):
                self._send_and_collect(data, pending, outcome)
                data, pending = bytearray(), {}
            data += msg.data
            pending[self._batch_seq] = index
        if data:
            self._send_and_collect(data, pending, outcome)
        return outcome

    def _send_and_collect(self, data, pending, outcome):
        self._sock.sendto(bytes(data), (0, 0))
        # The kernel handles the whole batch inside sendto: every ACK it will ever send is
        # queued by now. Read without waiting, so an ACK the kernel dropped (receive buffer
        # full) is an error for its request, never a wait that does not end.
        while pending:
            try:
                answers = self._sock.recv(self.RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:    # ENOBUFS: some were dropped; read the rest
                    raise
                continue
            for seq, code, extack in parse_acks(answers):
                index = pending.pop(seq, None)
                if index is not None and code:
                    outcome[index] = NetlinkError(code, extack) if extack else NetlinkError(code)
        for index in pending.values():
            outcome[index] = NetlinkError(errno.ENOBUFS, "its answer was dropped, our receive "
                                          "buffer was full; run the command again")

    def _many(self, verb, objects, describe, encode, msg_type):
        errors = self.request_many([(encode(o), msg_type) for o in objects])
        return [None if e is None else _error(verb, describe(o), e) for o, e in zip(objects, errors)]

    def _get_ours(self, verb, what, msg, msg_type, decode, ours):
        """`ip xfrm state|policy get`: the decoded object there; XfrmError unless it is ours."""
        answer = msg_type - 2   # GETSA -> NEWSA, GETPOLICY -> NEWPOLICY
        found = [decode(body) for kind, body in self._request(verb, what, msg, msg_type, NLM_F_REQUEST)
                 if kind == answer]
        if not found or found[0] is None or not ours(found[0]):
            raise XfrmError(f"ip xfrm {verb} {what}: refusing, what the kernel has there is not ours")
        return found[0]

    def _our_state(self, verb, s):
        return self._get_ours(verb, _describe_state(s), state_id_msg(s), XFRM_MSG_GETSA,
                              decode_state, lambda found: is_ours(found[0].reqid))[0]

    def _our_policy(self, verb, p):
        return self._get_ours(verb, _describe_policy(p), policy_id_msg(p), XFRM_MSG_GETPOLICY,
                              decode_policy, lambda found: found.template and is_ours(found.template.reqid))

    def add_state(self, s: State) -> None:
        """ip xfrm state add src S dst D proto esp spi SPI reqid R mode tunnel replay-window 32
        {aead NAME KEY ICV | enc NAME KEY [auth-trunc NAME KEY TRUNC]}.  XfrmExists if taken."""
        self._request("state add", _describe_state(s), state_msg(s), XFRM_MSG_NEWSA)

    def update_state(self, s: State) -> None:
        """Replace our SA at (dst, spi): ip xfrm state delete ...; ip xfrm state add ...

        Not `ip xfrm state update` (XFRM_MSG_UPDSA): the kernel's xfrm_state_update() keeps
        the old keys, algorithms and reqid and takes only lifetimes, so it cannot rekey.
        If the add fails, the old SA (keys as the kernel returned them) is put back first.
        """
        old = self._our_state("state update", s)
        self._request("state update", _describe_state(old), state_id_msg(old), XFRM_MSG_DELSA)
        try:
            self.add_state(s)
        except XfrmError:
            self.add_state(old)
            raise

    def delete_state(self, s: State) -> None:
        """ip xfrm state delete src S dst D proto esp spi SPI; refuses an SA that is not ours."""
        self._our_state("state delete", s)
        self._request("state delete", _describe_state(s), state_id_msg(s), XFRM_MSG_DELSA)

    def dump_states(self) -> list[tuple[State, StateCounters]]:
        """ip -s xfrm state list: all ESP tunnel SAs, keys as the kernel returns them (zeros
        if the kernel is locked down).  Keep yours with is_ours(state.reqid)."""
        replies = self._request("state list", "", nlmsg(), XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP)
        return [d for d in (decode_state(body) for kind, body in replies if kind == XFRM_MSG_NEWSA) if d]

    def add_policy(self, p: Policy) -> None:
        """ip xfrm policy add SELECTOR dir DIR priority P tmpl src S dst D proto esp reqid R
        mode tunnel.  XfrmExists if a policy has that selector and dir."""
        self._request("policy add", _describe_policy(p), policy_msg(p), XFRM_MSG_NEWPOLICY)

    def update_policy(self, p: Policy) -> None:
        """ip xfrm policy update ... (adds it if absent); refuses to replace a policy not ours."""
        try:
            self._our_policy("policy update", p)
        except XfrmNotFound:
            pass
        self._request("policy update", _describe_policy(p), policy_msg(p), XFRM_MSG_UPDPOLICY)

    def delete_policy(self, p: Policy) -> None:
        """ip xfrm policy delete SELECTOR dir DIR.  The kernel deletes by selector and dir
        alone, whatever the template, so this refuses unless the policy there is ours."""
        self._our_policy("policy delete", p)
        self._request("policy delete", _describe_policy(p), policy_id_msg(p), XFRM_MSG_DELPOLICY)

    def dump_policies(self) -> list[Policy]:
        """ip xfrm policy list: main-type, unmarked, host-to-host policies; foreign ones of
        another shape have template=None (and delete/update refuse them)."""
        replies = self._request("policy list", "", nlmsg(), XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP)
        return [p for p in (decode_policy(body) for kind, body in replies if kind == XFRM_MSG_NEWPOLICY) if p]

    # --- Many at once: one XfrmError or None per object, in order ---------------------------

    def add_states(self, states: list[State]) -> list:
        """ip -batch: `xfrm state add ...` per SA (see add_state)."""
        return self._many("state add", states, _describe_state, state_msg, XFRM_MSG_NEWSA)

    def delete_states(self, states: list[State]) -> list:
        """ip -batch: `xfrm state delete ...` per SA. No `get` first: for SAs the caller
        knows to be ours, because it just read them from a dump (down, undo)."""
        return self._many("state delete", states, _describe_state, state_id_msg, XFRM_MSG_DELSA)

    def add_policies(self, policies: list[Policy]) -> list:
        """ip -batch: `xfrm policy add ...` per policy (see add_policy)."""
        return self._many("policy add", policies, _describe_policy, policy_msg, XFRM_MSG_NEWPOLICY)

    def delete_policies(self, policies: list[Policy]) -> list:
        """ip -batch: `xfrm policy delete ...` per policy, without `get` first: only for
        policies the caller just read from a dump as ours, or added itself."""
        return self._many("policy delete", policies, _describe_policy, policy_id_msg,
                          XFRM_MSG_DELPOLICY)


# Sequence numbers of our requests, above those pyroute2 hands out (we never use its own).
BATCH_SEQ_BASE, BATCH_SEQ_SPAN = 0x01000000, 0x7F000000
NLM_F_CAPPED, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 0x100, 0x200, 1


def _error_code(body, flags):
    """(errno or 0, extack text or None) of an NLMSG_ERROR body."""
    code, extack = -struct.unpack_from("=i", body.ljust(4, b"\0"))[0], None
    if flags & NLM_F_ACK_TLVS and len(body) >= 8:   # after the request's header (and body, unless capped)
        request_len = struct.unpack_from("=I", body, 4)[0]
        tlv = 4 + (16 if flags & NLM_F_CAPPED else _align(request_len))
        while tlv + 4 <= len(body):
            size, kind = struct.unpack_from("=HH", body, tlv)
            if size < 4:
                break
            if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
                extack = body[tlv + 4:tlv + size].split(b"\0")[0].decode("utf-8", "replace")
            tlv += _align(size)
    return code, extack


def parse_acks(buf):
    """(sequence number, errno or 0, extack text or None) of each NLMSG_ERROR in `buf`."""
    for msg_type, flags, seq, body in split_messages(buf):
        if msg_type == NLMSG_ERROR and len(body) >= 4:
            yield (seq, *_error_code(body, flags))

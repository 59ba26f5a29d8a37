"""Send a request to a target and learn whether xt_SYSRQ accepted it.

On success xt_SYSRQ returns NF_ACCEPT, the packet reaches UDP port 9 where nothing listens,
and the target's kernel answers ICMP port-unreachable back through the tunnel. A connected
UDP socket reports that ICMP as ECONNREFUSED. A rejected request is dropped silently.

The request never leaves in plaintext: the socket carries its own IPsec policy (the
IP_XFRM_POLICY socket option), which requires our ESP SA to the target (our reqid). Without
that SA the kernel refuses the send (or drops the packet), whatever the global policies say
— enforced by the kernel, not by a look-up beforehand.
"""

import errno
import ipaddress
import selectors
import socket
import time
from dataclasses import dataclass

from sysrq_appliance.errors import ApplianceError

IP_XFRM_POLICY, IPV6_XFRM_POLICY = 17, 35   # linux/in.h, linux/in6.h
# What the kernel says when the socket's policy finds no SA: no key manager answered the
# acquire (ESRCH), or one is still negotiating (EAGAIN).
NO_SA_ERRNOS = (errno.ESRCH, errno.EAGAIN, errno.ENOENT, errno.EREMOTE)


class PlaintextRefused(ApplianceError):
    """The kernel would not send the request without our SA."""


@dataclass(frozen=True)
class Outcome:
    confirmed: bool
    seconds: float | None   # time from the first send to the confirmation


def socket_policy(local, target, port, reqid):
    """The IP(V6)_XFRM_POLICY option value: xfrm_userpolicy_info + one xfrm_user_tmpl,
    `dir out` for UDP to `target`:`port`, requiring ESP in tunnel mode with `reqid`."""
    from sysrq_appliance import xfrm   # pyroute2: only when really sending
    policy = xfrm.Policy(xfrm.Selector(local, target, xfrm.IPPROTO_UDP, None, port), "out",
                         xfrm.Template(local, target, reqid))
    return xfrm.socket_policy_bytes(policy)


def connect(local, target, port, reqid=None):
    """A UDP socket from `local` connected to `target`:`port`; with `reqid`, one that only
    sends through our SA of that reqid (see the module's docstring)."""
    family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reqid is not None:
            level, option = ((socket.IPPROTO_IPV6, IPV6_XFRM_POLICY) if family == socket.AF_INET6
                             else (socket.IPPROTO_IP, IP_XFRM_POLICY))
            try:
                sock.setsockopt(level, option, socket_policy(local, target, port, reqid))
            except OSError as exc:
                raise ApplianceError(f"cannot require IPsec on the sending socket: "
                                     f"{exc.strerror}; nothing was sent") from None
        try:
            # Bound to the tunnel address so the outbound IPsec policy's selector matches.
            sock.bind((local, 0))
            sock.connect((target, port))
        except OSError as exc:
            raise _refused(exc, f"cannot send from {local} to {target}:{port}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def send(payload, local, target, port, count=1, wait=1.0, reqid=None):
    """Send `payload` `count` times from `local` to `target`:`port` and wait for the answer.

    With `reqid`, only through our SA of that reqid (see the module's docstring)."""
    with connect(local, target, port, reqid) as sock:
        start = time.monotonic()
        if _send_copies(sock, payload, count, target, port):
            return Outcome(True, time.monotonic() - start)
        results = []
        await_answers({sock: start + wait}, lambda _, answer: results.append(answer))
        return _outcome(results[0], start)


def _send_copies(sock, payload, count, target, port):
    """Send the copies; True if an answer to an earlier copy arrived already."""
    for _ in range(count):
        try:
            sock.send(payload)
        except ConnectionRefusedError:
            return True
        except OSError as exc:
            raise _refused(exc, f"send to {target}:{port} failed") from None
    return False


def _outcome(answer, start):
    """await_answers' verdict on one request as an Outcome."""
    return Outcome(True, time.monotonic() - start) if answer is True else Outcome(False, None)


def await_answers(deadlines, settle, clock=time.monotonic):
    """Wait on every socket of `deadlines` ({connected UDP socket: deadline on `clock`})
    at once, until each is settled: settle(sock, answer) as it is, answer True when the
    target's ICMP port-unreachable came back (ECONNREFUSED: our answer), False when the
    socket's deadline passed first, or the OSError that ended it. The caller closes the
    sockets. (send, send_many and health's probes all wait here.)"""
    pending = dict(deadlines)
    with selectors.DefaultSelector() as selector:
        for sock in pending:
            selector.register(sock, selectors.EVENT_READ)

        def done(sock, answer):
            del pending[sock]
            selector.unregister(sock)
            settle(sock, answer)

        while pending:
            now = clock()
            for sock in [s for s, deadline in pending.items() if deadline <= now]:
                done(sock, False)
            if not pending:
                break
            for key, _ in selector.select(min(pending.values()) - now):
                try:
                    key.fileobj.recv(512)   # a real UDP answer is not ours; keep waiting
                except ConnectionRefusedError:
                    done(key.fileobj, True)
                except OSError as exc:
                    done(key.fileobj, exc)


@dataclass(frozen=True)
class Request:
    target: str          # address
    payload: bytes
    reqid: int | None    # None: no IPsec required (tests of the mechanism only)


def send_many(requests, local, port, count=1, wait=1.0, on_result=None):
    """Send every request, then wait for all answers at once, each for `wait` seconds from
    its own send: one wait for all, not one after another. `on_result(i, result)` is
    called as each result is known, where result is an Outcome or the ApplianceError that
    kept request i from being sent. Returns the results in the order of `requests`."""
    results = [None] * len(requests)

    def finish(i, result):
        results[i] = result
        if on_result:
            on_result(i, result)

    wave = _room_for_sockets(len(requests))
    for first in range(0, len(requests), wave):
        _send_wave(list(enumerate(requests))[first:first + wave], local, port, count, wait,
                   finish)
    return results


def _send_wave(requests, local, port, count, wait, finish):
    sent = {}   # socket -> (index, start)
    try:
        for i, request in requests:
            try:
                sock = connect(local, request.target, port, request.reqid)
            except ApplianceError as exc:
                finish(i, exc)
                continue
            start = time.monotonic()
            try:
                answered = _send_copies(sock, request.payload, count, request.target, port)
            except ApplianceError as exc:
                sock.close()
                finish(i, exc)
                continue
            if answered:
                sock.close()
                finish(i, Outcome(True, time.monotonic() - start))
                continue
            sent[sock] = (i, start)

        def settle(sock, answer):
            i, start = sent.pop(sock)
            sock.close()
            finish(i, _outcome(answer, start))

        await_answers({sock: start + wait for sock, (_, start) in sent.items()}, settle)
    finally:
        for sock in sent:
            sock.close()


def _room_for_sockets(wanted):
    """How many sockets one wave may open: all of them if the descriptor limit allows
    (raising the soft limit up to the hard one), else as many as fit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64     # stdio, the config's files, the selector
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max(wanted, 1)
    return max(1, min(wanted, soft - 64))


def _refused(exc, context):
    if exc.errno in NO_SA_ERRNOS:
        return PlaintextRefused(f"{context}: the kernel has no ESP SA of ours to send it "
                                "through and refuses to send it in plaintext; run "
                                "'sysrq-appliance apply' on this host (and check 'status')")
    return ApplianceError(f"{context}: {exc.strerror}")

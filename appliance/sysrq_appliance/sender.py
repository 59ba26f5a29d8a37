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
import select
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


def send(payload, local, target, port, count=1, wait=1.0, reqid=None):
    """Send `payload` `count` times from `local` to `target`:`port` and wait for the answer.

    With `reqid`, only through our SA of that reqid (see the module's docstring)."""
    with _open(local, target, port, reqid) as sock:
        start = time.monotonic()
        if _send_copies(sock, payload, count, target, port):
            return Outcome(True, time.monotonic() - start)
        return _await_refusal(sock, start, wait)


def _open(local, target, port, reqid):
    """A UDP socket from `local` connected to `target`:`port`, with the socket's own IPsec
    policy when `reqid` is given."""
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


@dataclass(frozen=True)
class Request:
    target: str          # address
    payload: bytes
    reqid: int | None    # None: no IPsec required (tests of the mechanism only)


def send_many(requests, local, port, count=1, wait=1.0, on_result=None):
    """Send every request, then wait for all answers at once, each for `wait` seconds from
    its own send: one select loop, not one wait after another. `on_result(i, result)` is
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
    selector, pending = selectors.DefaultSelector(), {}   # socket -> (index, start, deadline)
    try:
        for i, request in requests:
            try:
                sock = _open(local, request.target, port, request.reqid)
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
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = (i, start, start + wait)
        while pending:
            now = time.monotonic()
            for sock in [s for s, (_, _, deadline) in pending.items() if deadline <= now]:
                _done(selector, pending, sock, finish, Outcome(False, None))
            if not pending:
                break
            timeout = min(deadline for _, _, deadline in pending.values()) - now
            for key, _ in selector.select(max(timeout, 0)):
                sock = key.fileobj
                try:
                    sock.recv(512)   # a real UDP answer is not a confirmation; keep waiting
                except ConnectionRefusedError:
                    start = pending[sock][1]
                    _done(selector, pending, sock, finish,
                          Outcome(True, time.monotonic() - start))
                except OSError:
                    _done(selector, pending, sock, finish, Outcome(False, None))
    finally:
        for sock in pending:
            sock.close()
        selector.close()


def _done(selector, pending, sock, finish, outcome):
    i = pending.pop(sock)[0]
    selector.unregister(sock)
    sock.close()
    finish(i, outcome)


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


def _await_refusal(sock, start, wait):
    deadline = start + wait
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        try:
            sock.recv(512)  # a real UDP answer is not a confirmation; keep waiting
        except ConnectionRefusedError:
            return Outcome(True, time.monotonic() - start)
        except OSError:
            break
    return Outcome(False, None)

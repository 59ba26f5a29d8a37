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
        for _ in range(count):
            try:
                sock.send(payload)
            except ConnectionRefusedError:
                # An answer to an earlier copy arrived already.
                return Outcome(True, time.monotonic() - start)
            except OSError as exc:
                raise _refused(exc, f"send to {target}:{port} failed") from None
        return _await_refusal(sock, start, wait)


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

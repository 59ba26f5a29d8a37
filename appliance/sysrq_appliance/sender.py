"""Send a request to a target and learn whether xt_SYSRQ accepted it.

On success xt_SYSRQ returns NF_ACCEPT, the packet reaches UDP port 9 where nothing listens,
and the target's kernel answers ICMP port-unreachable back through the tunnel. A connected
UDP socket reports that ICMP as ECONNREFUSED. A rejected request is dropped silently.
"""

import ipaddress
import select
import socket
import time
from dataclasses import dataclass

from sysrq_appliance.errors import ApplianceError


@dataclass(frozen=True)
class Outcome:
    confirmed: bool
    seconds: float | None   # time from the first send to the confirmation


def send(payload, local, target, port, count=1, wait=1.0):
    """Send `payload` `count` times from `local` to `target`:`port` and wait for the answer."""
    family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            # Bound to the tunnel address so the outbound IPsec policy's selector matches.
            sock.bind((local, 0))
            sock.connect((target, port))
        except OSError as exc:
            raise ApplianceError(f"cannot send from {local} to {target}:{port}: "
                                 f"{exc.strerror}") from None
        start = time.monotonic()
        for _ in range(count):
            try:
                sock.send(payload)
            except ConnectionRefusedError:
                # An answer to an earlier copy arrived already.
                return Outcome(True, time.monotonic() - start)
            except OSError as exc:
                raise ApplianceError(f"send to {target}:{port} failed: {exc.strerror}") from None
        return _await_refusal(sock, start, wait)


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

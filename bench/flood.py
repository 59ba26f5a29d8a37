#!/usr/bin/env python3
"""Flood a target's SysRq port for the flood drill (run inside the two-VM harness only).

    flood.py tunnel    --seconds 8   wrong-password requests from 10.10.25.1 (the sender's
                                     tunnel address, so the IPsec policy encrypts them)
    flood.py plaintext --seconds 8   requests in clear from whatever address this namespace has

Sends from one socket for SECONDS (bounded), then prints how many requests at what rate.
"""

import argparse
import socket
import time

from sysrq_appliance import wire

TARGET, SENDER, PORT = "10.10.25.7", "10.10.25.1", 9


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("tunnel", "plaintext"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.mode == "tunnel":
        sock.bind((SENDER, 0))
    # Valid-looking requests with a wrong password (new seqnos): each would reach the digest.
    base = int(time.time()) + 1000
    requests = [wire.build("h", base + i, "flood", TARGET, b"wrong-password").encode()
                for i in range(1000)]
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < args.seconds:
        for request in requests:
            try:
                sock.sendto(request, (TARGET, PORT))
            except OSError:
                pass
        sent += len(requests)
    elapsed = time.monotonic() - start
    print(f"{args.mode} {sent} requests in {elapsed:.1f} s at {sent / elapsed:.0f} pps")


if __name__ == "__main__":
    main()

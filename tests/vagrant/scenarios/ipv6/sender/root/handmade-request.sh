#!/bin/sh
# One request to the target built by hand, not by sysrq-appliance: key h, digest = sha1 of
# "h,SEQNO,handmade,DST,PASSWORD", where DST is the target's address written the way FORM says.
# xt_SYSRQ prints the destination with %pI6, fully expanded; a compressed DST must not fire.
# Sent through the tunnel (from the sender's tunnel address to UDP port 9 of the target's) on
# a connected socket; prints "confirmed" when the target's ICMPv6 port unreachable comes back.
#   handmade-request.sh expanded|compressed SEQNO
set -eu
case "${1:-}" in
    expanded) DST=fd00:0010:0025:0000:0000:0000:0000:0007 ;;
    compressed) DST=fd00:10:25::7 ;;
    *) echo "usage: $0 expanded|compressed SEQNO" >&2; exit 2 ;;
esac
SEQNO=${2:?usage: $0 expanded|compressed SEQNO}
PASSWORD=$(cat /etc/sysrq-appliance/passwords/target)
DIGEST=$(printf '%s' "h,$SEQNO,handmade,$DST,$PASSWORD" | sha1sum | cut -d' ' -f1)
printf 'h,%s,handmade,%s' "$SEQNO" "$DIGEST" | /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd00:10:25::1", 0))
s.connect(("fd00:10:25::7", 9))
s.settimeout(2)
s.send(sys.stdin.buffer.read())
try:
    s.recv(1)
except ConnectionRefusedError:
    print("confirmed")
except socket.timeout:
    print("not confirmed")
'

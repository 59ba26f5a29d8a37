#!/bin/sh
# Guest, as root: an IPv6 (ULA) address next to the IPv4 one on the private network's
# interface, kept across reboots. The network has no router: the address's /64 is on-link
# and there is no IPv6 default route (scenarios/isolation.scn checks it).
#   ipv6.sh IPV4 IPV6/PREFIX      e.g. ipv6.sh 10.10.25.7 fd00:10:25::7/64
set -eu
V4=${1:?usage: $0 IPV4 IPV6/PREFIX}
V6=${2:?usage: $0 IPV4 IPV6/PREFIX}
# The interface that holds the IPv4 address Vagrant gave it (eth1 on our box; a public box
# may name it differently).
DEV=$(ip -o -4 addr show to "$V4/32" | awk '{print $2; exit}')
[ -n "$DEV" ] || { echo "ipv6: no interface holds $V4" >&2; exit 1; }

NETWORK=/etc/systemd/network/50-vagrant-$DEV.network
if [ -f "$NETWORK" ]; then
    # systemd-networkd (Vagrant wrote the IPv4 part there): a drop-in next to it. No duplicate
    # address detection: the address is usable at once, and the pair's addresses are fixed.
    mkdir -p "$NETWORK.d"
    printf '%s\n' '[Network]' 'IPv6AcceptRA=no' '[Address]' "Address=$V6" \
        'DuplicateAddressDetection=none' >"$NETWORK.d/sysrq-appliance-ipv6.conf"
    networkctl reload
    networkctl reconfigure "$DEV"
else
    # ifupdown (Vagrant wrote the IPv4 part into /etc/network/interfaces).
    printf '%s\n' "iface $DEV inet6 static" "    address $V6" '    dad-attempts 0' \
        '    accept_ra 0' >/etc/network/interfaces.d/sysrq-appliance-ipv6
    ip -6 addr replace "$V6" dev "$DEV" nodad
fi
for _ in $(seq 30); do
    if ip -6 -o addr show dev "$DEV" | grep -q " ${V6%/*}/"; then
        ip -6 -o addr show dev "$DEV" scope global | awk '{print "ipv6: " $2 " " $4}'
        exit 0
    fi
    sleep 1
done
echo "ipv6: $V6 did not appear on $DEV" >&2
exit 1

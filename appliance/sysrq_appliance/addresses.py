"""Which addresses may be a tunnel endpoint: one unicast host, written plainly.

Everything an address becomes later — a restore-script line, an xfrm selector, the digest
input — is built from the canonical text returned here, so nothing but an address (no zone
id, no whitespace, no newline) ever gets that far.
"""

import ipaddress

from sysrq_appliance.errors import excerpt

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")    # deprecated (RFC 3879), scoped like fe80
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def host_address(value):
    """Canonical text of a unicast IPv4/IPv6 host address; ValueError says what is wrong."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable() \
            or len(value) > 45:
        raise ValueError(f"{excerpt(value)} is not an IPv4 or IPv6 address")
    if "%" in value:
        raise ValueError(f"{excerpt(value)} has a zone id (%...); give the address alone "
                         "(link-local addresses cannot be tunnel endpoints)")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{excerpt(value)} is not an IPv4 or IPv6 address") from None
    problem = _not_a_host(address)
    if problem:
        # The text as written (already checked: short, printable, an address): str() of
        # an IPv4-mapped address differs between Python versions.
        raise ValueError(f"{value} is {problem}; use this host's or the peer's unicast "
                         "tunnel address")
    return str(address)


def _not_a_host(address):
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 4:
        if address == _BROADCAST:
            return "the broadcast address"
        if address in _THIS_NETWORK:
            return "in 0.0.0.0/8 ('this network')"
        if address.is_reserved:
            return "reserved (240.0.0.0/4)"
        if address.is_link_local:
            return "link-local (169.254.0.0/16: not routed, changes with the link)"
        return None
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address (write the IPv4 address)"
    if address.is_link_local:
        return "link-local (needs a zone id, which a tunnel endpoint cannot have)"
    if address in _SITE_LOCAL:
        return "site-local (fec0::/10, deprecated and scoped like link-local)"
    if address.is_reserved:
        return "in a reserved IPv6 range"
    return None


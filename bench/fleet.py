"""Configs with N peers, for the benchmarks and drills (not for production use).

write_fleet(dir, n, role) writes DIR/appliance.yaml with n peers 10.64.x.y, one key file
each and the password files (one per target on a sender), all 0600 in 0700 directories, as `pair` would.
"""

import ipaddress
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "appliance"))

from sysrq_appliance import esp_keys, firewall, password  # noqa: E402
from sysrq_appliance.secretfile import write_secret  # noqa: E402

LOCAL = "10.63.0.1"
ALGORITHM = "rfc4106(gcm(aes))"


def peer_address(i):
    return str(ipaddress.ip_address("10.64.0.1") + i)


def write_fleet(directory, n, role):
    directory = os.path.abspath(directory)
    lines = [f"role: {role}", f"local: {LOCAL}", "peers:"]
    secret = password.generate()
    write_secret(os.path.join(directory, "password"), secret)
    material = esp_keys.render(esp_keys.generate(ALGORITHM), "fleet", ALGORITHM)
    for i in range(n):
        key_file = os.path.join(directory, "keys", f"p{i}.key")
        write_secret(key_file, material)
        lines += [f"  - name: p{i}", f"    address: {peer_address(i)}",
                  f"    spi_in: {0x10000 + 2 * i:#x}", f"    spi_out: {0x10001 + 2 * i:#x}",
                  f"    key_file: {key_file}"]
        if role == "sender":   # one file per target, as config requires of every secret
            password_file = os.path.join(directory, "passwords", f"p{i}")
            write_secret(password_file, secret)
            lines.append(f"    password_file: {password_file}")
    if role == "target":
        lines += ["sysrq:", f"  password_file: {directory}/password"]
    write_secret(os.path.join(directory, "appliance.yaml"), ("\n".join(lines) + "\n").encode())
    return os.path.join(directory, "appliance.yaml")


def scratch_install(scratch, ns, n, role, with_sa=False):
    """A fleet config plus stand-ins for xt_SYSRQ's parameters and kernel.sysrq under
    `scratch`; returns the CLI's argv (up to the verb) run inside namespace `ns`."""
    config = write_fleet(os.path.join(scratch, "etc"), n, role)
    params = os.path.join(scratch, "parameters")
    os.makedirs(params)
    for name, text in (("password", ""), ("hash", "sha1\n")):
        with open(os.path.join(params, name), "w") as f:
            f.write(text)
    with open(os.path.join(scratch, "sysrq"), "w") as f:
        f.write("1\n")
    return ["ip", "netns", "exec", ns, "/usr/bin/python3", "-m", "sysrq_appliance",
            "--config", config, "--state-dir", os.path.join(scratch, "state"),
            "--sysfs-dir", params, "--sysctl-path", os.path.join(scratch, "sysrq"),
            "--firewall-target", "ACCEPT", *([] if with_sa else ["--without-esp"])]


def baseline_batch(n, role, port=9, with_sa=False):
    """The same policies (and SAs) as `ip -batch` input (what an expert would type by hand)."""
    out = []
    key = "0x" + "11" * 36
    for i in range(n):
        peer = peer_address(i)
        if with_sa:
            for src, dst, spi in ((peer, LOCAL, 0x10000 + 2 * i), (LOCAL, peer, 0x10001 + 2 * i)):
                out.append(f"xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid "
                           f"{0x53520000 + i} mode tunnel aead '{ALGORITHM}' {key} 128")
        if role == "sender":
            trigger = ("out", LOCAL, peer, f"proto udp dport {port}")
            answer = ("in", peer, LOCAL, "proto icmp type 3 code 3")
        else:
            trigger = ("in", peer, LOCAL, f"proto udp dport {port}")
            answer = ("out", LOCAL, peer, "proto icmp type 3 code 3")
        for direction, src, dst, what in (trigger, answer):
            out.append(f"xfrm policy add src {src}/32 dst {dst}/32 {what} dir {direction} "
                       f"tmpl src {src} dst {dst} proto esp reqid {0x53520000 + i} mode tunnel")
    return "\n".join(out) + "\n"


def baseline_restore(n, port=9):
    """Our target chain as one iptables-restore input (the rule text from firewall.render)."""
    spec = firewall.ChainSpec(4, tuple(firewall.PeerRule(peer_address(i), LOCAL, port)
                                       for i in range(n)), port, target="ACCEPT")
    return "\n".join(firewall.install_script(spec, None)) + "\n"

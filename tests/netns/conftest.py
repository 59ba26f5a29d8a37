"""Throwaway network namespaces for the root tests.

Each namespace gets a unique name, is created by the fixture and deleted by exactly that
name afterwards, so nothing else on the host is ever touched. It has only a loopback
interface (and whatever veth the test adds to it): no default route, no link outside.
"""

import os
import subprocess
import uuid

import pytest

if os.geteuid() != 0:
    pytest.skip("netns tests need root (CI runs them as root)", allow_module_level=True)


class Netns:
    def __init__(self, name):
        self.name = name

    def run(self, *argv, check=True, input=None):
        """Run argv inside the namespace; return the CompletedProcess (text)."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check,
                              capture_output=True, text=True, input=input)

    def __repr__(self):
        return f"Netns({self.name})"


@pytest.fixture
def make_netns():
    """Factory: make_netns() returns a fresh Netns with loopback up; all are removed at teardown."""
    created = []

    def make():
        name = f"sra-test-{uuid.uuid4().hex[:12]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        created.append(name)
        ns = Netns(name)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    yield make
    for name in created:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def netns(make_netns):
    return make_netns()


@pytest.fixture
def linked_netns(make_netns):
    """(sender, target): two namespaces joined by one veth pair, 10.10.25.1 <-> 10.10.25.7.

    No default route in either, and no link to anything else.
    """
    sender, target = make_netns(), make_netns()
    sender.address, target.address = "10.10.25.1", "10.10.25.7"
    link = f"sra{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "-n", sender.name, "link", "add", "eth0", "type", "veth",
                    "peer", "name", link, "netns", target.name], check=True)
    target.run("ip", "link", "set", link, "name", "eth0")
    for ns in (sender, target):
        ns.run("ip", "addr", "add", f"{ns.address}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    return sender, target


# --- What the kernel can do, asked of the kernel itself ---------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "without_esp: about a kernel that has no ESP; skipped "
                            "where the kernel has it (the real-kernel tier runs it with ESP refused)")


_PROBE_SA = ("src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x5352ffff reqid 1 mode tunnel "
             "aead rfc4106(gcm(aes)) 0x" + "00" * 20 + " 128")


def _probe_esp():
    """(True, '') if the kernel takes an ESP SA (added in a throwaway namespace, which
    goes with it), else (False, why)."""
    name = f"sra-probe-{uuid.uuid4().hex[:12]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        result = subprocess.run(["ip", "-n", name, "xfrm", "state", "add", *_PROBE_SA.split()],
                                capture_output=True, text=True)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    if result.returncode == 0:
        return True, ""
    return False, ("no ESP in this kernel: it refused an ESP SA (rfc4106(gcm(aes)), added in a "
                   f"throwaway namespace): {result.stderr.strip()}")


def _probe_xt_sysrq():
    """(True, '') if xt_SYSRQ is loaded or loads (modprobe), else (False, why)."""
    if os.path.isdir("/sys/module/xt_SYSRQ/parameters"):
        return True, ""
    result = subprocess.run(["modprobe", "xt_SYSRQ"], capture_output=True, text=True)
    if result.returncode == 0 and os.path.isdir("/sys/module/xt_SYSRQ/parameters"):
        subprocess.run(["modprobe", "-r", "xt_SYSRQ"], check=False)  # the test loads it itself
        return True, ""
    return False, ("this kernel has no xt_SYSRQ: modprobe xt_SYSRQ failed: "
                   f"{result.stderr.strip() or 'no /sys/module/xt_SYSRQ'} "
                   "(xtables-addons-dkms builds it)")


@pytest.fixture(scope="session")
def kernel_esp():
    """Whether the kernel has ESP: (bool, reason when not)."""
    return _probe_esp()


@pytest.fixture
def esp(kernel_esp):
    """Skip, saying why, where the kernel has no ESP."""
    if not kernel_esp[0]:
        pytest.skip(kernel_esp[1])


@pytest.fixture
def xt_sysrq(esp):
    """Skip, saying why, where the kernel has no ESP or no xt_SYSRQ."""
    ok, why = _probe_xt_sysrq()
    if not ok:
        pytest.skip(why)

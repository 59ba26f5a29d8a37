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

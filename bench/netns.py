"""What the benchmarks run in: a throwaway network namespace (unique name, loopback only,
removed by that exact name when done) and a scratch directory the program trusts."""

import contextlib
import os
import subprocess
import tempfile
import uuid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def scratch():
    """A private temporary directory under /run (root) or ~/.cache: sysrq-appliance rightly
    refuses secrets on a path others can write to, such as a 1777 /tmp."""
    parent = "/run" if os.geteuid() == 0 else os.path.expanduser("~/.cache")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="sysrq-bench.", dir=parent)


@contextlib.contextmanager
def netns():
    name = f"sra-bench-{uuid.uuid4().hex[:12]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def sender_etc(scratch):
    """A sender's /etc/sysrq-appliance in `scratch` (`pair`: admin1 in front of web1); its
    config's path."""
    etc = os.path.join(scratch, "etc")
    subprocess.run(["/usr/bin/python3", "-m", "sysrq_appliance", "pair",
                    "--target", "web1=10.10.25.7", "--sender", "admin1=10.10.25.1",
                    "--out", os.path.join(scratch, "b"), "--etc-dir", etc],
                   check=True, stdout=subprocess.DEVNULL,
                   env={"PYTHONPATH": os.path.join(ROOT, "appliance"), "PATH": os.environ["PATH"]})
    subprocess.run(["cp", "-a", os.path.join(scratch, "b", "sender") + "/.", etc], check=True)
    return os.path.join(etc, "appliance.yaml")

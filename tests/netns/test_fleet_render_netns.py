"""`fleet render` interrupted while it writes, as root (the immutable flag, to make a write really fail):
no namespace is needed, only a file the kernel will not let us replace.

The run that dies must not leave a file of ours that the manifest does not list: a later
run prunes what the inventory no longer needs only by the manifest, so an unlisted key or
password would stay in the output directory for good."""

import array
import fcntl
import os
import subprocess
import sys

import pytest

from appliance_env import ROOT

INVENTORY = """\
admins:
  - {{name: x1, address: 10.10.25.1}}
targets:
  - {{name: web1, address: 10.10.25.7}}
{more}"""
DB1 = "  - {name: db1, address: 10.10.25.8}\n"


def render(tmp_path, more=""):
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(INVENTORY.format(more=more))
    return subprocess.run([sys.executable, "-m", "sysrq_appliance", "fleet", "render",
                           str(inventory), "--out", str(tmp_path / "fleet")],
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]})


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def immutable(path, on):
    """chattr +i / -i, without needing e2fsprogs (the Debian 13 test root has none)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


def ours(out):
    return {str(p.relative_to(out)) for p in out.rglob("*")
            if p.is_file() and p.name not in (".lock", ".manifest")}


def test_a_run_that_dies_while_writing_leaves_nothing_unlisted(tmp_path):
    assert render(tmp_path).returncode == 0
    out = tmp_path / "fleet"
    admin = out / "x1" / "appliance.yaml"
    # db1's files (written first: db1/ sorts before x1/) land, then replacing the admin's
    # config fails: the run stops between its files and its final manifest.
    try:
        immutable(admin, True)
    except OSError as exc:   # the kernel's answer: this file system has no such flag
        pytest.skip(f"{out}: no immutable flag here ({exc.strerror})")
    try:
        died = render(tmp_path, more=DB1)
    finally:
        immutable(admin, False)
    assert died.returncode == 2 and died.stderr.count("\n") == 1, died.stderr
    assert "db1/keys/x1.key" in ours(out)            # some files of that run did land
    listed = set((out / ".manifest").read_text().splitlines())
    assert ours(out) <= listed, ours(out) - listed

    again = render(tmp_path)                         # db1 left the inventory: all of it goes
    assert again.returncode == 0, again.stderr
    assert not (out / "db1").exists()
    assert ours(out) == set((out / ".manifest").read_text().splitlines()) == {
        "x1/appliance.yaml", "x1/keys/web1.key", "x1/passwords/web1",
        "web1/appliance.yaml", "web1/keys/x1.key", "web1/password"}

"""`fleet render` interrupted while it writes, as root (chattr, to make a write really fail):
no namespace is needed, only a file the kernel will not let us replace.

The run that dies must not leave a file of ours that the manifest does not list: a later
run prunes what the inventory no longer needs only by the manifest, so an unlisted key or
password would stay in the output directory for good."""

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


def ours(out):
    return {str(p.relative_to(out)) for p in out.rglob("*")
            if p.is_file() and p.name not in (".lock", ".manifest")}


def test_a_run_that_dies_while_writing_leaves_nothing_unlisted(tmp_path):
    assert render(tmp_path).returncode == 0
    out = tmp_path / "fleet"
    admin = out / "x1" / "appliance.yaml"
    # db1's files (written first: db1/ sorts before x1/) land, then replacing the admin's
    # config fails: the run stops between its files and its final manifest.
    if subprocess.run(["chattr", "+i", str(admin)], capture_output=True).returncode:
        pytest.skip(f"{out}: this file system has no immutable flag")
    try:
        died = render(tmp_path, more=DB1)
    finally:
        subprocess.run(["chattr", "-i", str(admin)], check=True)
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

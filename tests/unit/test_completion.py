"""The bash completion (debian/completions) completes peers and sequences from a config."""

import pathlib
import shutil
import subprocess

import pytest

# The source tree's; against an installed package (debian/tests), the installed one.
COMPLETION = pathlib.Path(__file__).resolve().parents[2] / "debian/completions/sysrq-appliance"
if not COMPLETION.exists():
    COMPLETION = pathlib.Path("/usr/share/bash-completion/completions/sysrq-appliance")
CONFIG = """\
role: sender
local: 10.0.0.1
peers:
  - name: web1
    address: 10.0.0.7
  - name: db2
    address: 10.0.0.8
sequences:
  rescue-db: [s, wait 2, u]
  diagnose-quick: [w]
groups:
  web: [web1]
  db-all: [db2]
firewall:
  backend: nft
"""


def complete(words, config):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    script = (f". {COMPLETION}\nCOMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
              "_sysrq_appliance; printf '%s\\n' \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return sorted(filter(None, result.stdout.splitlines()))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "appliance.yaml"
    path.write_text(CONFIG)
    return path


def test_sequence_names_built_in_and_from_the_config(config):
    assert complete(f"sysrq-appliance --config {config} send web1 --sequence ''", config) == [
        "diagnose", "diagnose-quick", "reboot-safely", "rescue-db", "thaw"]
    assert complete(f"sysrq-appliance --config {config} send web1 --sequence re", config) == [
        "reboot-safely", "rescue-db"]


def test_peer_names_from_the_config(config):
    assert complete(f"sysrq-appliance --config {config} send ''", config) == ["db2", "web1"]


def test_without_a_readable_config_only_built_in_sequences(tmp_path):
    missing = tmp_path / "none.yaml"
    assert complete(f"sysrq-appliance --config {missing} send web1 --sequence ''", missing) == [
        "diagnose", "reboot-safely", "thaw"]


def test_group_names_from_the_config(config):
    assert complete(f"sysrq-appliance --config {config} send --group ''", config) == [
        "db-all", "web"]


def test_fleet_actions_and_the_inventory_file(config):
    assert complete("sysrq-appliance fleet ''", config) == ["render"]
    assert complete(f"sysrq-appliance fleet render {config.parent}/app", config) == [
        str(config)]

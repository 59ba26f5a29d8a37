"""fleet render: every host's half from one inventory, kept across runs (as an unprivileged
user, the CLI as a subprocess where the exit code and the output matter)."""

import os
import pathlib
import stat
import subprocess
import sys

import pytest
import yaml

from sysrq_appliance import config, configdoc, esp_keys, halves, inventory, yamlfile
from sysrq_appliance.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[2]

INVENTORY = """\
admins:
  - {name: admin1, address: 10.10.25.1}
targets:
  - {name: web1, address: 10.10.25.7, allow: [sync, remount, reboot, signal]}
  - {name: web2, address: 10.10.25.8}
groups:
  web: [web1, web2]
"""
ADMIN2 = "  - {name: admin2, address: 10.10.25.2}\n"
WEB3 = "  - {name: web3, address: 10.10.25.9}\n"


def cli(*argv):
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "sysrq_appliance", *argv],
                          capture_output=True, text=True, env=env)


def render(tmp_path, text, out="fleet"):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(text)
    result = cli("fleet", "render", str(inv), "--out", str(tmp_path / out))
    return result


def rendered(tmp_path, text):
    result = render(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return tmp_path / "fleet", result.stdout


def files(out):
    """path -> (inode, mtime_ns, bytes) of every file but the lock."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != ".lock":
            st = path.stat()
            found[str(path.relative_to(out))] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return found


def load(path):
    return config.parse(yamlfile.parse(path.read_text(), str(path)), str(path))


def with_admin2(text):
    return text.replace("targets:\n", ADMIN2 + "targets:\n")


def test_every_half_is_private_and_loads(tmp_path):
    out, stdout = rendered(tmp_path, INVENTORY)
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".manifest", "admin1", "web1",
                                                     "web2"]
    for path in [out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    admin = load(out / "admin1/appliance.yaml")
    assert admin.role == "sender" and [p.name for p in admin.peers] == ["web1", "web2"]
    assert admin.groups == (("web", ("web1", "web2")),)
    assert admin.peers[0].allow == ("sync", "remount", "reboot", "signal")
    assert admin.peers[1].allow == inventory.DEFAULT_ALLOW
    web1 = load(out / "web1/appliance.yaml")
    assert web1.allow == ("sync", "remount", "reboot", "signal")
    assert (web1.peers[0].spi_in, web1.peers[0].spi_out) == (admin.peers[0].spi_out,
                                                            admin.peers[0].spi_in)
    assert web1.peers[0].key_file == "/etc/sysrq-appliance/keys/admin1.key"
    mine = esp_keys.parse((out / "web1/keys/admin1.key").read_bytes(), "t", web1.algorithm)
    theirs = esp_keys.parse((out / "admin1/keys/web1.key").read_bytes(), "a", admin.algorithm)
    assert mine == theirs.swapped()
    assert (out / "web1/password").read_bytes() == (out / "admin1/passwords/web1").read_bytes()
    assert (out / "web1/password").read_bytes() != (out / "web2/password").read_bytes()
    assert "3 hosts" in stdout and "11 files written" in stdout


def test_second_render_writes_nothing(tmp_path):
    out, _ = rendered(tmp_path, with_admin2(INVENTORY))
    before = files(out)
    _, stdout = rendered(tmp_path, with_admin2(INVENTORY))
    assert files(out) == before          # same inodes, same mtimes, same bytes
    assert stdout.strip().endswith("0 files written, 0 removed, 18 unchanged "
                                   "(nothing to change)")


def test_adding_a_target_touches_only_its_half_and_the_admin_hosts(tmp_path):
    out, _ = rendered(tmp_path, with_admin2(INVENTORY))
    before = files(out)
    _, stdout = rendered(tmp_path, with_admin2(INVENTORY).replace("groups:",
                                                                  WEB3 + "groups:"))
    after = files(out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed == {"admin1/appliance.yaml", "admin2/appliance.yaml",
                       "admin1/keys/web3.key", "admin2/keys/web3.key",
                       "admin1/passwords/web3", "admin2/passwords/web3",
                       "web3/appliance.yaml", "web3/keys/admin1.key", "web3/keys/admin2.key",
                       "web3/password", ".manifest"}
    assert "wrote" in stdout and "web1" not in stdout


def test_removing_a_target_removes_only_its_parts(tmp_path):
    out, _ = rendered(tmp_path, INVENTORY.replace("groups:", WEB3 + "groups:"))
    (out / "web3" / "notes.txt").write_text("not ours\n")   # someone else's file
    before = files(out)
    _, stdout = rendered(tmp_path, INVENTORY)
    after = files(out)
    gone = set(before) - set(after)
    assert gone == {"admin1/keys/web3.key", "admin1/passwords/web3", "web3/appliance.yaml",
                    "web3/keys/admin1.key", "web3/password"}
    assert not (out / "web3/keys").exists()
    assert (out / "web3/notes.txt").read_text() == "not ours\n"   # and its directory stays
    changed = {p for p in after if before[p] != after[p]}
    assert changed == {"admin1/appliance.yaml", ".manifest"}
    assert f"removed {out}/web3/: appliance.yaml, keys/admin1.key, password" in stdout
    assert [p.name for p in load(out / "admin1/appliance.yaml").peers] == ["web1", "web2"]


def test_several_admin_hosts_share_the_password_with_a_tunnel_each(tmp_path):
    out, _ = rendered(tmp_path, INVENTORY)
    kept = files(out)
    rendered(tmp_path, with_admin2(INVENTORY))
    after = files(out)
    # admin1's tunnels and every password are kept; only configs and admin2's files are new
    for path in ("admin1/keys/web1.key", "admin1/passwords/web1", "web1/keys/admin1.key",
                 "web1/password", "web2/password"):
        assert after[path] == kept[path], path
    web1 = load(out / "web1/appliance.yaml")
    assert [p.name for p in web1.peers] == ["admin1", "admin2"]
    admins = [load(out / f"admin{i}/appliance.yaml") for i in (1, 2)]
    password = (out / "web1/password").read_bytes()
    assert all((out / f"admin{i}/passwords/web1").read_bytes() == password for i in (1, 2))
    spis = [spi for cfg in admins for p in cfg.peers for spi in (p.spi_in, p.spi_out)]
    assert len(spis) == len(set(spis)) == 8          # a tunnel of its own per pair
    for admin, peer in zip(admins, web1.peers):
        mine = admin.find_peer("web1")
        assert (peer.spi_in, peer.spi_out) == (mine.spi_out, mine.spi_in)
    keys = {(out / f"web1/keys/admin{i}.key").read_bytes() for i in (1, 2)}
    assert len(keys) == 2


def test_a_changed_algorithm_makes_new_keys(tmp_path):
    out, _ = rendered(tmp_path, INVENTORY)
    before = files(out)
    rendered(tmp_path, INVENTORY + "ipsec: {algorithm: cbc(aes)+hmac(sha256)}\n")
    after = files(out)
    assert after["web1/keys/admin1.key"][2] != before["web1/keys/admin1.key"][2]
    assert after["web1/password"] == before["web1/password"]
    assert load(out / "web1/appliance.yaml").algorithm == "cbc(aes)+hmac(sha256)"


def test_lost_admin_half_is_rebuilt_from_the_targets(tmp_path):
    out, _ = rendered(tmp_path, INVENTORY)
    before = files(out)
    subprocess.run(["rm", "-r", str(out / "admin1")], check=True)
    rendered(tmp_path, INVENTORY)
    after = files(out)
    assert {p: v[2] for p, v in after.items()} == {p: v[2] for p, v in before.items()}


BAD = [
    ("admins: []\ntargets: [{name: web1, address: 10.10.25.7}]\n",
     "admins: [] is not a non-empty list of hosts ({name: ..., address: ...})"),
    (INVENTORY + "  db: [web1, db1]\n", "groups.db[1]: 'db1' is not a target name; list "
     "targets by their name"),
    (INVENTORY.replace("web2, address: 10.10.25.8", "admin1, address: 10.10.25.8"),
     "targets[1].name: admin1 is also admins[0]'s; every host needs its own name"),
    (INVENTORY.replace("10.10.25.8", "10.10.25.7"),
     "targets[1].address: 10.10.25.7 is also targets[0]'s; every host needs its own "
     "address"),
    (INVENTORY.replace("10.10.25.8", "fd00::8"),
     "targets[1].address: fd00::8 is IPv6 but admins[0] is IPv4; every admin host reaches "
     "every target, so use one family"),
    (INVENTORY.replace("signal]", "signals]"),
     "targets[0].allow[3]: 'signals' is not allowed; use one of: all, "),
    (INVENTORY + "sysrq: {port: 0}\n", "sysrq.port: 0 is out of range; use 1 to 65535"),
    (INVENTORY + "etc_dir: relative/dir\n", "etc_dir: not an absolute path without spaces "
     "or control characters; give e.g. /etc/sysrq-appliance/password"),
    (INVENTORY + "target: []\n", ": target: unknown field; allowed: admins, targets, groups, "
     "sysrq, ipsec, etc_dir"),
    (INVENTORY.replace("{name: web2,", "{mac: 'aa:bb:cc:dd:ee:ff', name: web2,"),
     "targets[1].mac: unknown field; allowed: name, address, allow"),
    ("- just a list\n", "is not an inventory: its top level must be a mapping"),
    (INVENTORY + "targets: []\n", "duplicate key 'targets'"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_inventory_is_one_line_exit_2_and_writes_nothing(tmp_path, text, expected):
    result = render(tmp_path, text)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith(f"sysrq-appliance: {tmp_path}/inventory.yaml: ")
    assert not (tmp_path / "fleet").exists()


def test_a_damaged_half_is_one_line_and_nothing_changes(tmp_path):
    out, _ = rendered(tmp_path, INVENTORY)
    (out / "web1/keys/admin1.key").write_bytes(b"in zz\nout zz\n")
    os.chmod(out / "web2/password", 0o644)
    before = files(out)
    result = render(tmp_path, INVENTORY.replace("groups:", WEB3 + "groups:"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "0644" in result.stderr or "not hex" in result.stderr
    assert files(out) == before and not (out / "web3").exists()


def test_render_into_a_shared_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o777)
    result = render(tmp_path, INVENTORY, out="shared/fleet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "chmod go-w" in result.stderr and not (shared / "fleet").exists()


def test_a_relative_out_is_where_the_command_runs(tmp_path):
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
    result = subprocess.run([sys.executable, "-m", "sysrq_appliance", "fleet", "render",
                             "inventory.yaml", "--out", "fleet"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote fleet/web1/: appliance.yaml, keys/admin1.key, password" in result.stdout
    assert load(tmp_path / "fleet/admin1/appliance.yaml").role == "sender"


def test_configs_round_trip_through_yaml(tmp_path):
    """What configdoc writes reads back as the very Config that config.parse made of the
    document before it was dumped."""
    doc = configdoc.document(
        "sender", "10.10.25.1",
        [configdoc.peer("web1", "10.10.25.7", 0x100, 0xFFFFFFFF, "/e/keys/web1.key",
                        "/e/passwords/web1", ("sync", "dump"))],
        "cbc(aes)+hmac(sha256)", 9999, groups=(("web", ("web1",)),))
    text = configdoc.render(doc, "/e/appliance.yaml", "fleet render").decode()
    assert "spi_out: 0xffffffff" in text and "allow: [sync, dump]" in text
    again = yamlfile.parse(text, "/e/appliance.yaml")
    assert again == doc
    assert config.parse(again, "/e/appliance.yaml") == config.parse(doc, "/e/appliance.yaml")


def test_pair_is_a_fleet_of_two(tmp_path):
    inv = inventory.Inventory("x", (inventory.Host("admin1", "10.10.25.1"),),
                              (inventory.Host("web1", "10.10.25.7", ("sync",)),))
    admins, targets = halves.render(inv, halves.complete(inv, halves.Material()), by="pair")
    assert sorted(targets["web1"]) == ["appliance.yaml", "keys/admin1.key", "password"]
    assert sorted(admins["admin1"]) == ["appliance.yaml", "keys/web1.key", "passwords/web1"]
    out = tmp_path / "bundle"
    result = cli("pair", "--target", "web1=10.10.25.7", "--sender", "admin1=10.10.25.1",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        ".lock", "sender/appliance.yaml", "sender/keys/web1.key", "sender/passwords/web1",
        "target/appliance.yaml", "target/keys/admin1.key", "target/password"]
    assert "written by 'sysrq-appliance pair'" in (out / "target/appliance.yaml").read_text()


def test_complete_keeps_what_is_known_and_never_repeats_an_spi():
    inv = inventory.Inventory("x", (inventory.Host("a", "10.0.0.1"),),
                              tuple(inventory.Host(f"t{i}", f"10.0.1.{i}", ("sync",))
                                    for i in range(1, 4)))
    keys = esp_keys.generate(inv.algorithm)
    known = halves.Material({"t1": b"pw"}, {("a", "t1"): halves.Tunnel(0x1000, 0x1001, keys),
                                            ("a", "t2"): halves.Tunnel(0x1000, 0x2001, keys)})
    counter = iter(range(0x1000, 0x9000))

    def spi(taken):      # deterministic, and eager to reuse what is taken
        return next(s for s in counter if s not in taken)

    material = halves.complete(inv, known, spi=spi)
    assert material.tunnels["a", "t1"] == known.tunnels["a", "t1"]
    assert material.passwords["t1"] == b"pw"
    # t2's kept tunnel repeats t1's SPI 0x1000: it is made new
    assert material.tunnels["a", "t2"].to_target not in (0x1000, 0x1001)
    spis = [s for t in material.tunnels.values() for s in (t.to_target, t.to_admin)]
    assert len(spis) == len(set(spis)) == 6


def test_inventory_parse_without_a_file():
    inv = inventory.parse(yaml.safe_load(INVENTORY), "inv.yaml")
    assert [t.name for t in inv.targets] == ["web1", "web2"]
    assert inv.groups == (("web", ("web1", "web2")),)
    with pytest.raises(InputError):
        inventory.parse(None, "inv.yaml")

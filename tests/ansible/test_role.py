"""The Ansible role (ansible/roles/sysrq_appliance) with Debian's ansible, as an unprivileged
user (make ansible): each host's half placed into a scratch directory over the local connection (no package,
no unit), modes kept, no secret in the output, a second run with changed=0, a target that
left the fleet removed from the admin host. The three-VM run does the real rollout."""

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"
if not ROLES.is_dir():
    ROLES = pathlib.Path("/usr/share/doc/sysrq-appliance/examples/ansible/roles")
PLAYBOOK = """\
- hosts: fleet
  gather_facts: false
  roles: [sysrq_appliance]
"""
FLEET = """\
admins:
  - {name: admin1, address: 10.10.25.1}
targets:
  - {name: web1, address: 10.10.25.7}
  - {name: web2, address: 10.10.25.8}
"""


def fleet_render(tmp_path, text):
    (tmp_path / "fleet.yaml").write_text(text)
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
    subprocess.run([sys.executable, "-m", "sysrq_appliance", "fleet", "render",
                    str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "out")], check=True,
                   capture_output=True, env=env)


def playbook(tmp_path):
    """Run the role for admin1 and web1, each into its own scratch /etc; the output (both streams)."""
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible is not installed (tests/install-deps.sh ansible installs it)")
    user = pathlib.Path(tmp_path).owner()
    group = pathlib.Path(tmp_path).group()
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.ini").write_text(
        "[fleet]\n" + "".join(f"{host} ansible_connection=local sysrq_appliance_etc_dir="
                              f"{tmp_path}/hosts/{host}/etc\n" for host in ("admin1", "web1")))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "ANSIBLE_ROLES_PATH": str(ROLES), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_REMOTE_TEMP": str(tmp_path / "rtmp")}
    result = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "play.yml"),
         "--diff", "-e", f"sysrq_appliance_fleet_dir={tmp_path}/out",
         "-e", "sysrq_appliance_install=false", "-e", "sysrq_appliance_service=false",
         "-e", f"sysrq_appliance_owner={user}", "-e", f"sysrq_appliance_group={group}"],
        capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def recap(output):
    """host -> changed count from the PLAY RECAP."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def secrets(tmp_path):
    """Every password and ESP key in the rendered halves (not the role's packed copies under
    out/.ansible: the same secrets inside tar headers, whose short octal fields would make
    "a key in the output" match by chance)."""
    out, found = tmp_path / "out", []
    for path in out.rglob("*"):
        if path.name == "appliance.yaml" or not path.is_file() \
                or any(part.startswith(".") for part in path.relative_to(out).parts):
            continue
        text = path.read_text()
        if path.suffix == ".key":
            found += [words[1] for words in map(str.split, text.splitlines())
                      if len(words) == 2 and words[0] in ("in", "out")]
        else:
            found.append(text)
    return found


def test_syntax_check():
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible is not installed (tests/install-deps.sh ansible installs it)")
    example = ROLES.parent / "playbook.example.yml"
    result = subprocess.run(["ansible-playbook", "--syntax-check", "-i",
                             str(ROLES.parent / "inventory.example.ini"), str(example)],
                            capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], "ANSIBLE_ROLES_PATH": str(ROLES),
                                 "HOME": os.environ.get("HOME", "/")})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_role_places_each_half_a_second_run_changes_nothing_and_leavers_go(tmp_path):
    fleet_render(tmp_path, FLEET)
    first = playbook(tmp_path)
    assert recap(first) == {"admin1": 3, "web1": 3}     # directory, packed half, unpacked
    for host in ("admin1", "web1"):
        etc = tmp_path / "hosts" / host / "etc"
        half = tmp_path / "out" / host
        placed = sorted(str(p.relative_to(etc)) for p in etc.rglob("*")
                        if p.name != ".fleet-half.tar")
        assert placed == sorted(str(p.relative_to(half)) for p in half.rglob("*"))
        for path in [etc, *etc.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), path
        for path in half.rglob("*"):
            if path.is_file():
                assert (etc / path.relative_to(half)).read_bytes() == path.read_bytes()
    second = playbook(tmp_path)
    assert recap(second) == {"admin1": 0, "web1": 0}
    rendered = secrets(tmp_path)
    assert len(rendered) == 4 + 8    # two targets: a password and two keys, on each end
    assert all(len(secret) >= 32 for secret in rendered)

    # web2 leaves the fleet: the admin host's config changes and web2's key and password go
    fleet_render(tmp_path, FLEET.replace("  - {name: web2, address: 10.10.25.8}\n", ""))
    third = playbook(tmp_path)
    assert recap(third) == {"admin1": 2, "web1": 0}     # packed half, unpacked
    etc = tmp_path / "hosts" / "admin1" / "etc"
    assert sorted(p.name for p in (etc / "keys").iterdir()) == ["web1.key"]
    assert sorted(p.name for p in (etc / "passwords").iterdir()) == ["web1"]
    assert recap(playbook(tmp_path)) == {"admin1": 0, "web1": 0}

    # a file changed on the host by hand is put back, and only that host changes; a file of
    # the admin's beside the half is left alone, and nothing of the unpacking stays behind
    etc = tmp_path / "hosts" / "web1" / "etc"
    (etc / "password").write_bytes(b"edited-by-hand")
    (etc / "notes.local").write_bytes(b"the admin's")
    fixed = playbook(tmp_path)
    assert recap(fixed) == {"admin1": 0, "web1": 1}
    assert (etc / "password").read_bytes() == (tmp_path / "out/web1/password").read_bytes()
    assert (etc / "notes.local").read_bytes() == b"the admin's"
    assert sorted(p.name for p in etc.iterdir()) == \
        [".fleet-half.tar", "appliance.yaml", "keys", "notes.local", "password"]
    for output in (first, second, third, fixed):   # fixed rewrote a password, with --diff
        for secret in rendered:
            assert secret not in output


def unpack_script():
    """The shell script of the role's task that puts the half in place, as the role has it."""
    tasks = yaml.safe_load((ROLES / "sysrq_appliance" / "tasks" / "main.yml").read_text())
    task = next(t for t in tasks if t["name"].startswith("The half in place"))
    return task["ansible.builtin.shell"]["cmd"]


@pytest.mark.parametrize("fault", ["disk full", "a directory in a key's way",
                                   "keys/ a link elsewhere"])
def test_an_unpack_that_fails_leaves_the_old_config_whole(tmp_path, fault):
    """The half is unpacked beside the live files and renamed into place, the config last. A
    write that fails (a full disk; here a file size limit of 512 bytes, which the config
    exceeds) changes none of the host's files, where unpacking in place left the config half
    written; a key that cannot be put in place leaves the old config, and its leavers; a
    link in a directory's place is refused, and nothing is written where it points."""
    fleet_render(tmp_path, FLEET)
    etc = tmp_path / "etc"
    shutil.copytree(tmp_path / "out" / "admin1", etc)
    prefix = ""
    if fault == "disk full":
        prefix = "ulimit -f 1\n"    # in 512-byte blocks (dash)
    elif fault == "a directory in a key's way":
        (etc / "keys" / "web1.key").unlink()
        (etc / "keys" / "web1.key").mkdir()
        (etc / "keys" / "web1.key" / "something").write_text("")
    else:
        shutil.move(etc / "keys", tmp_path / "elsewhere")
        (etc / "keys").symlink_to(tmp_path / "elsewhere")
    before = {str(p): p.read_bytes() for p in [*etc.rglob("*"), *tmp_path.glob("elsewhere/*")]
              if p.is_file()}
    # admin1's next half: web2 left the fleet, web3 joined (a new config; web2's key and
    # password are leavers, web3's are new)
    fleet_render(tmp_path, FLEET.replace("web2, address: 10.10.25.8", "web3, address: 10.10.25.9"))
    assert (tmp_path / "out" / "admin1" / "appliance.yaml").stat().st_size > 512
    subprocess.run(["tar", "--create", "--format=gnu", "--sort=name",
                    "--file", str(etc / ".fleet-half.tar"),
                    "--directory", str(tmp_path / "out" / "admin1"), "."], check=True)

    result = subprocess.run(["sh", "-c", prefix + unpack_script()], cwd=etc,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "unpacked" not in result.stdout, result
    if fault == "keys/ a link elsewhere":
        assert result.stderr == f"{etc}/keys is not a directory (a link, or a file): " \
            "remove it, then run again\n"
    after = {str(p): p.read_bytes() for p in [*etc.rglob("*"), *tmp_path.glob("elsewhere/*")]
             if p.is_file() and p.name != ".fleet-half.tar"}
    assert after == before    # web1's key is the first file to go in place: none did
    assert not (etc / ".fleet-half.new").exists()

"""The command line as a user runs it: a subprocess of `python3 -m sysrq_appliance`."""

import hashlib
import os
import pathlib
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBCOMMANDS = [["apply"], ["down"], ["status"], ["plan"], ["doctor"], ["pair"], ["password"],
               ["password", "set"], ["password", "rotate"], ["send"], ["fleet"],
               ["fleet", "render"]]


def cli(*argv, input=None):
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "sysrq_appliance", *argv], input=input,
                          capture_output=True, env=env)


def text(result):
    return result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_help_has_an_example(argv):
    result = cli(*argv, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout.decode()


def test_pair_help_names_each_algorithm_whole():
    """Python 3.11's usage wrapper cut "rfc4106(gcm(aes))" into "rfc4106gcm(aes))"."""
    help_text = " ".join(cli("pair", "--help").stdout.decode().split())
    for algorithm in ("rfc4106(gcm(aes))", "cbc(aes)+hmac(sha256)"):
        assert help_text.count(algorithm) >= 1, help_text
    assert "rfc4106gcm" not in help_text and "hmac(sha256}" not in help_text


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.decode().startswith("sysrq-appliance 0.")


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["send"], ["send", "web1", "s", "--count", "many"],
    ["pair", "--target", "web1=10.10.25.7"], ["password"], ["status", "--yaml"],
])
def test_wrong_usage_is_one_line_and_exit_2(argv):
    result = cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "--help" in lines[0]


def _pair(tmp_path, target="web1=10.10.25.7", sender="admin1=10.10.25.1"):
    out = tmp_path / "bundle"
    result = cli("pair", "--target", target, "--sender", sender, "--out", str(out),
                 "--etc-dir", str(tmp_path / "etc"))
    assert result.returncode == 0, text(result)
    # install each half where its config says it lives (a stand-in for the two hosts)
    return out, result


def _install_half(out, half, etc):
    subprocess.run(["cp", "-a", f"{out}/{half}/.", str(etc)], check=True)


def test_pair_writes_private_files_and_refuses_to_overwrite(tmp_path):
    out, result = _pair(tmp_path)
    assert "next: copy" in result.stdout.decode()
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    again = cli("pair", "--target", "web1=10.10.25.7", "--sender", "admin1=10.10.25.1",
                "--out", str(out))
    assert again.returncode == 2 and "exists already" in again.stderr.decode()


def test_pair_halves_mirror_each_other(tmp_path):
    from sysrq_appliance import config, esp_keys
    out, _ = _pair(tmp_path)
    t = config.parse(__import__("yaml").safe_load((out / "target/appliance.yaml").read_text()))
    s = config.parse(__import__("yaml").safe_load((out / "sender/appliance.yaml").read_text()))
    assert (t.role, t.local, t.peers[0].address) == ("target", "10.10.25.7", "10.10.25.1")
    assert (s.role, s.local, s.peers[0].address) == ("sender", "10.10.25.1", "10.10.25.7")
    assert (t.peers[0].spi_in, t.peers[0].spi_out) == (s.peers[0].spi_out, s.peers[0].spi_in)
    tk = esp_keys.parse((out / "target/keys/admin1.key").read_bytes(), "t", t.algorithm)
    sk = esp_keys.parse((out / "sender/keys/web1.key").read_bytes(), "s", s.algorithm)
    assert tk == sk.swapped()
    assert (out / "target/password").read_bytes() == (out / "sender/passwords/web1").read_bytes()


@pytest.mark.parametrize("target,sender,destination", [
    ("web1=10.10.25.7", "admin1=10.10.25.1", "10.10.25.7"),
    ("web1=2001:db8::7", "admin1=2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0007"),
])
def test_send_dry_run_verifies_against_independent_digest(tmp_path, target, sender, destination):
    out, _ = _pair(tmp_path, target, sender)
    etc = tmp_path / "etc"
    _install_half(out, "sender", etc)
    secret = (etc / "passwords/web1").read_bytes()
    result = cli("--config", str(etc / "appliance.yaml"), "--state-dir", str(tmp_path / "state"),
                 "send", "web1", "sub", "--dry-run", "--seqno", "1732400000", "--salt", "NaCl")
    assert result.returncode == 0, text(result)
    request = result.stdout.decode().strip().rsplit(" ", 1)[1]
    expected = hashlib.sha1(f"sub,1732400000,NaCl,{destination},".encode() + secret).hexdigest()
    assert request == f"sub,1732400000,NaCl,{expected}"


def test_send_refuses_a_target_config(tmp_path):
    out, _ = _pair(tmp_path)
    etc = tmp_path / "etc"
    _install_half(out, "target", etc)
    result = cli("--config", str(etc / "appliance.yaml"), "send", "admin1", "s", "--dry-run")
    assert result.returncode == 2 and "needs a sender config" in result.stderr.decode()


def test_password_never_appears_in_any_output_or_argv(tmp_path):
    """pair + password set + rotate + send --dry-run, every byte of output captured."""
    out, first = _pair(tmp_path)
    etc_t, etc_s = tmp_path / "etc", tmp_path / "sender-etc"
    _install_half(out, "target", etc_t)
    subprocess.run(["cp", "-a", f"{out}/sender/.", str(etc_s)], check=True)
    sender_cfg = etc_s / "appliance.yaml"
    sender_cfg.write_text(sender_cfg.read_text().replace(str(etc_t), str(etc_s)))
    paired = (etc_t / "password").read_bytes()
    new = b"a-brand-new-password-0123456789"
    argvs = []
    outputs = [text(first)]

    def run(*argv, input=None):
        argvs.append(argv)
        result = cli(*argv, input=input)
        outputs.append(text(result))
        return result

    sysfs = tmp_path / "parameters"
    sysfs.mkdir()
    (sysfs / "password").write_bytes(b"")
    state = ("--state-dir", str(tmp_path / "state"))
    assert run("--config", str(etc_t / "appliance.yaml"), "--sysfs-dir", str(sysfs), *state,
               "password", "set", input=new).returncode == 0
    assert (sysfs / "password").read_bytes() == new
    assert run("--config", str(sender_cfg), *state, "password", "set", "--peer", "web1",
               input=new).returncode == 0
    assert run("--config", str(sender_cfg), "--state-dir", str(tmp_path / "state"),
               "send", "web1", "s", "--dry-run").returncode == 0
    assert run("--config", str(etc_t / "appliance.yaml"), "--sysfs-dir", str(sysfs), *state,
               "password", "rotate").returncode == 0
    rotated = (etc_t / "password").read_bytes()
    assert rotated not in (new, paired) and (sysfs / "password").read_bytes() == rotated
    bad = run("--config", str(etc_t / "appliance.yaml"), "password", "set",
              input=b"has,comma" + new)
    assert bad.returncode == 2
    everything = "\n".join(outputs).encode()
    for secret in (paired, new, rotated):
        assert secret not in everything
        assert all(secret.decode() not in " ".join(a) for a in argvs)
    for path in [*etc_t.rglob("*"), *etc_s.rglob("*"), *(tmp_path / "state").rglob("*")]:
        assert not stat.S_IMODE(path.stat().st_mode) & 0o077, path


def test_password_set_refuses_a_terminal_or_bad_value(tmp_path):
    out, _ = _pair(tmp_path)
    etc = tmp_path / "etc"
    _install_half(out, "target", etc)
    result = cli("--config", str(etc / "appliance.yaml"), "password", "set",
                 input=b"x" * 64)
    assert result.returncode == 2
    assert "has more than 63 bytes; xt_SYSRQ keeps at most 63" in result.stderr.decode()


@pytest.mark.parametrize("argv", [["send", "web1"], ["send", "web1", "s", "--sequence", "thaw"]])
def test_send_needs_keys_or_a_sequence(argv):
    result = cli(*argv)
    assert result.returncode == 2
    assert result.stderr.decode() == ("sysrq-appliance: send: give KEYS or --sequence NAME, not "
                                      "both or neither (see 'sysrq-appliance send --help')\n")


def test_sequence_dry_run_and_mask_refusal(tmp_path):
    out, _ = _pair(tmp_path)
    etc = tmp_path / "etc"
    _install_half(out, "sender", etc)
    base = ("--config", str(etc / "appliance.yaml"), "--state-dir", str(tmp_path / "state"))
    result = cli(*base, "send", "web1", "--sequence", "reboot-safely", "--dry-run",
                 "--seqno", "5000", "--salt", "x")
    assert result.returncode == 0, text(result)
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "reboot-safely on web1: s, wait 10 s, u, wait 5 s, b"
    assert lines[1].startswith("  1/5 would send to web1 (10.10.25.7:9) from 10.10.25.1: s,5000,x,")
    assert lines[2] == "  2/5 wait 10 s"
    assert lines[3].startswith("  3/5 would send") and ": u,5001,x," in lines[3]
    assert ": b,5002,x," in lines[5]
    refused = cli(*base, "send", "web1", "--sequence", "diagnose", "--dry-run")
    assert refused.returncode == 2
    assert refused.stderr.decode().strip() == (
        "sysrq-appliance: --sequence diagnose: web1 allows only sync, remount, reboot; key 'w' "
        "needs 'dump' in the target's sysrq.allow (and in this peer's allow)")
    single = cli(*base, "send", "web1", "t", "--dry-run")
    assert single.returncode == 2
    assert single.stderr.decode().strip() == (
        "sysrq-appliance: KEYS: web1 allows only sync, remount, reboot; key 't' needs 'dump' in "
        "the target's sysrq.allow (and in this peer's allow)")
    unknown = cli(*base, "send", "web1", "--sequence", "panic", "--dry-run")
    assert unknown.returncode == 2 and "known: diagnose, reboot-safely, thaw" in text(unknown)


def test_sequence_dry_run_numbers_steps_as_a_real_run_would(tmp_path):
    """Without --seqno each step gets the number a real run would reserve (the clock moves
    on by each wait), and a dry run reserves nothing."""
    out, _ = _pair(tmp_path)
    etc, state = tmp_path / "etc", tmp_path / "state"
    _install_half(out, "sender", etc)
    result = cli("--config", str(etc / "appliance.yaml"), "--state-dir", str(state),
                 "send", "web1", "--sequence", "reboot-safely", "--dry-run")
    assert result.returncode == 0, text(result)
    numbers = [int(line.split(": ")[1].split(",")[1])
               for line in result.stdout.decode().splitlines() if "would send" in line]
    assert len(numbers) == 3
    assert numbers[1] - numbers[0] == 10 and numbers[2] - numbers[1] == 5, numbers
    assert not state.exists() or not any(state.iterdir())


def test_custom_sequence_overrides_builtin(tmp_path):
    out, _ = _pair(tmp_path)
    etc = tmp_path / "etc"
    _install_half(out, "sender", etc)
    cfg = etc / "appliance.yaml"
    cfg.write_text(cfg.read_text() + "sequences:\n  reboot-safely: [s, wait 30, b]\n")
    result = cli("--config", str(cfg), "--state-dir", str(tmp_path / "state"), "send", "web1",
                 "--sequence", "reboot-safely", "--dry-run")
    assert result.returncode == 0, text(result)
    assert result.stdout.decode().splitlines()[0] == "reboot-safely on web1: s, wait 30 s, b"


def test_send_imports_neither_pyroute2_nor_iptc(tmp_path):
    """The sender runs at the worst moment, maybe from a rescue shell: keep it lean."""
    out, _ = _pair(tmp_path)
    etc = tmp_path / "etc"
    _install_half(out, "sender", etc)
    code = ("import sys; from sysrq_appliance import cli; "
            f"rc = cli.main(['--config', {str(etc / 'appliance.yaml')!r}, '--state-dir', "
            f"{str(tmp_path / 'state')!r}, 'send', 'web1', 's', '--dry-run']); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'iptc')); "
            "print('HEAVY', heavy); sys.exit(rc)")
    env = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    assert result.returncode == 0, text(result)
    assert "HEAVY []" in result.stdout.decode()


def test_doctor_with_a_bad_config_is_bad_input_in_one_line(tmp_path):
    cfg = tmp_path / "appliance.yaml"
    cfg.write_text("role: target\nrole: sender\n")
    result = cli("--config", str(cfg), "doctor")
    assert result.returncode == 2
    assert result.stdout.decode().splitlines() == [
        f"FAIL config: {cfg}: line 2: duplicate key 'role'; a key may appear once in a mapping"]

"""Property-based fuzzing (Debian's python3-hypothesis), with a fixed seed and bounded
examples so CI is repeatable: random documents, bytes and argument vectors into the
loaders and the CLI parser. The only outcomes allowed are success or InputError (exit 2,
one line) — never another exception, never a hang."""

import contextlib
import io
import os
import pathlib
import subprocess

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from sysrq_appliance import cli, config, esp_keys, sa_sequence, yamlfile
from sysrq_appliance.errors import InputError

FUZZ = settings(derandomize=True, database=None, max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FIELDS = ["role", "local", "peers", "ipsec", "sysrq", "firewall", "sequences", "name",
          "address", "spi_in", "spi_out", "key_file", "password_file", "allow", "port",
          "hash", "wire", "mac", "backend", "algorithm", "drop_other"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=30),
    st.sampled_from(["target", "sender", "10.10.25.7", "10.10.25.1", "2001:db8::1",
                     "fe80::1%eth0", "0x5a000101", "sync", "all", "/etc/x", "wait 5"]))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(
                                max_size=8)), inner, max_size=6)),
    max_leaves=25)


def _one_line_input_error(call):
    try:
        return call()
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000
        assert exc.exit_code == 2
        return None


def _config_file(directory, data):
    path = pathlib.Path(directory) / "appliance.yaml"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return str(path)


@FUZZ
@given(document=DOCUMENTS)
def test_random_documents_load_or_fail_with_one_line(tmp_path, document):
    text = yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    path = _config_file(tmp_path, text)
    _one_line_input_error(lambda: config.load(path))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("role:target\nlocal 10.2[]{}&*!|>-'\",#%@`?\t\x00é")),
                    max_size=200))
def test_random_yaml_text_loads_or_fails_with_one_line(tmp_path, text):
    path = _config_file(tmp_path, text.encode("utf-8", "surrogatepass"))
    _one_line_input_error(lambda: config.load(path))


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_as_config(tmp_path, data):
    path = _config_file(tmp_path, data)
    _one_line_input_error(lambda: config.load(path))


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_key_files(data):
    _one_line_input_error(lambda: esp_keys.parse(data, "k", "rfc4106(gcm(aes))"))


@FUZZ
@given(data=st.one_of(st.binary(max_size=100), st.builds(
    lambda d: yaml.safe_dump(d).encode(), DOCUMENTS)))
def test_random_esp_floors(data):
    floors = _one_line_input_error(lambda: sa_sequence.parse_floors(data))
    if floors is not None:
        assert all(0 < spi <= 0xFFFFFFFF and 0 <= v <= sa_sequence.LIMIT
                   for spi, v in floors.items())


WORDS = st.sampled_from([
    "apply", "down", "status", "plan", "doctor", "pair", "password", "set", "rotate", "send",
    "--config", "--state-dir", "--sysfs-dir", "--json", "--force", "--target", "--sender",
    "--out", "--port", "--allow", "--etc-dir", "--algorithm", "--file", "--peer", "--length",
    "--sequence", "--count", "--wait", "--dry-run", "--seqno", "--salt", "web1", "s", "",
    "-1", "0", "1_0", "9" * 25, "nan", "1e400", "\n", "--", "-h", "--debug"])
ARGV = st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=8)


@FUZZ
@given(argv=ARGV)
def test_random_argument_vectors_parse_or_fail_with_one_line(argv):
    if any(a in ("-h", "--help", "--version") for a in argv):
        argv = [a for a in argv if a not in ("-h", "--help", "--version")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.build_parser().parse_args(argv)
            return
        except SystemExit as exc:
            code = exc.code
    assert code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], lines


def _sender(directory):
    env = {"PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2] / "appliance"),
           "PATH": os.environ["PATH"]}
    etc = pathlib.Path(directory) / "etc"
    subprocess.run(["/usr/bin/python3", "-m", "sysrq_appliance", "pair", "--target",
                    "web1=10.10.25.7", "--sender", "admin1=10.10.25.1", "--out",
                    f"{directory}/b", "--etc-dir", str(etc)], check=True, env=env,
                   capture_output=True)
    subprocess.run(["cp", "-a", f"{directory}/b/sender/.", str(etc)], check=True)
    return etc / "appliance.yaml"


SEND_WORDS = st.one_of(
    st.sampled_from(["web1", "10.10.25.7", "s", "sub", "S", "", ",", "--sequence", "thaw",
                     "reboot-safely", "--count", "--wait", "--seqno", "--salt", "1", "0",
                     "99999999999999999999", "a,b", "x" * 70, "--", "-1"]),
    st.text(max_size=10))


@FUZZ
@given(words=st.lists(SEND_WORDS, max_size=6))
def test_random_dry_run_sends_succeed_or_fail_with_one_line(tmp_path, words):
    """In-process: `send --dry-run` never sends and never writes outside --state-dir."""
    cfg = tmp_path / "etc" / "appliance.yaml"
    if not cfg.exists():
        _sender(tmp_path)
    argv = ["--config", str(cfg), "--state-dir", str(tmp_path / "state"), "send",
            "--dry-run", *words]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:   # argparse's usage errors
            code = exc.code
    lines = err.getvalue().splitlines()
    assert code in (0, 2), (code, lines)
    if code == 2:
        assert len(lines) == 1, lines
    assert "internal error" not in err.getvalue()

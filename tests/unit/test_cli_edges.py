"""The CLI's edge: races on the one lock, closed pipes, other users, internal errors."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from sysrq_appliance import lock
from sysrq_appliance.errors import ApplianceError

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}
PROGRAM = ["/usr/bin/python3", "-m", "sysrq_appliance"]


def _target(tmp_path):
    etc, sysfs = tmp_path / "etc", tmp_path / "sys"
    subprocess.run([*PROGRAM, "pair", "--target", "web1=10.10.25.7", "--sender",
                    "admin1=10.10.25.1", "--out", str(tmp_path / "b"), "--etc-dir", str(etc)],
                   check=True, env=ENV, capture_output=True)
    subprocess.run(["cp", "-a", f"{tmp_path}/b/target/.", str(etc)], check=True)
    sysfs.mkdir()
    (sysfs / "password").write_bytes(b"")
    return ["--config", str(etc / "appliance.yaml"), "--state-dir", str(tmp_path / "state"),
            "--sysfs-dir", str(sysfs)], etc / "password", sysfs / "password"


def test_concurrent_rotations_leave_file_and_kernel_equal(tmp_path):
    """Defect: two rotations at once left the stored password and the kernel's different."""
    options, stored, kernel = _target(tmp_path)
    for _ in range(12):
        runs = [subprocess.Popen([*PROGRAM, *options, "password", "rotate"], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(3)]
        for run in runs:
            assert run.wait(timeout=60) == 0, run.stderr.read()
        assert stored.read_bytes() == kernel.read_bytes()


def test_a_reader_waits_then_says_who_holds_the_lock(tmp_path):
    state = tmp_path / "state"
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import sys, time; from sysrq_appliance import lock\n"
         f"with lock.held({str(state)!r}, 'apply'):\n print('held', flush=True); "
         "time.sleep(30)"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(ApplianceError) as info:
            with lock.held(str(state), "status", shared=True, wait=0.5):
                pass
        assert time.monotonic() - started >= 0.5
        assert str(info.value) == (f"{state}/.lock is held by pid {holder.pid} (apply) for "
                                   "more than 0.5 s; try again when it has finished")
    finally:
        holder.kill()
        holder.wait()
    with lock.held(str(state), "status", shared=True, wait=0.5):
        pass   # free again once the holder is gone


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    """`sysrq-appliance ... | head -0`: the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run([*PROGRAM, "pair", "--help"], env=ENV, stdout=write,
                          stderr=subprocess.PIPE)
    os.close(write)
    assert done.returncode == 1
    assert done.stderr == b""


def test_an_internal_error_is_one_line_and_the_traceback_only_with_debug(tmp_path):
    code = ("import sys; from sysrq_appliance import cli, pair\n"
            "def broken(*a, **k): raise KeyError('a value we hold')\n"
            "pair.write_bundle = broken\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    argv = ["pair", "--target", "web1=10.10.25.7", "--sender", "admin1=10.10.25.1", "--out",
            str(tmp_path / "b")]
    quiet = subprocess.run(["/usr/bin/python3", "-c", code, *argv], env=ENV,
                           capture_output=True, text=True)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        "sysrq-appliance: internal error: KeyError at <string>:2, please report it (run "
        "again with --debug for the traceback)"]
    loud = subprocess.run(["/usr/bin/python3", "-c", code, "--debug", *argv], env=ENV,
                          capture_output=True, text=True)
    assert loud.returncode == 1 and "Traceback" in loud.stderr
    assert "a value we hold" not in quiet.stderr


@pytest.fixture
def code_for_nobody():
    """PYTHONPATH holding a copy of the package that user nobody can import: the checkout
    (under /root, or a package build's 0700 directory) may be closed to it."""
    import shutil
    import tempfile
    import sysrq_appliance
    where = tempfile.mkdtemp(prefix="sysrq-appliance-code.", dir="/run")
    try:
        os.chmod(where, 0o755)
        shutil.copytree(pathlib.Path(sysrq_appliance.__file__).parent,
                        os.path.join(where, "sysrq_appliance"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a+rX", where], check=True)
        yield {**ENV, "PYTHONPATH": where, "PYTHONDONTWRITEBYTECODE": "1"}
    finally:
        shutil.rmtree(where)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_a_non_root_user_is_told_to_run_as_root(tmp_path, code_for_nobody):
    options, _, _ = _target(tmp_path)
    os.chmod(tmp_path, 0o755)     # the scratch dir is 0700; nobody may look in, not read
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *PROGRAM, *options, "password", "rotate"], env=code_for_nobody,
                          capture_output=True, text=True, cwd="/")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"sysrq-appliance: {tmp_path}/etc/appliance.yaml: cannot read: Permission denied; "
        "run as root (e.g. sudo sysrq-appliance ...)"]

"""tests/vagrant/provision/stage.sh on this host: what a workstation without its tools sees."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "tests" / "vagrant" / "provision" / "stage.sh"


def _path_without(tmp_path, missing):
    """A PATH holding every tool stage.sh may call except `missing` (links to the real ones)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "cp", "rm", "chmod", "flock", "tar", "env"):
        if tool != missing and shutil.which(tool):
            os.symlink(shutil.which(tool), bindir / tool)
    return str(bindir)


def test_a_host_without_flock_gets_one_line_and_nothing_is_staged(tmp_path):
    stage = tmp_path / "stage"
    result = subprocess.run(
        [shutil.which("bash"), str(STAGE), str(stage), str(tmp_path), "target=10.10.25.7",
         "sender=10.10.25.1"], capture_output=True, text=True,
        env={"PATH": _path_without(tmp_path, "flock")})
    assert result.returncode == 1
    assert result.stderr == ("stage: this host needs 'flock' to stage the uploads "
                             "(apt install util-linux tar)\n")
    assert not stage.exists()

"""Make the package importable from a checkout without installing it, and give the tests
scratch directories the program trusts.

sysrq-appliance refuses secrets and configs under a directory that other users can write
to (a 1777 /tmp included), so pytest's default base under /tmp would make every test about
those files fail for the right reason. The base goes where only we can write instead:
$SYSRQ_TEST_TMP if set, else /run (root) or ~/.cache (anyone else).
"""

import os
import pathlib
import stat
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "appliance"))


def _trusted(directory):
    """Every directory from / to `directory` owned by root or us and not writable by others."""
    path = pathlib.Path(directory).resolve()
    for part in (path, *path.parents):
        st = part.stat()
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _scratch_parent():
    candidates = [os.environ.get("SYSRQ_TEST_TMP"),
                  "/run" if os.geteuid() == 0 else None,
                  os.path.join(os.path.expanduser("~"), ".cache")]
    for candidate in filter(None, candidates):
        try:
            os.makedirs(candidate, mode=0o700, exist_ok=True)
            if _trusted(candidate) and os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            continue
    raise RuntimeError("no scratch directory that only this user can write to; set "
                       "SYSRQ_TEST_TMP to one (mode 0700, on a path of root-owned "
                       "directories)")


def pytest_configure(config):
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="sysrq-appliance-tests.",
                                                  dir=_scratch_parent())


def pytest_unconfigure(config):
    import shutil
    base = str(config.option.basetemp or "")
    if os.path.basename(base).startswith("sysrq-appliance-tests."):
        shutil.rmtree(base, ignore_errors=True)

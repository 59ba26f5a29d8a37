"""The host around the kernel objects: xt_SYSRQ module, kernel.sysrq, xtables-addons version.

File locations are gathered in Paths so tests can point them at a scratch directory.
"""

import os
import re
import subprocess
from dataclasses import dataclass

from sysrq_appliance.errors import ApplianceError, excerpt
from sysrq_appliance import password
from sysrq_appliance.password import SYSFS_PARAMETERS
from sysrq_appliance.secretfile import read_small, write_secret, write_value
from sysrq_appliance.seqno import DEFAULT_STATE_DIR

MIN_SAFE_XTABLES_ADDONS = (3, 26)   # 3.23-3.25: xt_SYSRQ corrupts the stack (kernel panic)


@dataclass(frozen=True)
class Paths:
    sysfs_dir: str = SYSFS_PARAMETERS
    sysctl: str = "/proc/sys/kernel/sysrq"
    state_dir: str = DEFAULT_STATE_DIR
    modprobe_conf: str = "/etc/modprobe.d/sysrq-appliance.conf"

    @property
    def saved_sysctl(self):
        return os.path.join(self.state_dir, "kernel.sysrq.saved")


def module_loaded(paths):
    return password.module_loaded(paths.sysfs_dir)


def module_hash(paths):
    try:
        return read_small(os.path.join(paths.sysfs_dir, "hash")).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def load_module(paths, hash_name):
    """modprobe xt_SYSRQ, with `hash=` in our modprobe.d file only when it is not sha1."""
    if hash_name != "sha1":
        write_secret(paths.modprobe_conf, f"options xt_SYSRQ hash={hash_name}\n".encode(),
                     private_dir=False)
    elif os.path.exists(paths.modprobe_conf):
        os.unlink(paths.modprobe_conf)
    result = subprocess.run(["modprobe", "xt_SYSRQ"], capture_output=True, text=True)
    if result.returncode != 0 or not module_loaded(paths):
        detail = result.stderr.strip().splitlines()[-1:] or ["module did not appear in /sys"]
        raise ApplianceError(f"modprobe xt_SYSRQ failed: {detail[0]}; install "
                             "xtables-addons-dkms and the headers of the running kernel")


def unload_module():
    """Best effort: fails harmlessly while someone else's rule still uses the module."""
    return subprocess.run(["modprobe", "-r", "xt_SYSRQ"], capture_output=True).returncode == 0


def read_sysrq(paths):
    try:
        text = read_small(paths.sysctl).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplianceError(f"cannot read {paths.sysctl}: {exc.strerror}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise ApplianceError(f"{paths.sysctl}: {excerpt(text)} is not a number; write the value you "
                             "want there (e.g. 176) and run apply again") from None


def write_sysrq(paths, mask):
    """One write() of the whole value, as `echo 176 > /proc/sys/kernel/sysrq` does."""
    try:
        write_value(paths.sysctl, f"{mask}\n".encode("ascii"))
    except OSError as exc:
        raise ApplianceError(f"cannot write {paths.sysctl}: {exc.strerror}") from None


def saved_sysrq(paths):
    try:
        text = read_small(paths.saved_sysctl, 32)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplianceError(f"cannot read {paths.saved_sysctl}: {exc.strerror}") from None
    return int(text) if re.fullmatch(rb"[0-9]{1,10}\n?", text) else None


def save_sysrq(paths, mask):
    write_secret(paths.saved_sysctl, f"{mask}\n".encode())


def forget_saved_sysrq(paths):
    if os.path.exists(paths.saved_sysctl):
        os.unlink(paths.saved_sysctl)


def xtables_addons_version():
    """(major, minor) of the installed xtables-addons, from dpkg or modinfo; None if unknown."""
    # A removed (config-files) package still has a version: only an installed one counts.
    query = ["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}\n",
             "xtables-addons-dkms", "xtables-addons-common"]
    try:
        out = subprocess.run(query, capture_output=True, text=True).stdout
    except FileNotFoundError:
        return None
    for line in out.splitlines():
        match = re.match(r"installed (?:\d+:)?(\d+)\.(\d+)", line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None

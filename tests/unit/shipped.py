"""Where a file the package ships is: in the source tree, or, when the unit tier runs against
the installed package (debian/tests copies only tests/ and docs/), where the package put it."""

import gzip
import pathlib

import sysrq_appliance

ROOT = pathlib.Path(__file__).resolve().parents[2]
IN_SOURCE_TREE = (ROOT / "debian" / "control").exists()
DOC = pathlib.Path("/usr/share/doc/sysrq-appliance")
SYSTEMD = [pathlib.Path("/usr/lib/systemd/system"), pathlib.Path("/lib/systemd/system")]


def units():
    """Every systemd unit file the package ships (the source tree's debian/ copies)."""
    if IN_SOURCE_TREE:
        return sorted((ROOT / "debian").glob("*.service"))
    return sorted(p for d in SYSTEMD for p in d.glob("sysrq-appliance*.service"))


def unit(name):
    """One unit, e.g. "sysrq-appliance-helper.service"."""
    if IN_SOURCE_TREE:
        return ROOT / "debian" / f"sysrq-appliance.{name}"
    return next((d / name for d in SYSTEMD if (d / name).exists()), SYSTEMD[0] / name)


def text(path):
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def documents():
    """README, README.Debian and the CLI's own module, as shipped."""
    cli = pathlib.Path(sysrq_appliance.__file__).parent / "cli.py"
    if IN_SOURCE_TREE:
        return [ROOT / "README.md", ROOT / "debian" / "README.Debian", cli]
    return [DOC / "README.md.gz", DOC / "README.Debian", cli]

"""tests/debian-mirror.sh: the Debian archive and security URIs from apt's sources, one-line
and deb822, the way the build and test scripts use it."""

import pathlib
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "debian-mirror.sh"


def mirror(apt_dir, kind="archive"):
    done = subprocess.run([str(SCRIPT), kind, "--apt-dir", str(apt_dir)],
                          capture_output=True, text=True, check=False)
    return done.returncode, done.stdout.strip(), done.stderr


def sources(tmp_path, files):
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


ONE_LINE = """\
# a comment
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://packages.cloud.google.com/apt cloud-sdk-bookworm main
deb [ arch=amd64 ] http://mirror.site.test/debian/ bookworm main contrib
deb http://mirror.site.test/debian bookworm-updates main
deb http://security.site.test/debian-security bookworm-security main
"""

DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main

Types: deb-src
URIs: http://src.site.test/debian
Suites: trixie

Types: deb
URIs: http://disabled.site.test/debian
Suites: trixie
Enabled: no

types: deb deb-src
uris: http://proxy.site.test:3142/debian
  http://second.site.test/debian
suites: trixie trixie-updates
components: main
signed-by: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://proxy.site.test:3142/debian-security
Suites: trixie-security
Components: main
"""


def test_one_line_format(tmp_path):
    apt = sources(tmp_path, {"sources.list": ONE_LINE})
    assert mirror(apt) == (0, "http://mirror.site.test/debian", "")
    assert mirror(apt, "security") == (0, "http://security.site.test/debian-security", "")


def test_deb822_format(tmp_path):
    apt = sources(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert mirror(apt) == (0, "http://proxy.site.test:3142/debian", "")
    assert mirror(apt, "security") == (0, "http://proxy.site.test:3142/debian-security", "")


def test_apt_order_sources_list_first_then_by_name(tmp_path):
    apt = sources(tmp_path, {
        "sources.list": "deb http://first.site.test/debian trixie main\n",
        "sources.list.d/a.sources": "Types: deb\nURIs: http://second.site.test/debian\n"
                                    "Suites: trixie\n",
        "sources.list.d/b.list": "deb http://third.site.test/debian trixie main\n",
        "sources.list.d/c.list.disabled": "deb http://never.site.test/debian trixie main\n"})
    assert mirror(apt)[1] == "http://first.site.test/debian"
    (apt / "sources.list").unlink()
    assert mirror(apt)[1] == "http://second.site.test/debian"


def test_mirror_file_is_resolved(tmp_path):
    mirrors = tmp_path / "mirrors.list"
    mirrors.write_text("# cloud image mirror list\nhttp://cloud.site.test/debian\tpriority:1\n")
    apt = sources(tmp_path, {"sources.list.d/debian.sources":
                             f"Types: deb\nURIs: mirror+file://{mirrors}\nSuites: trixie\n"})
    assert mirror(apt)[1] == "http://cloud.site.test/debian"


@pytest.mark.parametrize("text", [
    "",
    "deb cdrom:[Debian GNU/Linux 13]/ trixie main\n",
    "deb http://archive.ubuntu.test/ubuntu noble main\n",
    "deb-src http://src.site.test/debian trixie main\n",
])
def test_nothing_usable_says_which_variable(tmp_path, text):
    rc, out, err = mirror(sources(tmp_path, {"sources.list": text}))
    assert (rc, out) == (1, "")
    assert "SYSRQ_ROOT_MIRROR" in err and "SYSRQ_DEBIAN_MIRROR" in err


def test_no_security_source(tmp_path):
    apt = sources(tmp_path, {"sources.list": "deb http://m.site.test/debian trixie main\n"})
    assert mirror(apt, "security")[0] == 1

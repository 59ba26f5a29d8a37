"""A sysrq-appliance installation inside a throwaway namespace, for the root tests.

By default the files the controller writes live in a scratch directory (a stand-in
parameter directory with `password` and `hash`, and a stand-in kernel.sysrq), the peer rules
jump to ACCEPT instead of SYSRQ, and SAs are left out (--without-esp): that runs on any
kernel with network namespaces. Policies, firewall rules and everything else are real.
`real_module=True` uses the real /sys/module/xt_SYSRQ/parameters, kernel.sysrq and SYSRQ
target instead, and `esp=True` (per call) the real SAs: for kernels that have them.
"""

import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def env():
    return {"PYTHONPATH": str(ROOT / "appliance"), "PATH": os.environ["PATH"]}


class Installation:
    def __init__(self, ns, tmp_path, role, backend="nft", half=None, bundle=None,
                 real_module=False):
        self.ns, self.dir = ns, tmp_path / role
        self.etc, self.state = self.dir / "etc", self.dir / "state"
        self.dir.mkdir(parents=True)
        if real_module:
            self.sysfs = pathlib.Path("/sys/module/xt_SYSRQ/parameters")
            self.sysctl = pathlib.Path("/proc/sys/kernel/sysrq")
            self.firewall_target = "SYSRQ"
        else:
            self.sysfs, self.sysctl = self.dir / "parameters", self.dir / "sysrq"
            self.firewall_target = "ACCEPT"
            self.sysfs.mkdir()
            (self.sysfs / "password").write_bytes(b"")
            (self.sysfs / "hash").write_text("sha1\n")
            self.sysctl.write_text("1\n")
        subprocess.run(["cp", "-a", f"{bundle}/{half or role}/.", str(self.etc)], check=True)
        cfg = self.etc / "appliance.yaml"
        text = cfg.read_text().replace("/@ETC@", str(self.etc))
        cfg.write_text(text + f"firewall:\n  backend: {backend}\n")
        self.config = cfg

    def cli(self, *argv, check=False, program=("-m", "sysrq_appliance"), esp=False, prefix=()):
        """Run the CLI in the namespace (under `prefix`, e.g. setpriv); without SAs unless
        `esp`."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns.name, *prefix, "/usr/bin/python3", *program,
             "--config", str(self.config), "--state-dir", str(self.state),
             "--sysfs-dir", str(self.sysfs), "--sysctl-path", str(self.sysctl),
             "--firewall-target", self.firewall_target, *([] if esp else ["--without-esp"]), *argv],
            capture_output=True, text=True, env=env())
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def snapshot(self):
        """Everything a run could change, in comparable text."""
        def clean(text):
            lines = [re.sub(r"\[\d+:\d+\]", "", l) for l in text.splitlines()
                     if not l.startswith("#")]
            return "\n".join(lines)
        return {
            "xfrm policy": self.ns.run("ip", "xfrm", "policy").stdout,
            "xfrm state": self.ns.run("ip", "xfrm", "state").stdout,
            "nft": clean(self.ns.run("iptables-nft-save").stdout),
            "nft6": clean(self.ns.run("ip6tables-nft-save").stdout),
            "legacy": clean(self.ns.run("iptables-legacy-save").stdout),
            "sysctl": self.sysctl.read_text(),
            "password": _read(self.sysfs / "password"),
            "state files": sorted(p.name for p in self.state.glob("*")
                                  if not p.name.startswith(".")) if self.state.exists() else [],
        }


def _read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:   # the real module is not loaded
        return None


def make_bundle(tmp_path, target="10.10.25.7", sender="10.10.25.1"):
    """pair, with paths templated so each half can live in its own scratch etc dir."""
    out = tmp_path / "bundle"
    subprocess.run(["/usr/bin/python3", "-m", "sysrq_appliance", "pair",
                    "--target", f"web1={target}", "--sender", f"admin1={sender}",
                    "--out", str(out), "--etc-dir", "/@ETC@"],
                   check=True, capture_output=True, env=env())
    return out

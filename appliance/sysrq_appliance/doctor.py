"""Can this host run the appliance safely? One PASS/WARN/FAIL line per check, with the fix."""

import ctypes
import os
from dataclasses import dataclass

from sysrq_appliance import config, firewall, system, sysrq
from sysrq_appliance.errors import ApplianceError, InputError

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Check:
    level: str
    name: str
    message: str

    def __str__(self):
        return f"{self.level} {self.name}: {self.message}"


def run_checks(config_path, paths, with_sa=True, secret_owner=None):
    checks = []
    try:
        cfg = config.load(config_path, secret_owner=secret_owner)
        checks.append(Check(PASS, "config", f"{config_path} is valid ({cfg.role}, "
                            f"{len(cfg.peers)} peer(s)); secret files are root-only 0600"))
    except InputError as exc:
        return [Check(FAIL, "config", str(exc))]
    return checks + host_checks(cfg, paths, with_sa)


@dataclass(frozen=True)
class HostFacts:
    """What the checks look at, read once (observe_host) so judging is pure."""
    sysrq_mask: int | None             # None: no /proc/sys/kernel/sysrq
    xtables_addons: tuple | None       # (major, minor) installed; None: not installed
    module_hash: str | None            # the loaded xt_SYSRQ's hash; None: not loaded
    esp_probe: int | None              # _esp's exit code (0 ok, 1 no ESP, 2 no probe); None: skipped
    iptables: str | None               # "nft" or "legacy" as `iptables -V` says
    iptables_error: str | None = None  # why `iptables -V` could not tell


def host_checks(cfg, paths, with_sa=True):
    """The checks of this host for an already loaded, valid config."""
    return judge(cfg, observe_host(cfg, paths, with_sa), paths)


def observe_host(cfg, paths, with_sa=True):
    target = cfg.role == "target"
    sysrq_mask = system.read_sysrq(paths) if target else None
    xtables_addons = system.xtables_addons_version() if target else None
    module_hash = system.module_hash(paths) if target else None
    esp_probe = _esp_probe(cfg) if with_sa else None
    try:
        backend, error = firewall.detect_backend(), None
    except ApplianceError as exc:
        backend, error = None, str(exc)
    return HostFacts(sysrq_mask, xtables_addons, module_hash, esp_probe, backend, error)


def judge(cfg, host, paths):
    """Pure: one Check per aspect of `host` that matters for `cfg`."""
    checks = []
    if cfg.role == "target":
        checks += [_magic_sysrq(cfg, host.sysrq_mask, paths), _xtables_addons(host.xtables_addons),
                   _module_hash(cfg, host.module_hash)]
    checks.append(_esp(cfg, host.esp_probe) if host.esp_probe is not None else
                  Check(WARN, "esp", "not checked (--without-esp): no SA will be programmed"))
    checks.append(_iptables_backend(cfg, host.iptables, host.iptables_error))
    return [c for c in checks if c is not None]


def _magic_sysrq(cfg, current, paths):
    if current is None:
        return Check(FAIL, "magic-sysrq", f"{paths.sysctl} is missing: the kernel lacks "
                     "CONFIG_MAGIC_SYSRQ; use a kernel built with it (Debian's is)")
    if current != cfg.sysrq_mask:
        return Check(WARN, "magic-sysrq", f"kernel.sysrq is {current} "
                     f"({', '.join(sysrq.names_for(current)) or 'off'}); apply sets "
                     f"{cfg.sysrq_mask} ({', '.join(cfg.allow)})")
    return Check(PASS, "magic-sysrq", f"kernel.sysrq is {current} ({', '.join(cfg.allow)})")


def _xtables_addons(version):
    if version is None:
        return Check(FAIL, "xt_SYSRQ", "xtables-addons is not installed; "
                     "apt install xtables-addons-dkms linux-headers-$(uname -r)")
    shown = ".".join(map(str, version))
    if version < system.MIN_SAFE_XTABLES_ADDONS:
        return Check(FAIL, "xt_SYSRQ", f"xtables-addons {shown} < 3.26: its xt_SYSRQ "
                     "corrupts the kernel stack and panics on the first request that reaches "
                     "the digest check, wrong password included; a target needs "
                     "xtables-addons >= 3.26 (Debian 13 has 3.27; Debian 12 and its backports "
                     "have no newer one, so a Debian 12 host can only be a sender)")
    return Check(PASS, "xt_SYSRQ", f"xtables-addons {shown}")


def _module_hash(cfg, loaded):
    if loaded is None:
        return None
    if loaded != cfg.hash:
        return Check(FAIL, "hash", f"xt_SYSRQ runs with hash={loaded} but the config says "
                     f"{cfg.hash}; set sysrq.hash: {loaded} or reload the module")
    return Check(PASS, "hash", f"xt_SYSRQ hash={loaded} matches the config")


def _esp(cfg, code):
    if code == 0:
        return Check(PASS, "esp", f"the kernel accepts ESP tunnel SAs with {cfg.algorithm}")
    if code == 1:
        return Check(FAIL, "esp", f"the kernel has no ESP support for {cfg.algorithm}; "
                     "load esp4/esp6 and the crypto modules (Debian's kernel has them)")
    return Check(FAIL, "esp", "could not probe ESP in a throwaway network namespace "
                 "(needs root and CAP_SYS_ADMIN)")


def _esp_probe(cfg):
    """Add and drop a throwaway SA of the configured algorithm in a throwaway netns."""
    pid = os.fork()
    if pid == 0:   # child: its own network namespace, gone when it exits
        code = 3
        try:
            code = _probe_esp_in_new_netns(cfg.algorithm)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _probe_esp_in_new_netns(algorithm):
    from sysrq_appliance import esp_keys, plan, xfrm
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return 2
    keys = esp_keys.generate(algorithm)
    probe = xfrm.State("192.0.2.1", "192.0.2.2", 0x5352FFFF, xfrm.REQID_BASE,
                       **plan.algorithms(algorithm, keys.inbound))
    try:
        with xfrm.XfrmSocket() as sock:
            sock.add_state(probe)
    except xfrm.EspUnsupported:
        return 1
    except ApplianceError:
        return 2
    return 0


def _iptables_backend(cfg, system_backend, error):
    if error is not None:
        return Check(FAIL, "iptables", f"{error}; apt install iptables")
    chosen = system_backend if cfg.backend == "auto" else cfg.backend
    if chosen != system_backend:
        return Check(WARN, "iptables", f"firewall.backend is {chosen} but iptables uses "
                     f"{system_backend}: our rules will not show in 'iptables -S'")
    return Check(PASS, "iptables", f"backend {chosen} (iptables uses {system_backend})")


def failures(checks):
    return [c for c in checks if c.level == FAIL]

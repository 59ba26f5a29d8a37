"""Drift healing after an `apply` run by hand.

The re-apply timer only runs while sysrq-appliance.service is active (Wants=, PartOf=), and
the drop-ins for nftables/netfilter-persistent only reload an active unit. So an `apply` typed
at a shell, with the unit inactive, would leave nothing to heal drift. After such an apply we
start the unit if it is enabled (the package enables it), or say in one line that healing is
off and how to turn it on. Never when the unit itself runs us, nor for a config other than the
one the unit applies (tests, scratch configs).
"""

import os
import subprocess

from sysrq_appliance import config, seqno

UNIT = "sysrq-appliance.service"
TIMER = "sysrq-appliance-reapply.timer"
TURN_ON = "systemctl enable --now sysrq-appliance"


def systemctl(*args):
    """(exit status, first line of stdout) of `systemctl ARGS`; (None, '') if it cannot run."""
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                              timeout=180, check=False)   # the unit's TimeoutSec is 120
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    return done.returncode, (done.stdout.splitlines() or [""])[0].strip()


def after_apply(config_path, state_dir, environ=os.environ, run=systemctl,
                systemd_dir="/run/systemd/system"):
    """One line for the operator about drift healing, or None when there is nothing to say."""
    if "INVOCATION_ID" in environ:   # systemd runs us: the unit itself, or the timer through it
        return None
    if (os.path.abspath(config_path) != config.DEFAULT_PATH
            or os.path.abspath(state_dir) != seqno.DEFAULT_STATE_DIR):
        return None                  # not the config the unit applies
    if not os.path.isdir(systemd_dir):
        return ("drift healing is off: systemd is not running, so nothing re-applies this "
                "config; run 'sysrq-appliance apply' again after anything flushes the "
                "ruleset or the SAs")
    _, active = run("is-active", UNIT)
    if active == "active":
        _, timer = run("is-active", TIMER)
        if timer == "active":
            return None
        rc, _ = run("start", TIMER)
        return (f"drift healing on: started {TIMER}" if rc == 0 else
                f"drift healing is off: starting {TIMER} failed; see 'systemctl status {TIMER}'")
    _, enabled = run("is-enabled", UNIT)
    if enabled != "enabled":
        return (f"drift healing is off: {UNIT} is {enabled or 'unknown'}; "
                f"turn it on with '{TURN_ON}'")
    # Enabled but not active (e.g. the config arrived after the package was installed):
    # starting it runs `apply` once more under its hardening (nothing left to change) and
    # starts the timer with it.
    rc, _ = run("start", UNIT)
    if rc != 0:
        return (f"drift healing is off: starting {UNIT} failed; "
                f"see 'journalctl -u sysrq-appliance'")
    return f"drift healing on: started {UNIT} (re-applies every 5 minutes and after a firewall reload)"

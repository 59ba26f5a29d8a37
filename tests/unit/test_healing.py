"""healing.after_apply: after a manual apply the unit (and so the re-apply timer) is active,
or one line says healing is off and how to turn it on."""

import pytest

from sysrq_appliance import healing

CONFIG, STATE = "/etc/sysrq-appliance/appliance.yaml", "/var/lib/sysrq-appliance"


def fake_systemctl(answers):
    """A systemctl stand-in: ARGS -> (rc, line); records the calls."""
    calls = []

    def run(*args):
        calls.append(args)
        return answers.get(args, (1, ""))
    run.calls = calls
    return run


@pytest.fixture
def systemd(tmp_path):
    return str(tmp_path)   # stands for /run/systemd/system: systemd is PID 1


def after(run, systemd_dir, environ=None, config=CONFIG, state=STATE):
    return healing.after_apply(config, state, environ={} if environ is None else environ,
                               run=run, systemd_dir=systemd_dir)


def test_run_by_systemd_says_nothing(systemd):
    run = fake_systemctl({})
    assert after(run, systemd, environ={"INVOCATION_ID": "0123"}) is None
    assert run.calls == []


@pytest.mark.parametrize("config, state", [("/tmp/x/appliance.yaml", STATE),
                                           (CONFIG, "/tmp/state")])
def test_other_config_or_state_left_alone(systemd, config, state):
    run = fake_systemctl({})
    assert after(run, systemd, config=config, state=state) is None
    assert run.calls == []


def test_no_systemd(tmp_path):
    line = after(fake_systemctl({}), str(tmp_path / "absent"))
    assert line.startswith("drift healing is off: systemd is not running")


def test_active_unit_and_timer(systemd):
    run = fake_systemctl({("is-active", healing.UNIT): (0, "active"),
                          ("is-active", healing.TIMER): (0, "active")})
    assert after(run, systemd) is None
    assert ("start", healing.UNIT) not in run.calls


def test_active_unit_stopped_timer_is_started(systemd):
    run = fake_systemctl({("is-active", healing.UNIT): (0, "active"),
                          ("is-active", healing.TIMER): (3, "inactive"),
                          ("start", healing.TIMER): (0, "")})
    assert after(run, systemd) == f"drift healing on: started {healing.TIMER}"


def test_enabled_inactive_unit_is_started(systemd):
    run = fake_systemctl({("is-active", healing.UNIT): (3, "inactive"),
                          ("is-enabled", healing.UNIT): (0, "enabled"),
                          ("start", healing.UNIT): (0, "")})
    assert after(run, systemd).startswith(f"drift healing on: started {healing.UNIT}")
    assert run.calls[-1] == ("start", healing.UNIT)


def test_start_fails(systemd):
    run = fake_systemctl({("is-active", healing.UNIT): (3, "failed"),
                          ("is-enabled", healing.UNIT): (0, "enabled"),
                          ("start", healing.UNIT): (1, "")})
    assert "starting sysrq-appliance.service failed" in after(run, systemd)


@pytest.mark.parametrize("state", ["disabled", "masked", ""])
def test_disabled_or_masked_unit_is_not_started(systemd, state):
    run = fake_systemctl({("is-active", healing.UNIT): (3, "inactive"),
                          ("is-enabled", healing.UNIT): (1, state)})
    line = after(run, systemd)
    assert line == (f"drift healing is off: {healing.UNIT} is {state or 'unknown'}; "
                    "turn it on with 'systemctl enable --now sysrq-appliance'")
    assert not any(call[0] == "start" for call in run.calls)

"""Executors on stand-in files, the transaction's undo, and status/doctor rendered from
recorded observations: the engine around the diff, without root."""

import dataclasses
import json
import os

import pytest

from recorded import (PASSWORD, SENDER, TARGET, desired, in_sync, nothing, sender_config,
                      target_config)
from sysrq_appliance import diff, doctor, executors, firewall, plan, status, system
from sysrq_appliance.diff import ADD, UPDATE, Change, Secret
from sysrq_appliance.errors import ApplianceError
from sysrq_appliance.transaction import Step, StepFailed, execute


@pytest.fixture
def host(tmp_path):
    """Stand-ins for xt_SYSRQ's parameter directory and kernel.sysrq, as the netns tier
    uses them; the state directory private, as apply creates it."""
    params = tmp_path / "parameters"
    params.mkdir()
    (params / "password").write_bytes(b"")
    (tmp_path / "sysrq").write_text("1\n")
    return system.Paths(sysfs_dir=str(params), sysctl=str(tmp_path / "sysrq"),
                        state_dir=str(tmp_path / "state"))


def _run(changes, paths):
    found = executors.for_host(paths, None, None, TARGET, changes)
    return executors.steps(changes, found)


def test_password_and_sysctl_executors_write_and_remember_the_old_value(host):
    changes = [Change("password", ADD, Secret(PASSWORD), None),
               Change("kernel.sysrq", UPDATE, 176, 1)]
    assert execute(_run(changes, host), report=lambda line: None) == 2
    assert open(os.path.join(host.sysfs_dir, "password"), "rb").read() == PASSWORD
    assert system.read_sysrq(host) == 176 and system.saved_sysrq(host) == 1


def test_a_failure_undoes_the_earlier_changes_newest_first(host):
    """The third change fails (its floors file is damaged): kernel.sysrq goes back to 1
    and forgets the saved value, the password is replaced by a random one (an empty one
    cannot be written back)."""
    os.makedirs(host.state_dir, mode=0o700)
    floors = os.path.join(host.state_dir, "esp-seq.json")
    with open(floors, "w") as f:
        f.write("{")
    os.chmod(floors, 0o600)
    changes = [Change("password", ADD, Secret(PASSWORD), None),
               Change("kernel.sysrq", UPDATE, 176, 1),
               Change("esp-floors", UPDATE, {0x1234: 5}, None)]
    reported = []
    with pytest.raises(ApplianceError) as failure:
        execute(_run(changes, host), report=reported.append)
    assert "undid 2 earlier change(s), the kernel is as before" in str(failure.value)
    assert reported == ["  set the xt_SYSRQ password", "  set kernel.sysrq 1 -> 176"]
    assert system.read_sysrq(host) == 1 and system.saved_sysrq(host) is None
    now = open(os.path.join(host.sysfs_dir, "password"), "rb").read()
    assert now != PASSWORD and len(now) == 63


def test_an_undo_that_fails_is_named(host):
    changes = [Change("kernel.sysrq", UPDATE, 176, 1), Change("esp-floors", UPDATE, {1: 1}, None)]
    steps = _run(changes, host)
    os.makedirs(host.state_dir + "/esp-seq.json")     # the floors file is a directory now
    os.unlink(host.sysctl)                             # and kernel.sysrq vanished
    os.mkdir(host.sysctl)
    with pytest.raises(ApplianceError) as failure:
        execute([dataclasses.replace(steps[0], do=lambda: None), steps[1]],
                report=lambda line: None)
    assert "could not undo: set kernel.sysrq 1 -> 176" in str(failure.value)


def test_down_restores_kernel_sysrq_and_forgets_it(host):
    execute(_run([Change("kernel.sysrq", UPDATE, 176, 1)], host), report=lambda line: None)
    found = diff.diff(plan.NOTHING,
                      nothing(saved_sysrq=system.saved_sysrq(host)))
    assert [c.describe() for c in found] == ["restore kernel.sysrq 1"]
    for step in _run(found, host):
        step.do()
    assert system.read_sysrq(host) == 1 and system.saved_sysrq(host) is None


def test_steps_batch_runs_of_sas_and_policies_and_keep_every_line():
    want = desired(target_config())
    changes = diff.diff(want, nothing())
    steps = executors.steps(changes, executors.for_host(system.Paths(), None, None, TARGET,
                                                          changes))
    assert [s.lines or (s.description,) for s in steps] == [
        ("load kernel module xt_SYSRQ",), ("set the xt_SYSRQ password",),
        ("set kernel.sysrq 1 -> 176",), tuple(c.describe() for c in changes[3:5]),
        tuple(c.describe() for c in changes[5:7]),
        ("install IPv4 chain SYSRQ-APPLIANCE (1 peer rule(s))",)]
    assert [s.description for s in steps][3:5] == ["add 2 sa changes", "add 2 policy changes"]
    assert all(s.undo is not None for s in steps[:-1]) and steps[-1].undo is not None


def test_only_adds_and_deletes_of_one_kind_are_batched():
    old, new = desired(target_config()), desired(target_config(hash="sha1"), seed=9)
    updates = diff.diff(new, in_sync(old))           # rekeying: updates, one at a time
    found = executors.for_host(system.Paths(), None, None, TARGET, updates)
    assert [s.lines for s in executors.steps(updates, found)] == [(), ()]
    down = diff.diff(plan.NOTHING, in_sync(old))
    steps = executors.steps(down, executors.for_host(system.Paths(), None, None, None, down))
    assert [len(s.lines) for s in steps] == [0, 2, 2, 0]   # chain, policies, SAs, floors
    assert all(s.undo is None for s in steps[:1]) and steps[-1].undo is None


def test_a_batch_that_fails_is_named_by_its_change_and_counted_by_changes():
    calls = []
    batch = Step("add 2 policy changes", lambda: (_ for _ in ()).throw(
        StepFailed([("add policy in a -> b udp dport 9", "File exists")])),
        lambda: calls.append("undo batch"), ("add policy in a -> b udp dport 9",
                                             "add policy out b -> a icmp type 3 code 3"))
    first = Step("add 2 sa changes", lambda: calls.append("sas"),
                 lambda: calls.append("undo sas"), ("add SA a", "add SA b"))
    reported = []
    with pytest.raises(ApplianceError) as failure:
        execute([first, batch], report=reported.append)
    assert str(failure.value) == ("add policy in a -> b udp dport 9: File exists; undid 2 "
                                  "earlier change(s), the kernel is as before")
    assert reported == ["  add SA a", "  add SA b"] and calls == ["sas", "undo sas"]


def test_a_batch_that_could_not_take_itself_back_says_so():
    batch = Step("add 2 sa changes", lambda: (_ for _ in ()).throw(StepFailed(
        [("add SA b", "No such process")], undo_failures=["add SA a (Operation not permitted)"])),
        None, ("add SA a", "add SA b"))
    with pytest.raises(ApplianceError) as failure:
        execute([batch], report=lambda line: None)
    assert str(failure.value).endswith("undid 0 earlier change(s), could not undo: add SA a "
                                       "(Operation not permitted)")


def test_outbound_sas_of_one_run_are_numbered_from_one_reservation(host):
    want = desired(target_config())
    changes = diff.diff(want, nothing())
    xfrm_ex = executors.XfrmExecutor(None, TARGET, host.state_dir, changes)
    assert xfrm_ex.spis == [want.states[1].spi]          # outbound only
    assert xfrm_ex._numbered(want.states[0]) is want.states[0]


# ------------------------------------------------------------------ status, recorded

def _status(cfg, want, observed, host_facts=status.HostFacts((3, 27), False), backend="nft"):
    drift = [c.describe() for c in diff.diff(want, observed, with_sa=True)]
    return status.summarize(cfg, want, observed, drift, host_facts, backend)


def test_status_of_a_target_in_sync():
    cfg = target_config()
    want = desired(cfg)
    chain = in_sync(want).chains[4]
    chain = dataclasses.replace(chain, counters=((1, 28), (5, 300), (2, 80)))
    result = _status(cfg, want, in_sync(want, chains={4: chain, 6: None}))
    assert result["in_sync"] and result["drift"] == [] and result["password_set"]
    assert result["peers"][0]["probe"] == {"present": True, "packets": 1}
    assert result["peers"][0]["rule"] == {"present": True, "packets": 5}
    assert result["drop_rule"] == {"present": True, "packets": 2}
    assert result["armed"] == {"module": True, "password": True, "chain": True, "tunnel": True,
                               "all": True}
    assert result["module"] == {"loaded": True, "hash": "sha1", "xtables_addons": "3.27"}
    text = status.render_text(result)
    assert "xt_SYSRQ: loaded, hash sha1, xtables-addons 3.27" in text
    assert "kernel.sysrq: 176 (sync, remount, reboot); config wants 176" in text
    assert "rule: 5 request(s) reached xt_SYSRQ; probe: 1 answered" in text
    assert "armed: yes (module, password, chain and tunnel as configured)" in text
    assert text.endswith("in sync with the config")


def test_status_of_a_fresh_target_lists_the_drift_and_what_is_missing():
    cfg = target_config()
    want = desired(cfg)
    result = _status(cfg, want, nothing())
    assert not result["in_sync"] and result["drift"][0] == "load kernel module xt_SYSRQ"
    assert result["peers"][0]["sas"]["in"] == {"spi": "0x5a000101", "present": False}
    assert result["peers"][0]["policies"] == {"in": False, "out": False}
    text = status.render_text(result)
    assert f"peer admin1 ({SENDER}): SA in 0x5a000101 MISSING, out 0x5a000102 MISSING" in text
    assert "rule MISSING; probe rule MISSING" in text and "password set: no" in text
    assert result["armed"] == {"module": False, "password": False, "chain": False,
                               "tunnel": False, "all": False}
    assert "armed: NO: module, password, chain, tunnel not as configured" in text
    assert "drift from the config (run 'sysrq-appliance apply'):\n  load kernel module" in text


def test_status_of_a_sender_has_no_target_fields():
    cfg = sender_config()
    want = desired(cfg)
    result = _status(cfg, want, in_sync(want), host_facts=None)
    assert result["in_sync"] and "module" not in result and "rule" not in result["peers"][0]
    assert status.render_text(result).startswith(
        "role: sender (<config>)\nESP: all 2 SAs present")


def test_status_warns_of_a_legacy_chain_under_nft_and_shows_no_secret():
    cfg = target_config()
    want = desired(cfg)
    result = _status(cfg, want, in_sync(want, kernel_password=b"someone-else"),
                     status.HostFacts(None, True))
    assert not result["password_set"] and result["module"]["xtables_addons"] is None
    assert "WARNING: our chain exists in the legacy tables" in status.render_text(result)
    assert PASSWORD.decode() not in status.render_json(result)
    assert "someone-else" not in status.render_json(result)
    assert json.loads(status.render_json(result))["drift"] == ["set the xt_SYSRQ password"]


# ------------------------------------------------------------------ doctor, recorded

GOOD = doctor.HostFacts(sysrq_mask=176, xtables_addons=(3, 27), module_hash="sha1",
                        esp_probe=0, iptables="nft")


def _levels(checks):
    return {c.name: c.level for c in checks}


def test_doctor_all_pass_on_a_good_target():
    checks = doctor.judge(target_config(), GOOD, system.Paths())
    assert _levels(checks) == {"magic-sysrq": "PASS", "xt_SYSRQ": "PASS", "hash": "PASS",
                               "esp": "PASS", "iptables": "PASS"}
    assert not doctor.failures(checks)


@pytest.mark.parametrize("facts, name, line", [
    (dict(xtables_addons=(3, 23)), "xt_SYSRQ",
     "FAIL xt_SYSRQ: xtables-addons 3.23 < 3.26: its xt_SYSRQ corrupts the kernel stack"),
    (dict(xtables_addons=None), "xt_SYSRQ", "FAIL xt_SYSRQ: xtables-addons is not installed"),
    (dict(module_hash="sha256"), "hash",
     "FAIL hash: xt_SYSRQ runs with hash=sha256 but the config says sha1"),
    (dict(sysrq_mask=None), "magic-sysrq",
     "FAIL magic-sysrq: /proc/sys/kernel/sysrq is missing"),
    (dict(esp_probe=1), "esp", "FAIL esp: the kernel has no ESP support for rfc4106(gcm(aes))"),
    (dict(esp_probe=2), "esp", "FAIL esp: could not probe ESP"),
    (dict(iptables=None, iptables_error="iptables: not found"), "iptables",
     "FAIL iptables: iptables: not found; apt install iptables"),
])
def test_doctor_fails_with_the_fix(facts, name, line):
    checks = doctor.judge(target_config(), dataclasses.replace(GOOD, **facts), system.Paths())
    check = next(c for c in checks if c.name == name)
    assert str(check).startswith(line) and doctor.failures(checks) == [check]


def test_doctor_warns_without_failing():
    facts = dataclasses.replace(GOOD, sysrq_mask=1, esp_probe=None, module_hash=None)
    checks = doctor.judge(target_config(), facts, system.Paths())
    assert _levels(checks) == {"magic-sysrq": "WARN", "xt_SYSRQ": "PASS", "esp": "WARN",
                               "iptables": "PASS"}
    assert "kernel.sysrq is 1 (all); apply sets 176 (sync, remount, reboot)" in str(checks[0])


def test_doctor_on_a_sender_checks_only_esp_and_iptables():
    facts = doctor.HostFacts(None, None, None, 0, "legacy")
    cfg = dataclasses.replace(sender_config(), backend="nft")
    checks = doctor.judge(cfg, facts, system.Paths())
    assert [str(c) for c in checks] == [
        "PASS esp: the kernel accepts ESP tunnel SAs with rfc4106(gcm(aes))",
        "WARN iptables: firewall.backend is nft but iptables uses legacy: our rules will not "
        "show in 'iptables -S'"]


def test_status_counts_a_rule_only_when_it_is_the_one_the_config_wants():
    """Counters come from the chain's rules as read back: a rule to another target (an
    old --firewall-target) is not ours to count, and status says it is missing."""
    cfg = target_config()
    want = desired(cfg)                         # target ACCEPT (recorded.desired)
    other = dataclasses.replace(want.chain, target="SYSRQ")
    chain = dataclasses.replace(in_sync(want).chains[4], lines=tuple(firewall.render(other)),
                                counters=((1, 28), (7, 100), (3, 60)))
    result = _status(cfg, want, in_sync(want, chains={4: chain, 6: None}))
    assert result["peers"][0]["rule"] == {"present": False, "packets": 0}
    assert result["peers"][0]["probe"] == {"present": True, "packets": 1}
    assert result["armed"]["chain"] is False and result["armed"]["module"] is True
    assert result["drop_rule"] == {"present": True, "packets": 3}
    assert result["drift"] == ["install IPv4 chain SYSRQ-APPLIANCE (1 peer rule(s))"]


def test_an_interruption_during_a_batch_lands_after_it_and_the_batch_is_undone():
    """Ctrl-C while a batch is in the kernel: SIGINT is held until the batch is recorded as
    done, so the undo takes the whole batch back (nothing half-applied stays)."""
    import signal
    calls = []

    def batch():
        calls.append("batch")
        os.kill(os.getpid(), signal.SIGINT)   # pending while the batch runs

    steps = [Step("set kernel.sysrq 1 -> 176", lambda: calls.append("sysctl"),
                  lambda: calls.append("undo sysctl")),
             Step("add 2 policy changes", batch, lambda: calls.append("undo batch"),
                  ("add policy in a -> b udp dport 9", "add policy out b -> a icmp type 3 code 3")),
             Step("install IPv4 chain", lambda: calls.append("chain"), None)]
    # Python's own ^C handler, whatever this test inherited: a shell's background job starts
    # with SIGINT ignored, and then no KeyboardInterrupt would ever come.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(ApplianceError) as failure:
            execute(steps, report=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert calls == ["sysctl", "batch", "undo batch", "undo sysctl"]
    assert str(failure.value) == ("interrupted (KeyboardInterrupt) at add 2 policy changes; "
                                  "undid 3 earlier change(s), the kernel is as before")


def test_status_says_what_is_there_never_none_nor_programmed_when_missing():
    cfg = target_config()
    want = desired(cfg)
    fresh = _status(cfg, want, nothing(sysrq_mask=None), status.HostFacts(None, False))
    text = status.render_text(fresh)
    assert "ESP: no SA present (0 of 2)" in text and "programmed" not in text
    assert "kernel.sysrq: unknown (no /proc/sys/kernel/sysrq)" in text
    assert "xt_SYSRQ: not loaded, xtables-addons unknown" in text
    half = in_sync(want, states=in_sync(want).states[:1])
    assert _status(cfg, want, half)["esp"] == "1 of 2 SAs present"
    for result in (fresh, _status(cfg, want, half), _status(cfg, want, in_sync(want))):
        assert "None" not in status.render_text(result)

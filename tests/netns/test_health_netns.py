"""`check` for real between two throwaway namespaces: the probe, its answer, the metrics.

Without ESP (this host's kernel) the probe cannot leave: the sender has policies but no SA,
so every target is down with the reason, in the table, the JSON and the metrics (parsed
with prometheus_client's own parser). With ESP (the real-kernel tier) the probe goes through
the tunnel, the target's probe rule answers, `check` says up, the probe rule counted it,
the SYSRQ rule did not — and with the real xt_SYSRQ loaded, the kernel log gained no line.
"""

import json
import pathlib
import uuid

import pytest

from appliance_env import Installation, make_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("pair"))


def _pair(linked_netns, tmp_path, bundle, esp, real_module=False):
    sender_ns, target_ns = linked_netns
    target = Installation(target_ns, tmp_path, "target", bundle=bundle, real_module=real_module)
    sender = Installation(sender_ns, tmp_path, "sender", bundle=bundle)
    target.cli("apply", "--force", esp=esp, check=True)
    sender.cli("apply", esp=esp, check=True)
    return sender, target


def _metrics(path):
    from prometheus_client.parser import text_string_to_metric_families
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


LABELS = (("address", "10.10.25.7"), ("target", "web1"))


def test_without_an_sa_every_target_is_down_with_the_reason(linked_netns, tmp_path, bundle):
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=False)
    metrics = tmp_path / "metrics" / "sysrq-appliance.prom"
    metrics.parent.mkdir()
    table = sender.cli("check", "--metrics", str(metrics))
    assert table.returncode == 3, table.stderr
    assert table.stdout.splitlines() == [
        "TARGET  ADDRESS     STATE  ROUND TRIP / WHY NOT",
        "web1    10.10.25.7  DOWN   this host has no ESP SA of ours to it; run "
        "'sysrq-appliance apply' here"]
    samples = _metrics(metrics)
    assert samples["sysrq_appliance_target_up", LABELS] == 0
    assert ("sysrq_appliance_probe_round_trip_seconds", LABELS) not in samples
    assert ("sysrq_appliance_last_success_timestamp_seconds", LABELS) not in samples
    assert samples["sysrq_appliance_check_timestamp_seconds", ()] > 1.7e9
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in metrics.parent.iterdir()] == ["sysrq-appliance.prom"]

    report = json.loads(sender.cli("check", "--json", "web1").stdout)
    assert report["all_up"] is False and report["targets"][0]["up"] is False
    # The target side of the same question: armed, probe rule in place, nothing counted.
    status = json.loads(target.cli("status", "--json", check=True).stdout)
    assert status["armed"]["chain"] and status["armed"]["password"]
    assert status["peers"][0]["probe"] == {"present": True, "packets": 0}
    sender.cli("down", check=True)
    target.cli("down", check=True)


def test_check_refuses_bad_input_in_one_line(linked_netns, tmp_path, bundle):
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=False)
    cases = [
        (("check", "web9"), f"sysrq-appliance: TARGET: 'web9' is not a peer in {sender.config}; "
                            "known: web1"),
        (("check", "web1", "--all"), "sysrq-appliance: check: give TARGET... or --all, not both"),
        (("check", "--metrics", str(tmp_path / "m.txt")),
         f"sysrq-appliance: --metrics: {tmp_path}/m.txt does not end in .prom; node_exporter's "
         "textfile collector reads only *.prom files"),
        (("check", "--metrics", str(tmp_path / "none" / "m.prom")),
         f"sysrq-appliance: --metrics: {tmp_path}/none is not a directory; create it, or give "
         "node_exporter's textfile directory"),
    ]
    for argv, line in cases:
        done = sender.cli(*argv)
        assert (done.returncode, done.stderr.strip(), done.stdout) == (2, line, ""), argv
    on_target = target.cli("check")
    assert on_target.returncode == 2 and "on a target, 'status' says whether it is armed" in \
        on_target.stderr
    sender.cli("down", check=True)
    target.cli("down", check=True)


def test_the_probe_is_answered_through_real_esp_and_never_reaches_sysrq(
        linked_netns, tmp_path, bundle, esp):
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=True)
    try:
        metrics = tmp_path / "sysrq-appliance.prom"
        done = sender.cli("check", "--wait", "5", "--metrics", str(metrics), esp=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[1].startswith("web1    10.10.25.7  up     ")
        report = json.loads(target.cli("status", "--json", esp=True, check=True).stdout)
        assert report["peers"][0]["probe"] == {"present": True, "packets": 1}
        assert report["peers"][0]["rule"]["packets"] == 0      # never reached SYSRQ
        samples = _metrics(metrics)
        assert samples["sysrq_appliance_target_up", LABELS] == 1
        assert samples["sysrq_appliance_probe_round_trip_seconds", LABELS] > 0
        success = samples["sysrq_appliance_last_success_timestamp_seconds", LABELS]

        target.cli("down", esp=True, check=True)       # the path is gone: down, success kept
        done = sender.cli("check", "--wait", "1", "--metrics", str(metrics), esp=True)
        assert done.returncode == 3 and "DOWN   no answer within 1 s" in done.stdout
        samples = _metrics(metrics)
        assert samples["sysrq_appliance_target_up", LABELS] == 0
        assert samples["sysrq_appliance_last_success_timestamp_seconds", LABELS] == success
    finally:
        sender.cli("down", esp=True)
        target.cli("down", esp=True)


def test_a_probe_writes_no_kernel_log_line_with_the_real_xt_sysrq(
        linked_netns, tmp_path, bundle, xt_sysrq, module_state_kept):
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=True, real_module=True)
    try:
        marker = f"sysrq-appliance check test {uuid.uuid4().hex}"
        pathlib.Path("/dev/kmsg").write_text(marker + "\n")
        done = sender.cli("check", "--wait", "5", esp=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert kernel_log_after(marker) == ""
    finally:
        sender.cli("down", esp=True)
        target.cli("down", esp=True)


from test_esp_netns import kernel_log_after, module_state_kept  # noqa: E402,F401


def _bounding_set(unit, without=()):
    """setpriv's --bounding-set for the capabilities `unit` keeps (CapabilityBoundingSet=)."""
    import configparser
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read(pathlib.Path(__file__).resolve().parents[2] / "debian" / unit)
    caps = [c for c in parsed["Service"]["CapabilityBoundingSet"].split() if c not in without]
    return "--bounding-set=-all" + "".join(f",+{c.removeprefix('CAP_').lower()}" for c in caps)


def test_the_check_unit_writes_into_node_exporters_directory_owned_by_its_user(
        linked_netns, tmp_path, bundle):
    """/var/lib/prometheus/node-exporter belongs to prometheus, 0755: root with exactly the
    check unit's capabilities writes the metrics there; without CAP_DAC_OVERRIDE it could
    not (one line, exit 2)."""
    import os
    unit = "sysrq-appliance.sysrq-appliance-check.service"
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=False)
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    os.chown(directory, 65534, 65534)   # nobody, as prometheus would own it
    os.chmod(directory, 0o755)
    metrics = directory / "sysrq-appliance.prom"
    try:
        done = sender.cli("check", "--all", "--quiet", "--metrics", str(metrics),
                          prefix=("setpriv", _bounding_set(unit), "--"))
        assert (done.returncode, done.stdout, done.stderr) == (3, "", "")   # down: no SA here
        assert _metrics(metrics)["sysrq_appliance_target_up", LABELS] == 0
        assert os.stat(metrics).st_uid == 0 and [p.name for p in directory.iterdir()] == [
            "sysrq-appliance.prom"]
        metrics.unlink()
        refused = sender.cli("check", "--all", "--quiet", "--metrics", str(metrics),
                             prefix=("setpriv", _bounding_set(unit, {"CAP_DAC_OVERRIDE"}), "--"))
        assert refused.returncode == 2 and refused.stderr == (
            f"sysrq-appliance: --metrics: cannot write {metrics}: Permission denied ({directory} "
            f"is not writable by this user: see ls -ld {directory})\n")
        assert list(directory.iterdir()) == []
    finally:
        sender.cli("down", check=True)
        target.cli("down", check=True)


def test_the_targets_status_metrics_say_whether_each_part_is_armed(linked_netns, tmp_path,
                                                                   bundle):
    """What sysrq-appliance-reapply.service writes after each re-apply: armed after apply,
    not armed (and which parts) after down; parsed with prometheus_client's parser."""
    sender, target = _pair(linked_netns, tmp_path, bundle, esp=False)
    metrics = tmp_path / "sysrq-appliance-status.prom"
    parts = [("sysrq_appliance_target_armed_part", (("part", part),))
             for part in ("module", "password", "chain", "tunnel")]
    try:
        done = target.cli("status", "--quiet", "--metrics", str(metrics))
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
        armed = _metrics(metrics)
        assert armed["sysrq_appliance_target_armed", ()] == 1
        assert [armed[p] for p in parts] == [1, 1, 1, 1]
        assert armed["sysrq_appliance_in_sync", ()] == 1
        assert armed["sysrq_appliance_status_timestamp_seconds", ()] > 1.7e9
        assert oct(metrics.stat().st_mode & 0o777) == "0o644"

        sent = sender.cli("status", "--quiet", "--metrics", str(tmp_path / "sender.prom"))
        assert sent.returncode == 0, sent.stderr
        assert ("sysrq_appliance_target_armed", ()) not in _metrics(tmp_path / "sender.prom")
    finally:
        sender.cli("down", check=True)
        target.cli("down", check=True)
    done = target.cli("status", "--quiet", "--metrics", str(metrics))
    assert done.returncode == 4 and done.stdout == ""     # drift: exit 4, the metrics say it
    down = _metrics(metrics)
    assert down["sysrq_appliance_target_armed", ()] == 0
    assert down["sysrq_appliance_in_sync", ()] == 0
    assert down[parts[2]] == 0 and down[parts[3]] == 0    # our chain and policies are gone

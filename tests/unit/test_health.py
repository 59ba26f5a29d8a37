"""`check`'s results rendered: the table, JSON, and Prometheus' text format read back with
prometheus_client's own parser (pure: no socket; tests/netns probes for real)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

import shipped
from sysrq_appliance import config, health
from sysrq_appliance.errors import InputError

UP = health.Result("web1", "10.10.25.7", True, 0.0123)
DOWN = health.Result("db2", "2001:db8::9", False, None, "no answer within 2 s (...)")


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_table_says_up_with_the_round_trip_and_down_with_why():
    assert health.render_table([UP, DOWN]).splitlines() == [
        "TARGET  ADDRESS      STATE  ROUND TRIP / WHY NOT",
        "web1    10.10.25.7   up     12 ms",
        "db2     2001:db8::9  DOWN   no answer within 2 s (...)"]


def test_json_has_every_target_and_the_verdict():
    report = health.as_json([UP, DOWN], 1764380000.123456)
    assert report == {"checked_at": 1764380000.123, "all_up": False, "targets": [
        {"target": "web1", "address": "10.10.25.7", "up": True, "seconds": 0.0123, "reason": ""},
        {"target": "db2", "address": "2001:db8::9", "up": False, "seconds": None,
         "reason": "no answer within 2 s (...)"}]}


def test_metrics_parse_and_a_down_target_keeps_its_last_success():
    first = samples(health.metrics_text([UP, health.Result("db2", "2001:db8::9", True, 0.5)],
                                        1000.0).decode())
    web1, db2 = (("address", "10.10.25.7"), ("target", "web1")), \
        (("address", "2001:db8::9"), ("target", "db2"))
    assert first[("sysrq_appliance_target_up", web1)] == 1
    assert first[("sysrq_appliance_probe_round_trip_seconds", web1)] == 0.0123
    assert first[("sysrq_appliance_last_success_timestamp_seconds", db2)] == 1000.0
    earlier = health.metrics_text([UP, health.Result("db2", "2001:db8::9", True, 0.5)],
                                  1000.0).decode()
    later = samples(health.metrics_text([UP, DOWN], 1060.0, previous=earlier).decode())
    assert later[("sysrq_appliance_target_up", db2)] == 0
    assert ("sysrq_appliance_probe_round_trip_seconds", db2) not in later
    assert later[("sysrq_appliance_last_success_timestamp_seconds", db2)] == 1000.0
    assert later[("sysrq_appliance_last_success_timestamp_seconds", web1)] == 1060.0
    assert later[("sysrq_appliance_check_timestamp_seconds", ())] == 1060.0


@pytest.mark.parametrize("previous", [None, "", "garbage {{{\n", "# only a comment\n"])
def test_no_or_a_damaged_earlier_file_means_no_last_success_yet(previous):
    text = health.metrics_text([DOWN], 5.0, previous=previous).decode()
    assert not any(name == "sysrq_appliance_last_success_timestamp_seconds"
                   for name, _ in samples(text))


def _sender():
    return config.parse({"role": "sender", "local": "10.10.25.1", "peers": [
        {"name": n, "address": a, "spi_in": 0x1000 + i, "spi_out": 0x2000 + i, "key_file": "/k",
         "password_file": "/p"} for i, (n, a) in enumerate([("web1", "10.10.25.7"),
                                                             ("web2", "10.10.25.8")])]})


def test_targets_are_chosen_by_name_or_address_once_each_or_all():
    cfg = _sender()
    assert [p.name for p in health.select_peers(cfg, [], False)] == ["web1", "web2"]
    assert [p.name for p in health.select_peers(cfg, [], True)] == ["web1", "web2"]
    assert [p.name for p in health.select_peers(cfg, ["10.10.25.8", "web2", "web1"], False)] \
        == ["web2", "web1"]
    with pytest.raises(InputError, match="give TARGET... or --all, not both"):
        health.select_peers(cfg, ["web1"], True)


def _status_samples(result):
    from prometheus_client.parser import text_string_to_metric_families
    text = health.status_metrics_text(result, 1764400000.0).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_targets_status_metrics_name_the_part_that_is_not_armed():
    armed = {"module": True, "password": False, "chain": True, "tunnel": True, "all": False}
    samples = _status_samples({"role": "target", "in_sync": False, "armed": armed})
    assert samples == {
        ("sysrq_appliance_in_sync", ()): 0, ("sysrq_appliance_target_armed", ()): 0,
        ("sysrq_appliance_status_timestamp_seconds", ()): 1764400000.0,
        **{("sysrq_appliance_target_armed_part", (("part", part),)): value
           for part, value in (("module", 1), ("password", 0), ("chain", 1), ("tunnel", 1))}}


def test_a_senders_status_metrics_say_only_whether_it_is_in_sync():
    samples = _status_samples({"role": "sender", "in_sync": True})
    assert samples == {("sysrq_appliance_in_sync", ()): 1,
                       ("sysrq_appliance_status_timestamp_seconds", ()): 1764400000.0}


def test_the_reapply_unit_writes_the_status_metrics_with_options_status_has():
    import shlex
    from sysrq_appliance import cli
    unit = shipped.unit("sysrq-appliance-reapply.service")
    if shipped.IN_SOURCE_TREE:   # the copy for installs from source is the same
        assert unit.read_text() == (shipped.ROOT / "etc" / "systemd" /
                                    "sysrq-appliance-reapply.service").read_text()
    (line,) = [l for l in unit.read_text().splitlines() if l.startswith("ExecStopPost=")]
    script = shlex.split(line.split("=", 1)[1].lstrip("-"))[-1]
    command = shlex.split(script.split("exec /usr/bin/sysrq-appliance ", 1)[1])
    args = cli.build_parser().parse_args(command)
    assert args.command == "status" and args.quiet
    assert args.metrics == "/var/lib/prometheus/node-exporter/sysrq-appliance-status.prom"
    assert script.startswith("test -d /var/lib/prometheus/node-exporter || exit 0;")

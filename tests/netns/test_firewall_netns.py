"""Both firewall backends against real netfilter, each test in throwaway network namespaces.

The backend code runs in a child interpreter inside the namespace (`ip netns exec`), so
nothing here can reach the host's own firewall. Every result is read back with the
iptables save tools, never with the code under test alone. The same file runs on the
Debian 12 host and, for Debian 13's iptables 1.8.11, in a trixie root:

    tests/chroot/run-in-root.sh trixie -- /usr/bin/python3 -m pytest -q tests/netns/test_firewall_netns.py
"""

import dataclasses
import json
import pathlib
import sys
import textwrap
import time

import pytest

from sysrq_appliance import firewall as fw

APPLIANCE = str(pathlib.Path(__file__).resolve().parents[2] / "appliance")
SAVE_TOOLS = ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save")
TOOL = {("nft", 4): "iptables-nft", ("nft", 6): "ip6tables-nft",
        ("legacy", 4): "iptables-legacy", ("legacy", 6): "ip6tables-legacy"}

SENDER, TARGET = "10.10.25.1", "10.10.25.7"
SPEC4 = fw.ChainSpec(4, (fw.PeerRule(SENDER, TARGET, 9, mac="aa:bb:cc:dd:ee:0f"),
                         fw.PeerRule("10.10.25.2", TARGET, 9)), 9, target="ACCEPT")
SPEC4_OTHER = fw.ChainSpec(4, (fw.PeerRule("10.10.25.3", TARGET, 7),), 7, drop_other=False,
                           target="DROP")
SPEC6 = fw.ChainSpec(6, (fw.PeerRule("2001:db8::1", "2001:db8::7", 9),), 9, target="ACCEPT")

# Someone else's firewall: a chain, rules before and after ours, a policy match of their
# own, a chain policy and a nat rule. None of it may change.
FOREIGN = {
    4: ["-N FOREIGN", "-A FOREIGN -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -i lo -j ACCEPT", "-A INPUT -p tcp -j FOREIGN",
        "-A INPUT -s 10.10.25.1/32 -d 10.10.25.7/32 -p udp -m udp --dport 500 -m policy --dir in"
        " --pol ipsec --proto esp --mode tunnel --tunnel-src 10.10.25.1 --tunnel-dst 10.10.25.7"
        " -j ACCEPT",
        "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT", "-P FORWARD DROP",
        "-t nat -A POSTROUTING -o lo -j RETURN"],
    6: ["-N FOREIGN6", "-A FOREIGN6 -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -p tcp -j FOREIGN6",
        "-A INPUT -s 2001:db8::1/128 -p udp -m udp --dport 500 -m policy --dir in --pol ipsec"
        " --proto esp --mode tunnel --tunnel-src 2001:db8::1 --tunnel-dst 2001:db8::7 -j ACCEPT",
        "-P FORWARD DROP"],
}

# Runs in the namespace: one backend call, its result as JSON on stdout.
CALL = textwrap.dedent("""
    import dataclasses, json, sys
    sys.path.insert(0, sys.argv[1])
    from sysrq_appliance import firewall as fw
    request = json.loads(sys.argv[2])
    backend = fw.get_backend(request["backend"])
    try:
        if request["op"] == "install":
            spec = request["spec"]
            spec["rules"] = tuple(fw.PeerRule(**rule) for rule in spec["rules"])
            result = backend.install(fw.ChainSpec(**spec))
        elif request["op"] == "remove":
            result = backend.remove(request["family"])
        else:
            observed = backend.observe(request["family"])
            result = observed and dataclasses.asdict(observed)
    except fw.FirewallError as exc:
        result = {"error": str(exc)}
    print(json.dumps(result))
""")


def call(ns, backend, op, spec=None, family=None):
    request = {"backend": backend, "op": op, "family": family,
               "spec": spec and dataclasses.asdict(spec)}
    out = ns.run(sys.executable, "-c", CALL, APPLIANCE, json.dumps(request)).stdout
    return json.loads(out)


def install(ns, backend, spec):
    assert call(ns, backend, "install", spec=spec) is None


def snapshot(ns):
    """Every table of both backends and both families, with counters, without comments."""
    return {tool: [line for line in ns.run(tool, "-c").stdout.splitlines()
                   if not line.startswith("#")] for tool in SAVE_TOOLS}


def ours(line):
    return (line.startswith(":SYSRQ-APPLIANCE ") or "] -A SYSRQ-APPLIANCE " in line
            or line.endswith("] -A INPUT -j SYSRQ-APPLIANCE"))


def without_ours(state):
    return {tool: [line for line in lines if not ours(line)] for tool, lines in state.items()}


def read_back(ns, backend, family):
    """Our chain's rules as the save tool prints them (without counters)."""
    lines = ns.run(TOOL[backend, family] + "-save").stdout.splitlines()
    return [line for line in lines if line.startswith("-A SYSRQ-APPLIANCE ")]


def input_rules(ns, backend, family):
    return [line for line in ns.run(TOOL[backend, family], "-S", "INPUT").stdout.splitlines()
            if line.startswith("-A ")]


def add_foreign(ns, backend, family):
    for rule in FOREIGN[family]:
        ns.run(TOOL[backend, family], *rule.split())


@pytest.fixture(params=["nft", "legacy"])
def backend(request):
    return request.param


@pytest.fixture
def target_ns(netns, backend):
    """A namespace holding someone else's rules for both families, in `backend`'s tables."""
    add_foreign(netns, backend, 4)
    add_foreign(netns, backend, 6)
    return netns


# ---------------------------------------------------------------------------- chain management

def test_install_reads_back_exactly_and_touches_nothing_else(target_ns, backend):
    before = snapshot(target_ns)
    install(target_ns, backend, SPEC4)
    assert read_back(target_ns, backend, 4) == fw.render(SPEC4)
    assert input_rules(target_ns, backend, 4)[0] == "-A INPUT -j SYSRQ-APPLIANCE"
    assert without_ours(snapshot(target_ns)) == before


def test_v6_twin(target_ns, backend):
    before = snapshot(target_ns)
    install(target_ns, backend, SPEC4)
    install(target_ns, backend, SPEC6)
    assert read_back(target_ns, backend, 6) == fw.render(SPEC6)
    assert read_back(target_ns, backend, 4) == fw.render(SPEC4)
    assert input_rules(target_ns, backend, 6)[0] == "-A INPUT -j SYSRQ-APPLIANCE"
    call(target_ns, backend, "remove", family=4)
    assert call(target_ns, backend, "observe", family=4) is None
    assert read_back(target_ns, backend, 6) == fw.render(SPEC6)
    call(target_ns, backend, "remove", family=6)
    assert snapshot(target_ns) == before


def test_install_twice_changes_nothing_and_keeps_counters(target_ns, backend):
    install(target_ns, backend, SPEC4)
    send_udp(target_ns, "127.0.0.1", "127.0.0.1", 9, count=3)  # loopback, inside the namespace
    first = snapshot(target_ns)
    observed = call(target_ns, backend, "observe", family=4)
    assert observed["counters"][-1][0] == 3  # the DROP rule saw them
    install(target_ns, backend, SPEC4)
    assert snapshot(target_ns) == first


def test_new_spec_replaces_content(target_ns, backend):
    before = snapshot(target_ns)
    install(target_ns, backend, SPEC4)
    install(target_ns, backend, SPEC4_OTHER)
    assert read_back(target_ns, backend, 4) == fw.render(SPEC4_OTHER)
    assert input_rules(target_ns, backend, 4).count("-A INPUT -j SYSRQ-APPLIANCE") == 1
    assert without_ours(snapshot(target_ns)) == before


def test_remove_leaves_the_state_before(target_ns, backend):
    before = snapshot(target_ns)
    install(target_ns, backend, SPEC4)
    install(target_ns, backend, SPEC6)
    for family in (4, 6):
        assert call(target_ns, backend, "remove", family=family) is None
        assert call(target_ns, backend, "remove", family=family) is None  # absent: no error
    assert snapshot(target_ns) == before


def test_jump_moved_down_or_doubled_is_repaired(target_ns, backend):
    install(target_ns, backend, SPEC4)
    iptables = TOOL[backend, 4]
    target_ns.run(iptables, "-I", "INPUT", "1", "-p", "icmp", "-j", "ACCEPT")  # someone's, on top
    target_ns.run(iptables, "-A", "INPUT", "-j", "SYSRQ-APPLIANCE")            # a second jump
    observed = call(target_ns, backend, "observe", family=4)
    assert (observed["jump_present"], observed["jump_count"]) == (False, 2)
    before = without_ours(snapshot(target_ns))
    install(target_ns, backend, SPEC4)
    rules = input_rules(target_ns, backend, 4)
    assert rules[0] == "-A INPUT -j SYSRQ-APPLIANCE"
    assert rules.count("-A INPUT -j SYSRQ-APPLIANCE") == 1
    assert without_ours(snapshot(target_ns)) == before


def test_failed_install_changes_nothing(target_ns, backend):
    install(target_ns, backend, SPEC4)
    before = snapshot(target_ns)
    bad = dataclasses.replace(SPEC4_OTHER, target="SRA-NO-SUCH-TARGET")
    assert "error" in call(target_ns, backend, "install", spec=bad)
    assert snapshot(target_ns) == before


def test_foreign_jump_into_our_chain_blocks_removal_atomically(target_ns, backend):
    install(target_ns, backend, SPEC4)
    target_ns.run(TOOL[backend, 4], "-A", "FOREIGN", "-j", "SYSRQ-APPLIANCE")  # not ours
    before = snapshot(target_ns)
    assert "error" in call(target_ns, backend, "remove", family=4)
    assert snapshot(target_ns) == before


# ---------------------------------------------------------------------------- packets

SEND = textwrap.dedent("""
    import socket, sys
    src, dst, port, count, empty = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        for i in range(count):
            s.sendto(b"" if empty == "probe" else b"s,%d,salt,0000" % i, (dst, port))
""")


def send_udp(ns, src, dst, port, count, probe=False):
    ns.run(sys.executable, "-c", SEND, src, dst, str(port), str(count),
           "probe" if probe else "request")


def test_plaintext_request_never_reaches_the_peer_rule(linked_netns, backend):
    """Sender and target joined by a veth pair only (no default route, no other link)."""
    sender, target = linked_netns
    assert (sender.address, target.address) == (SENDER, TARGET)
    for ns in linked_netns:
        assert ns.run("ip", "route", "show", "default").stdout == ""
    mac = json.loads(sender.run("ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    iptables = TOOL[backend, 4]
    target.run(iptables, "-N", "SRA-COUNT")  # stands in for -j SYSRQ, counting what reaches it
    target.run(iptables, "-A", "SRA-COUNT", "-j", "ACCEPT")
    # Everything of the peer rule matches these packets except the IPsec policy.
    spec = fw.ChainSpec(4, (fw.PeerRule(SENDER, TARGET, 9, mac=mac),), 9, target="SRA-COUNT")
    install(target, backend, spec)

    send_udp(sender, SENDER, TARGET, 9, count=5)
    send_udp(sender, SENDER, TARGET, 9, count=3, probe=True)   # probes, but not tunnelled
    deadline = time.monotonic() + 5
    while (counters := call(target, backend, "observe", family=4)["counters"])[-1][0] < 8:
        assert time.monotonic() < deadline, f"packets did not arrive: {counters}"
        time.sleep(0.1)
    # probe rule, peer rule, drop rule: only the drop rule saw them
    assert counters == [[0, 0], [0, 0], [8, counters[-1][1]]]
    assert "[0:0] -A SRA-COUNT -j ACCEPT" in target.run(iptables + "-save", "-c").stdout


# ---------------------------------------------------------------------------- python-iptables fixes

def run_iptc(ns, code):
    """Run `code` in a fresh interpreter in `ns`, with iptc and iptc_compat imported."""
    prelude = f"import sys; sys.path.insert(0, {APPLIANCE!r})\nimport iptc\n" \
              "from sysrq_appliance.firewall import iptc_compat\n"
    return ns.run(sys.executable, "-c", prelude + textwrap.dedent(code), check=False)


def python_iptables(ns):
    """(affected by the known defects, libxtables >= 1.8.11) for the python-iptables in `ns`."""
    affected, new_stride = run_iptc(ns, """
        print(iptc_compat.affected(iptc),
              iptc_compat.libxtables_version() >= iptc_compat.STRIDE_CHANGED_IN)
    """).stdout.split()
    return affected == "True", new_stride == "True"


POLICY_RULE = """
    if iptc_compat.libxtables_version() >= iptc_compat.STRIDE_CHANGED_IN:
        iptc_compat.walk_options_with_1_8_11_stride(iptc)  # the other fix, so this one is seen alone
    table = iptc.Table(iptc.Table.FILTER)
    table.create_chain("SRA-290")
    rule = iptc.Rule()
    policy = {create}(rule, "policy")
    policy.dir, policy.pol, policy.proto, policy.mode = "in", "ipsec", "esp", "tunnel"
    policy.tunnel_src, policy.tunnel_dst = "10.10.25.1", "10.10.25.7"
    rule.target = iptc.Target(rule, "ACCEPT")
    iptc.Chain(table, "SRA-290").append_rule(rule)
"""


@pytest.mark.parametrize("create, written", [
    ("iptc.Rule.create_match", "-A SRA-290 -m policy --dir in --pol ipsec -j ACCEPT"),
    ("iptc_compat.create_match", "-A SRA-290 -m policy --dir in --pol ipsec --proto esp"
                                 " --mode tunnel --tunnel-dst 10.10.25.7 --tunnel-src 10.10.25.1"
                                 " -j ACCEPT"),
])
def test_issue_290_policy_options_vanish_without_the_workaround(netns, create, written):
    if not python_iptables(netns)[0]:
        pytest.skip("python-iptables newer than iptc_compat.CHECKED_UP_TO: check issue 290 anew")
    assert run_iptc(netns, POLICY_RULE.format(create=create)).returncode == 0
    assert written in netns.run("iptables-legacy-save").stdout.splitlines()


def test_issue_353_stride_fix_applied_exactly_with_libxtables_1_8_11(netns):
    lookup = run_iptc(netns, """
        original = iptc.xtables.xtables._option_lookup
        iptc_compat.load()
        print(iptc.xtables.xtables._option_lookup is not original)
    """).stdout.strip()
    affected, new_stride = python_iptables(netns)
    assert lookup == str(affected and new_stride)


def test_issue_353_no_such_parameter_without_the_fix(netns):
    affected, new_stride = python_iptables(netns)
    if not (affected and new_stride):
        pytest.skip("needs libxtables >= 1.8.11 (Debian 13): run in the trixie root")
    raw = run_iptc(netns, 'iptc.Rule().create_match("udp").dport = "9"')
    assert "no such parameter b'dport'" in raw.stderr
    fixed = run_iptc(netns, """
        iptc_compat.load()
        rule = iptc.Rule()
        for name, option, value in [("udp", "dport", "9"), ("hashlimit", "hashlimit-burst", "20"),
                                    ("policy", "tunnel-dst", "10.10.25.7"), ("mac", "mac-source",
                                    "aa:bb:cc:dd:ee:0f")]:
            iptc_compat.create_match(rule, name).set_parameter(option, value)
    """)
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.parametrize("load, tables", [
    ("pass", "filter mangle nat raw security"),
    ("iptc_compat.load()", "filter"),
])
def test_creating_a_target_opens_only_existing_tables(netns, load, tables):
    if not python_iptables(netns)[0]:
        pytest.skip("python-iptables newer than iptc_compat.CHECKED_UP_TO: check anew")
    done = run_iptc(netns, f"""
        {load}
        table = iptc.Table(iptc.Table.FILTER)
        rule = iptc.Rule()
        rule.target = iptc.Target(rule, "ACCEPT")
        print(" ".join(sorted(open("/proc/net/ip_tables_names").read().split())))
    """)
    assert done.stdout.strip() == tables, done.stderr

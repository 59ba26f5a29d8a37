"""The hostile-input corpus's kernel verbs, inside a throwaway namespace: besides one line
and the exit code, the namespace's xfrm state, policies and both iptables backends must be
exactly as before a refused command."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hostile"))
import corpus  # noqa: E402

CASES = [c for c in corpus.load_cases() if c.get("kernel")]
HELPER_CASES = [c for c in corpus.load_cases() if c.get("via") == "helper"]


def kernel_state(ns):
    return {tool: ns.run(*tool.split(), check=False).stdout for tool in (
        "ip xfrm state", "ip xfrm policy", "iptables-nft-save", "ip6tables-nft-save",
        "iptables-legacy-save", "ip6tables-legacy-save")}


def _comparable(state):
    return {k: "\n".join(l for l in v.splitlines() if not l.startswith("#"))
            for k, v in state.items()}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_kernel_verb(case, netns, tmp_path):
    netns.run("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    before = _comparable(kernel_state(netns))
    outcome = corpus.execute(case, tmp_path, prefix=("ip", "netns", "exec", netns.name),
                             extra=("--firewall-target", "ACCEPT", "--without-esp"))
    corpus.check(case, *outcome)
    assert _comparable(kernel_state(netns)) == before


@pytest.mark.parametrize("case", HELPER_CASES, ids=[c["id"] for c in HELPER_CASES])
def test_hostile_request_through_the_helper(case, netns, tmp_path):
    """The helper as root, in a namespace of its own; the client as nobody."""
    before = _comparable(kernel_state(netns))
    outcome = corpus.execute_via_helper(case, tmp_path,
                                        prefix=("ip", "netns", "exec", netns.name))
    corpus.check(case, *outcome)
    assert _comparable(kernel_state(netns)) == before

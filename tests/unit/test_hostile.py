"""The hostile-input corpus (tests/hostile/cases.yaml) against the CLI, without a kernel.

Kernel verbs (apply, plan, status, down) run in the netns tier: test_hostile_netns.py."""

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hostile"))
import corpus  # noqa: E402

ALL = corpus.load_cases()
CASES = [c for c in ALL if not c.get("kernel")]


def test_corpus_is_large_and_every_refusal_has_its_line():
    assert len(ALL) >= 150
    for case in ALL:
        assert case["exit"] in (0, 1, 2, 3), case["id"]
        assert case["exit"] == 0 or case.get("error"), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input(case, tmp_path):
    if case.get("root") and os.geteuid() != 0:
        pytest.skip("giving a file to another user (chown) needs root")
    if case.get("via") == "helper":
        if os.geteuid() == 0:   # a root helper sends from a namespace of its own
            pytest.skip("as root, helper cases run in the netns tier (test_hostile_netns.py)")
        corpus.check(case, *corpus.execute_via_helper(case, tmp_path))
        return
    corpus.check(case, *corpus.execute(case, tmp_path))

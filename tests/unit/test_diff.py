"""The diff: desired + recorded observation -> ordered Change records. No root, no kernel."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorded import (NO_TRAFFIC, PASSWORD, SENDER, TARGET, chain_as_saved, desired, in_sync,
                      keys_for, nothing, peer, sender_config, target_config)
from sysrq_appliance import diff, firewall, observe, plan, xfrm
from sysrq_appliance.diff import ADD, DELETE, UPDATE, Change, Secret


def ops(changes):
    return [(c.resource, c.op) for c in changes]


def lines(changes):
    return [c.describe() for c in changes]


# ------------------------------------------------------------------ fresh install

def test_fresh_target_arms_the_trigger_last():
    want = desired(target_config())
    changes = diff.diff(want, nothing())
    assert ops(changes) == [("module", ADD), ("password", ADD), ("kernel.sysrq", UPDATE),
                            ("sa", ADD), ("sa", ADD), ("policy", ADD), ("policy", ADD),
                            ("chain", ADD)]


def test_fresh_target_lines_are_the_ones_apply_always_printed():
    spi_in, spi_out = 0x5A000101, 0x5A000102
    assert lines(diff.diff(desired(target_config()), nothing())) == [
        "load kernel module xt_SYSRQ",
        "set the xt_SYSRQ password",
        "set kernel.sysrq 1 -> 176",
        f"add SA {SENDER} -> {TARGET} spi {spi_in:#010x}",
        f"add SA {TARGET} -> {SENDER} spi {spi_out:#010x}",
        f"add policy in {SENDER} -> {TARGET} udp dport 9",
        f"add policy out {TARGET} -> {SENDER} icmp type 3 code 3",
        "install IPv4 chain SYSRQ-APPLIANCE (1 peer rule(s))",
    ]


def test_fresh_sender_has_no_host_settings_and_no_chain():
    changes = diff.diff(desired(sender_config()), nothing(sysrq_mask=16))
    assert ops(changes) == [("sa", ADD), ("sa", ADD), ("policy", ADD), ("policy", ADD)]
    assert lines(changes)[2:] == [f"add policy in {TARGET} -> {SENDER} icmp type 3 code 3",
                                  f"add policy out {SENDER} -> {TARGET} udp dport 9"]


def test_fresh_install_without_esp_leaves_sas_out():
    changes = diff.diff(desired(target_config()), nothing(), with_sa=False)
    assert ("sa", ADD) not in ops(changes) and len(changes) == 6


def test_module_loaded_by_someone_else_is_not_loaded_again():
    want = desired(target_config())
    changes = diff.diff(want, nothing(module_loaded=True, kernel_password=b"", module_hash="sha1"))
    assert ops(changes)[:2] == [("password", UPDATE), ("kernel.sysrq", UPDATE)]
    assert changes[0].old == Secret(b"")


def test_missing_sysctl_is_not_a_change():
    """No /proc/sys/kernel/sysrq (doctor FAILs on it): nothing to set, nothing to save."""
    changes = diff.diff(desired(target_config()), nothing(sysrq_mask=None))
    assert "kernel.sysrq" not in [c.resource for c in changes]


# ------------------------------------------------------------------ no-op

@pytest.mark.parametrize("make", [target_config, sender_config])
def test_in_sync_is_no_change(make):
    want = desired(make())
    assert diff.diff(want, in_sync(want)) == []


def test_in_sync_ignores_counters_and_sequence_numbers():
    want = desired(target_config())
    busy = tuple((dataclasses.replace(s, oseq=12345), xfrm.StateCounters(9, 1, 0, 0, 0))
                 for s in want.states)
    assert diff.diff(want, in_sync(want, states=busy)) == []


def test_in_sync_without_esp_ignores_missing_sas():
    want = desired(target_config())
    assert diff.diff(want, in_sync(want, states=()), with_sa=False) == []


# ------------------------------------------------------------------ keys and SPIs

def test_key_change_updates_both_sas_in_place():
    cfg = target_config()
    old, new = desired(cfg, seed=1), desired(cfg, seed=7)
    changes = diff.diff(new, in_sync(old))
    assert ops(changes) == [("sa", UPDATE), ("sa", UPDATE)]
    assert [c.want for c in changes] == list(new.states)
    assert [c.old for c in changes] == list(old.states)
    assert lines(changes)[0] == f"update SA {SENDER} -> {TARGET} spi 0x5a000101"


def test_key_change_is_a_delete_and_add_in_ip_xfrm_terms():
    cfg = target_config()
    change = diff.diff(desired(cfg, seed=7), in_sync(desired(cfg)))[0]
    assert change.commands() == (
        f"ip xfrm state delete src {SENDER} dst {TARGET} proto esp spi 0x5a000101",
        f"ip xfrm state add src {SENDER} dst {TARGET} proto esp spi 0x5a000101 reqid "
        f"{change.want.reqid:#x} mode tunnel replay-window 32 aead 'rfc4106(gcm(aes))' <key> 128")


def test_one_direction_rekeyed_is_one_update():
    want = desired(target_config())
    stale_out = dataclasses.replace(want.states[1], aead=xfrm.Algorithm(
        "rfc4106(gcm(aes))", b"\x55" * 36, 128))
    observed = in_sync(want, states=((want.states[0], NO_TRAFFIC), (stale_out, NO_TRAFFIC)))
    changes = diff.diff(want, observed)
    assert ops(changes) == [("sa", UPDATE)] and changes[0].old == stale_out


def test_spi_change_adds_the_new_sa_before_deleting_the_old():
    old = desired(target_config(peer("admin1", SENDER, 0x5A000101, 0x5A000102)))
    new = desired(target_config(peer("admin1", SENDER, 0x5A000201, 0x5A000102)))
    changes = diff.diff(new, in_sync(old))
    assert ops(changes) == [("sa", ADD), ("sa", DELETE)]
    assert changes[0].want.spi == 0x5A000201 and changes[1].old.spi == 0x5A000101
    assert changes[1].commands() == (
        f"ip xfrm state delete src {SENDER} dst {TARGET} proto esp spi 0x5a000101",)


def test_a_peer_that_moves_keeps_its_spis_but_not_its_outbound_sa():
    """The kernel keys SAs by (dst, spi): inbound (dst: us) is the same SA with another
    source, outbound (dst: the peer) is a new one, and the old one goes."""
    old = desired(target_config(peer("admin1", SENDER, 0x5A000101, 0x5A000102)))
    new = desired(target_config(peer("admin1", "10.10.25.2", 0x5A000101, 0x5A000102)))
    changes = diff.diff(new, in_sync(old))
    sas = [c for c in changes if c.resource == "sa"]
    assert [(c.op, (c.want or c.old).dst) for c in sas] == [
        (UPDATE, TARGET), (ADD, "10.10.25.2"), (DELETE, SENDER)]
    assert ops(changes)[-1] == ("chain", UPDATE)


# ------------------------------------------------------------------ peers come and go

TWO = (peer("admin1", SENDER, 0x5A000101, 0x5A000102),
       peer("admin2", "10.10.25.2", 0x5A000201, 0x5A000202))


def test_peer_removed_deletes_its_objects_and_rewrites_the_chain():
    old, new = desired(target_config(*TWO)), desired(target_config(TWO[0]))
    changes = diff.diff(new, in_sync(old))
    assert ops(changes) == [("policy", DELETE), ("policy", DELETE), ("sa", DELETE),
                            ("sa", DELETE), ("chain", UPDATE)]
    assert {c.old.dst for c in changes if c.resource == "sa"} == {TARGET, "10.10.25.2"}
    assert lines(changes)[-1] == "install IPv4 chain SYSRQ-APPLIANCE (1 peer rule(s))"


def test_peer_added_touches_nothing_of_the_first():
    old, new = desired(target_config(TWO[0])), desired(target_config(*TWO))
    changes = diff.diff(new, in_sync(old))
    assert ops(changes) == [("sa", ADD), ("sa", ADD), ("policy", ADD), ("policy", ADD),
                            ("chain", UPDATE)]
    assert all("10.10.25.2" in c.describe() for c in changes if c.resource != "chain")


def test_last_peer_of_a_sender_removed():
    cfg = sender_config()
    want = dataclasses.replace(desired(cfg), states=(), policies=())
    changes = diff.diff(want, in_sync(desired(cfg)))
    assert ops(changes) == [("policy", DELETE), ("policy", DELETE), ("sa", DELETE), ("sa", DELETE)]


# ------------------------------------------------------------------ foreign objects

def _foreign_state():
    return xfrm.State(SENDER, TARGET, 0x77, 77, aead=xfrm.Algorithm("rfc4106(gcm(aes))",
                                                                     b"\x09" * 36, 128))


def _foreign_policy(template=True):
    return xfrm.Policy(xfrm.Selector(SENDER, TARGET, 6, None, 22), "in",
                       xfrm.Template(SENDER, TARGET, 77) if template else None)


def test_observation_keeps_only_our_reqids():
    want = desired(target_config())
    states = [(_foreign_state(), NO_TRAFFIC)] + [(s, NO_TRAFFIC) for s in want.states]
    policies = [_foreign_policy(), _foreign_policy(template=False), *want.policies]
    ours_states, ours_policies = observe.ours(states, policies)
    assert [s for s, _ in ours_states] == list(want.states)
    assert ours_policies == want.policies


def test_foreign_objects_filtered_out_are_never_deleted():
    want = desired(target_config())
    states, policies = observe.ours([(_foreign_state(), NO_TRAFFIC)], [_foreign_policy()])
    changes = diff.diff(want, nothing(states=states, policies=policies))
    assert DELETE not in [c.op for c in changes]


def test_foreign_rules_around_our_chain_do_not_matter():
    """Only our chain and our jump are observed; a foreign jump count is not ours."""
    want = desired(target_config())
    assert diff.diff(want, in_sync(want, chains={4: chain_as_saved(want.chain), 6: None})) == []


def test_our_jump_not_first_is_a_chain_update():
    want = desired(target_config())
    observed = in_sync(want, chains={4: chain_as_saved(want.chain, first=False), 6: None})
    change, = diff.diff(want, observed)
    assert (change.resource, change.op) == ("chain", UPDATE)
    assert change.commands()[-2:] == ("iptables -D INPUT -j SYSRQ-APPLIANCE",
                                      "iptables -I INPUT 1 -j SYSRQ-APPLIANCE")


def test_duplicate_jumps_are_all_removed_then_one_inserted():
    want = desired(target_config())
    observed = in_sync(want, chains={4: chain_as_saved(want.chain, jumps=3), 6: None})
    commands = diff.diff(want, observed)[0].commands()
    assert commands.count("iptables -D INPUT -j SYSRQ-APPLIANCE") == 3
    assert commands[0] == "iptables -F SYSRQ-APPLIANCE"


def test_a_chain_of_the_other_family_is_removed_last():
    want = desired(target_config())
    v6 = desired(target_config(peer("admin1", "2001:db8::1", 0x5A000101, 0x5A000102),
                               local="2001:db8::7")).chain
    changes = diff.diff(want, in_sync(want, chains={4: chain_as_saved(want.chain),
                                                    6: chain_as_saved(v6)}))
    assert ops(changes) == [("chain", DELETE)]
    assert lines(changes) == ["remove IPv6 chain SYSRQ-APPLIANCE"]
    assert changes[0].commands() == ("ip6tables -D INPUT -j SYSRQ-APPLIANCE",
                                     "ip6tables -F SYSRQ-APPLIANCE",
                                     "ip6tables -X SYSRQ-APPLIANCE")


def test_policy_with_another_priority_is_updated():
    want = desired(target_config())
    odd = dataclasses.replace(want.policies[0], priority=5)
    changes = diff.diff(want, in_sync(want, policies=(odd, want.policies[1])))
    assert ops(changes) == [("policy", UPDATE)] and changes[0].old == odd
    assert changes[0].commands()[0].startswith(f"ip xfrm policy update src {SENDER}/32 ")


# ------------------------------------------------------------------ host settings

def test_password_changed_in_the_file_is_an_update_with_the_old_one_kept_for_undo():
    want = desired(target_config())
    changes = diff.diff(want, in_sync(want, kernel_password=b"older"))
    assert ops(changes) == [("password", UPDATE)]
    assert changes[0].old == Secret(b"older") and changes[0].want == Secret(PASSWORD)


def test_allow_list_changed_is_a_sysctl_update():
    cfg = target_config(allow=["sync"])
    want = desired(cfg)
    change, = diff.diff(want, in_sync(want, sysrq_mask=176))
    assert (change.describe(), change.commands()) == ("set kernel.sysrq 176 -> 16",
                                                       ("sysctl -w kernel.sysrq=16",))


def test_module_load_says_the_hash_it_loads_with():
    want = desired(target_config(hash="sha256"))
    change = diff.diff(want, nothing())[0]
    assert change.commands() == ("modprobe xt_SYSRQ hash=sha256",)
    assert diff.diff(desired(target_config()), nothing())[0].commands() == ("modprobe xt_SYSRQ",)


# ------------------------------------------------------------------ down: towards nothing

def test_down_removes_everything_in_reverse_order():
    want = desired(target_config())
    observed = in_sync(want, saved_sysrq=1, our_password_loaded=True)
    changes = diff.diff(plan.NOTHING, observed)
    assert ops(changes) == [("chain", DELETE), ("policy", DELETE), ("policy", DELETE),
                            ("sa", DELETE), ("sa", DELETE), ("esp-floors", UPDATE),
                            ("kernel.sysrq", DELETE), ("module", DELETE)]
    assert lines(changes)[-2:] == ["restore kernel.sysrq 1",
                                   "clear the xt_SYSRQ password and unload the module if unused"]


def test_down_remembers_where_each_outbound_counter_ended():
    want = desired(sender_config())
    states = tuple((dataclasses.replace(s, oseq=40 + i), NO_TRAFFIC)
                   for i, s in enumerate(want.states))
    floors = [c for c in diff.diff(plan.NOTHING, in_sync(want, states=states))
              if c.resource == "esp-floors"]
    assert floors[0].want == {want.states[0].spi: 40, want.states[1].spi: 41}


def test_down_on_a_clean_host_does_nothing():
    assert diff.diff(plan.NOTHING, nothing()) == []


def test_down_leaves_a_password_that_is_not_ours():
    want = desired(target_config())
    changes = diff.diff(plan.NOTHING, in_sync(want, our_password_loaded=False))
    assert "module" not in [c.resource for c in changes]
    assert "kernel.sysrq" not in [c.resource for c in changes]   # nothing was saved


def test_down_ignores_with_sa():
    want = desired(target_config())
    changes = diff.diff(plan.NOTHING, in_sync(want), with_sa=False)
    assert ops(changes).count(("sa", DELETE)) == 2


# ------------------------------------------------------------------ partial failure

def test_undo_plan_after_a_failure_at_the_chain():
    """The chain add failed (not done): everything before it is taken back, newest first."""
    changes = diff.diff(desired(target_config()), nothing())
    done = changes[:-1]
    assert ops(diff.undo_plan(done)) == [("policy", ADD), ("policy", ADD), ("sa", ADD),
                                         ("sa", ADD), ("kernel.sysrq", UPDATE),
                                         ("password", ADD), ("module", ADD)]
    assert [c.describe() for c in diff.undo_plan(done)][0] == \
        f"add policy out {TARGET} -> {SENDER} icmp type 3 code 3"


def test_undo_plan_at_each_failing_step_is_the_done_prefix_reversed():
    changes = diff.diff(desired(target_config()), nothing())
    for failing in range(len(changes)):
        assert diff.undo_plan(changes[:failing]) == list(reversed(changes[:failing]))


def test_undo_plan_skips_a_chain_rewrite_and_takes_back_stale_deletes():
    old, new = desired(target_config(*TWO)), desired(target_config(TWO[0]))
    changes = diff.diff(new, in_sync(old))
    assert ops(diff.undo_plan(changes)) == [("sa", DELETE), ("sa", DELETE), ("policy", DELETE),
                                            ("policy", DELETE)]


def test_what_down_alone_does_has_no_undo():
    """down never re-arms: restoring kernel.sysrq, scrubbing the password and settling
    the floors are not taken back, nor is a chain removal."""
    observed = in_sync(desired(target_config()), saved_sysrq=1, our_password_loaded=True)
    kept = {(c.resource, c.op) for c in diff.diff(plan.NOTHING, observed)
            if not diff.undoable(c)}
    assert kept == {("chain", DELETE), ("esp-floors", UPDATE), ("kernel.sysrq", DELETE),
                    ("module", DELETE)}


# ------------------------------------------------------------------ secrets and shapes

def test_no_key_or_password_in_lines_commands_or_reprs():
    cfg = target_config()
    keys = keys_for(cfg)[cfg.peers[0].name]
    changes = diff.diff(desired(cfg, seed=1), in_sync(desired(cfg, seed=5),
                                                      kernel_password=b"older-secret"))
    text = "\n".join([repr(changes)] + [c.describe() for c in changes]
                     + [cmd for c in changes for cmd in c.commands()])
    for secret in (keys.inbound.hex(), keys.outbound.hex(), "older-secret",
                   PASSWORD.decode(), repr(keys.inbound)[2:20]):
        assert secret not in text


def test_secret_compares_by_value_and_never_shows_it():
    assert Secret(b"a") == Secret(b"a") != Secret(b"b")
    assert "a'" not in repr(Secret(b"a")) and Secret(b"a") != b"a"


def test_ipv6_policy_and_cbc_sa_as_ip_xfrm_commands():
    cfg = target_config(peer("admin1", "2001:db8::1", 0x5A000101, 0x5A000102),
                        local="2001:db8::7")
    cfg = dataclasses.replace(cfg, algorithm="cbc(aes)+hmac(sha256)")
    keys = {"admin1": type(keys_for(cfg)["admin1"])(bytes(64), bytes(range(64)))}
    want = plan.plan(cfg, keys, PASSWORD)
    changes = diff.diff(want, nothing())
    sa = next(c for c in changes if c.resource == "sa").commands()[0]
    assert sa.endswith("enc 'cbc(aes)' <key> auth-trunc 'hmac(sha256)' <key> 128")
    out = next(c for c in changes if c.resource == "policy" and c.want.dir == "out")
    assert out.commands()[0].startswith(
        "ip xfrm policy add src 2001:db8::7/128 dst 2001:db8::1/128 proto ipv6-icmp type 1 code 4"
        " dir out priority 100 tmpl src 2001:db8::7 dst 2001:db8::1 proto esp reqid ")
    assert next(c for c in changes if c.resource == "chain").commands()[0] == \
        "ip6tables -N SYSRQ-APPLIANCE"


def test_every_rank_is_known_for_both_directions():
    """A resource/op pair missing from an order table would raise KeyError mid-run."""
    assert set(diff.DOWN_ORDER) <= {(r, op) for r in diff._DESCRIBE for op in (ADD, UPDATE, DELETE)}
    assert all(diff.APPLY_ORDER[k] < diff.APPLY_ORDER[("chain", ADD)]
               for k in diff.APPLY_ORDER if k[0] != "chain")


# ------------------------------------------------------------------ the diff converges

def _apply_model(observed, changes):
    """What the kernel holds after `changes` succeed, modelled on (dst, spi) and
    (selector, dir) keys the way the kernel keys them."""
    states = {(s.dst, s.spi): s for s, _ in observed.states}
    policies = {(p.selector, p.dir): p for p in observed.policies}
    for c in changes:
        table, key = ((states, lambda v: (v.dst, v.spi)) if c.resource == "sa" else
                      (policies, lambda v: (v.selector, v.dir)) if c.resource == "policy"
                      else (None, None))
        if table is None:
            continue
        if c.op == DELETE:
            del table[key(c.old)]
        else:
            table[key(c.want)] = c.want
    return set(states.values()), set(policies.values())


PEERS = [peer(f"p{i}", f"10.10.26.{i + 1}", 0x6000 + 2 * i, 0x6001 + 2 * i) for i in range(6)]


@settings(max_examples=60, deadline=None)
@given(before=st.sets(st.integers(0, 5), min_size=1), after=st.sets(st.integers(0, 5), min_size=1),
       seed_before=st.integers(1, 3), seed_after=st.integers(1, 3))
def test_diff_then_execute_reaches_the_desired_state(before, after, seed_before, seed_after):
    old = desired(target_config(*[PEERS[i] for i in sorted(before)]), seed=seed_before)
    new = desired(target_config(*[PEERS[i] for i in sorted(after)]), seed=seed_after)
    changes = diff.diff(new, in_sync(old))
    assert _apply_model(in_sync(old), changes) == (set(new.states), set(new.policies))
    # and a second run finds nothing left to do
    assert diff.diff(new, in_sync(new)) == []
    ranks = [diff.APPLY_ORDER[c.resource, c.op] for c in changes]
    assert ranks == sorted(ranks)
    assert (firewall.mismatch(in_sync(old).chains[4], new.chain) is None) == \
        (("chain", UPDATE) not in ops(changes))


def test_change_records_are_plain_data():
    change = Change("kernel.sysrq", UPDATE, 176, 1)
    assert change == Change("kernel.sysrq", UPDATE, 176, 1)
    assert dataclasses.asdict(change) == {"resource": "kernel.sysrq", "op": "update",
                                          "want": 176, "old": 1}

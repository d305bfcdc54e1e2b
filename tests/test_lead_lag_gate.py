"""The lead-lag policy on its own (no SGLang): who is held, when they go, and what is forgotten."""

import math
from dataclasses import dataclass, field

import pytest

from sgl_consensus.lead_lag import LeadLagGate, RequestView, parse_lead
from sgl_consensus.settings import SettingsError, load_settings


@dataclass(eq=False)
class Branch:
    group: str | None
    lead: float = 8
    produced: int = 0
    done: bool = False
    max_new_tokens: int = 100
    tag: list = field(default_factory=list)


VIEW = RequestView(group_of=lambda r: r.group, lead_of=lambda r: r.lead, progress_of=lambda r: r.produced,
                   is_done=lambda r: r.done, decodes=lambda r: r.max_new_tokens > 0)


def test_followers_wait_until_the_leader_has_its_lead():
    gate = LeadLagGate(VIEW)
    leader, *followers = [Branch("g") for _ in range(4)]
    queue = [leader, *followers]
    assert gate.held(queue, lambda: []) == followers  # the first to queue leads
    queue = followers  # the leader was admitted
    leader.produced = 7
    assert gate.held(queue, lambda: [leader]) == followers
    leader.produced = 8
    assert gate.held(queue, lambda: [leader]) == []
    assert gate.held_total == 6


def test_leader_finishing_or_vanishing_releases_followers():
    gate = LeadLagGate(VIEW)
    leader, follower = Branch("g", lead=math.inf), Branch("g", lead=math.inf)
    gate.held([leader, follower], lambda: [])
    assert gate.held([follower], lambda: [leader]) == [follower]
    leader.done = True
    assert gate.held([follower], lambda: [leader]) == []
    # an aborted leader can disappear without being marked finished: absent = gone
    gate2 = LeadLagGate(VIEW)
    leader2, follower2 = Branch("h", lead=math.inf), Branch("h", lead=math.inf)
    gate2.held([leader2, follower2], lambda: [])
    assert gate2.held([follower2], lambda: []) == []


def test_groups_are_independent_and_ungrouped_or_unled_requests_never_wait():
    gate = LeadLagGate(VIEW)
    a0, a1, b0, b1 = Branch("a"), Branch("a"), Branch("b"), Branch("b")
    solo, no_lead, warmup = Branch(None), Branch("c", lead=0), Branch("d", max_new_tokens=0)
    queue = [a0, b0, a1, solo, no_lead, Branch("c", lead=0), warmup, Branch("d"), b1]
    held = gate.held(queue, lambda: [])
    assert held == [a1, b1]  # the warm-up (prefill only) does not lead group d; the next one does


def test_state_is_forgotten_once_groups_are_done():
    gate = LeadLagGate(VIEW)
    leader, follower = Branch("g"), Branch("g")
    gate.held([leader, follower], lambda: [])
    leader.done = True
    gate.held([follower], lambda: [leader])  # released
    follower.done = True
    gate.sweep(lambda: [])
    assert gate.tracked_groups() == 0
    # a reused group key gets a new leader instead of inheriting the finished one
    again = [Branch("g"), Branch("g")]
    assert gate.held(again, lambda: []) == again[1:]


@pytest.mark.parametrize("value, expected", [(0, 0), ("16", 16), (" inf ", math.inf), (math.inf, math.inf), (8.0, 8)])
def test_parse_lead_accepts(value, expected):
    assert parse_lead(value) == expected


@pytest.mark.parametrize("value", [-1, "-3", "soon", 2.5, True, None])
def test_parse_lead_rejects_with_the_value_named(value):
    with pytest.raises(ValueError, match="lead"):
        parse_lead(value)


def test_server_lead_setting():
    assert load_settings({}).lead_tokens == 0
    assert load_settings({"CONSENSUS_LEAD": "32"}).lead_tokens == 32
    assert load_settings({"CONSENSUS_LEAD": "inf"}).lead_tokens == math.inf
    with pytest.raises(SettingsError, match="CONSENSUS_LEAD"):
        load_settings({"CONSENSUS_LEAD": "-2"})


def test_hook_reads_sglang_requests_as_the_worker_groups_them():
    """The admission hook's view of a request: the drafter's group key; no limit still decodes."""
    from types import SimpleNamespace

    from sgl_consensus.adapter import lead_lag_hook
    from sgl_consensus.adapter.request_tracker import consensus_params
    from sgl_consensus.grouping import SiblingGrouper

    def req(custom=None, max_new_tokens=16):
        return SimpleNamespace(origin_input_ids_unpadded=[1, 2, 3], sampling_params=SimpleNamespace(
            n=1, max_new_tokens=max_new_tokens, custom_params=custom))

    grouper = SiblingGrouper()
    for r in (req({"consensus_origin": "abc"}), req({"consensus_group": "fork-1", "consensus_tenant": "t"})):
        assert lead_lag_hook._group_of(r) == grouper.assign("x", consensus_params(r), [1, 2, 3]) is not None
    assert lead_lag_hook._group_of(req()) is None  # a lone request is never gated
    assert lead_lag_hook._group_of(req("not a dict")) is None  # malformed fields never raise in the scheduler
    assert lead_lag_hook.decodes(req(max_new_tokens=None))  # SGLang: None = up to the context length
    assert not lead_lag_hook.decodes(req(max_new_tokens=0))  # the n > 1 prefix warm-up

"""Early-stopping rules: they never stop before their minimum votes, `decided` never changes the
vote, and bad rule names or levels are refused with the value named."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgl_consensus.early_stop import (
    BetaPosterior,
    Decided,
    EarlyStopError,
    Vote,
    Window,
    full_vote,
    leader_ahead_probability,
    parse_rule,
    replay,
)

answers_strategy = st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=1, max_size=40)


@pytest.mark.parametrize("spec, rule", [("decided", Decided()), ("esc:3", Window(3)), ("ESC", Window(4)),
                                        ("beta:0.9", BetaPosterior(0.9)), (" beta ", BetaPosterior(0.95))])
def test_parse_rule(spec, rule):
    assert parse_rule(spec) == rule


@pytest.mark.parametrize("spec", ["majority", "esc:1", "esc:x", "beta:0.5", "beta:1", "beta:nan", "decided:2", ""])
def test_bad_rules_are_refused_naming_the_value(spec):
    with pytest.raises(EarlyStopError, match=repr(spec).replace("\\", "\\\\")):
        parse_rule(spec)


def test_beta_probability_matches_numerical_integration():
    for a, b in [(0, 0), (3, 0), (5, 2), (7, 7), (12, 3)]:
        # P(p > 1/2), p ~ Beta(a + 1, b + 1), by the midpoint rule on the density
        steps = 200_000
        norm = math.gamma(a + b + 2) / (math.gamma(a + 1) * math.gamma(b + 1))
        xs = [(i + 0.5) / steps for i in range(steps)]
        mass = sum(norm * x ** a * (1 - x) ** b for x in xs if x > 0.5) / steps
        assert leader_ahead_probability(a, b) == pytest.approx(mass, abs=1e-5), (a, b)


@settings(max_examples=300, deadline=None)
@given(answers=answers_strategy, seed=st.integers(0, 10_000),
       rule=st.sampled_from([Decided(), Window(2), Window(4), BetaPosterior(0.8), BetaPosterior(0.99)]))
def test_no_rule_stops_before_its_minimum_votes(answers, seed, rule):
    order = list(range(len(answers)))
    random.Random(seed).shuffle(order)
    vote = replay(rule, answers, order)
    assert vote.stopped
    assert vote.stopped_after >= min(rule.min_votes, len(answers))
    assert list(vote.answers) == order[: vote.stopped_after]  # it recorded the paths in finish order


@settings(max_examples=300, deadline=None)
@given(answers=answers_strategy, seed=st.integers(0, 10_000))
def test_decided_never_changes_the_vote(answers, seed):
    order = list(range(len(answers)))
    random.Random(seed).shuffle(order)
    vote = replay(Decided(), answers, order)
    if any(a is not None for a in answers):
        assert vote.leader() == full_vote(answers, order)


def test_decided_stops_as_soon_as_the_leader_cannot_be_caught():
    vote = Vote(Decided(), paths=5)
    assert not vote.record(0, 7) and not vote.record(1, 7)  # 2 vs 0, 3 undecided
    assert vote.record(2, 7)  # 3 vs 0, 2 undecided
    assert vote.stopped_after == 3 and vote.leader() == 7


def test_esc_needs_a_full_window_of_one_answer():
    vote = Vote(Window(3), paths=10)
    assert not vote.record(0, 1) and not vote.record(1, 1)
    assert not vote.record(2, None)  # an abstention breaks the run
    assert not vote.record(3, 1) and not vote.record(4, 1)
    assert vote.record(5, 1)
    assert vote.leader() == 1


def test_beta_stops_on_a_clear_lead_only():
    assert replay(BetaPosterior(0.95), [1, 2, 1, 2, 1, 2], range(6)).stopped_after == 6  # never decided
    vote = replay(BetaPosterior(0.95), [4] * 10, range(10))
    assert vote.stopped_after == 4  # P(Bin(5, 1/2) <= 4) = 31/32 >= 0.95; with 3 votes 15/16 < 0.95


def test_a_vote_needs_paths():
    with pytest.raises(EarlyStopError, match="0"):
        Vote(Decided(), paths=0)


def test_simulate_waves_and_lockstep():
    from sgl_consensus.early_stop import simulate

    answers, lengths = [5, 5, 5, 5, 7, 7, 7, 7], [10, 12, 14, 16, 10, 12, 14, 16]
    # one path at a time: ESC(3) fires after paths 0, 1, 2; nothing else ever started
    vote, tokens = simulate(Window(3), answers, lengths, in_flight=1)
    assert vote.stopped_after == 3 and vote.leader() == 5 and tokens == 10 + 12 + 14
    # all at once: paths finish by length (0 and 4 at tick 10, ...): no 3-run until the end
    vote, tokens = simulate(Window(3), answers, lengths, in_flight=8)
    assert vote.stopped_after == 8 and tokens == sum(lengths)
    # never stopping early, any in_flight: every token is generated
    for width in (1, 3, 8):
        vote, tokens = simulate(Decided(min_votes=9), answers, lengths, in_flight=width)
        assert tokens == sum(lengths) and len(vote.answers) == 8


def test_the_endpoint_refuses_a_bad_rule_before_connecting():
    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    with pytest.raises(ValueError, match="'esc:1'"):
        ConsensusRuntimeEndpoint("http://127.0.0.1:9", early_stop="esc:1")

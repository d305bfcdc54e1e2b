"""The width policy: calibration, cost model, and the choice they make (pure Python)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sgl_consensus.adaptive import Calibration, CostModel, TenantWidthPolicies, WidthPolicy, width_set


def test_width_sets():
    assert width_set(8) == (1, 2, 4, 8)
    assert width_set(6) == (1, 2, 4, 6)
    assert width_set(2) == (1, 2)
    assert width_set(8, [8, 1, 3]) == (1, 3, 8)
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        width_set(8, [0, 4])


def test_calibration_learns_what_scores_are_worth():
    cal = Calibration(decay=1.0)
    rng = random.Random(0)
    assert cal.probability(0.5) == pytest.approx(0.5)  # no evidence: the raw score
    scores = [0.5] * 2000
    cal.record(scores, [rng.random() < 0.1 for _ in scores])
    assert cal.probability(0.55) == pytest.approx(0.1, abs=0.02)
    assert cal.probabilities(np.array([0.55]))[0] == pytest.approx(cal.probability(0.55))
    assert cal.probability(0.95) == pytest.approx(0.95)  # other bins untouched
    table = cal.report()
    assert sum(row["proposed"] for row in table) == pytest.approx(2000)


def test_cost_model_recovers_a_linear_cost_with_non_negative_coefficients():
    model = CostModel(refit_every=1)
    rng = random.Random(1)
    for _ in range(200):
        bs, w, keys = rng.randint(1, 64), rng.choice([1, 2, 4, 8]), rng.randint(10, 5000)
        model.record(bs, w, keys, 0.004 + 0.0002 * bs + 0.0001 * bs * (w - 1) + rng.gauss(0, 1e-5))
    assert model.predict(32, 8, 0) == pytest.approx(0.004 + 0.0002 * 32 + 0.0001 * 32 * 7, rel=0.05)
    assert (model.theta >= 0).all()


def test_cost_model_fits_exactly_the_last_window_of_observations():
    """Old observations leave the fit once `window` newer ones arrived (in-place buffers)."""
    from scipy.optimize import nnls

    model = CostModel(window=16, refit_every=1)
    rng = random.Random(2)
    seen = []
    for step in range(100):
        bs, w, keys = rng.randint(1, 64), rng.choice([1, 2, 4, 8]), rng.randint(10, 5000)
        seconds = (0.004 if step < 60 else 0.02) + 0.0002 * bs + rng.gauss(0, 1e-4)  # the cost changes at step 60
        model.record(bs, w, keys, seconds)
        seen.append((CostModel.features(bs, w, keys), seconds))
        x = np.vstack([f for f, _ in seen[-16:]])
        scale = np.maximum(np.abs(x).max(axis=0), 1e-9)
        expected, _ = nnls(x / scale, np.array([t for _, t in seen[-16:]]))
        np.testing.assert_array_equal(model.theta, expected / scale)
    assert model.predict(1, 1, 0) > 0.015  # only the new cost regime is left in the window


def _drifting_run(follows: bool, steps: int = 200) -> CostModel:
    """A staggered-like run whose host is 30 % slower while the policy still mostly takes width 1
    (the first 60 steps) and which mostly takes width 2 afterwards; a width-2 step costs 0.15 s more."""
    rng = random.Random(3)
    model = CostModel(refit_every=1)
    for t in range(steps):
        early = t < 60
        w = (2 if t % 8 == 7 else 1) if early else (1 if t % 16 == 15 else 2)
        keys = 2000 + 16 * (t % 50)  # new requests replace finished ones: the context does not grow with time
        slow = 1.3 if early else 1.0
        seconds = slow * (0.3 + 0.0125 * 16 + 0.04 * keys / 1e3) + 0.15 * (w - 1) + rng.gauss(0, 0.03)
        model.record(16, w, keys, seconds, follows)
    return model


def test_cost_model_prices_the_width_from_neighbouring_steps_while_the_host_drifts():
    """A fit over levels credits the early slowdown to width 1 (width 2 looks almost free); the
    differences between neighbouring steps cancel the drift and find the 0.15 s."""
    widths = np.array([1.0, 2.0])
    paired, levels = _drifting_run(follows=True), _drifting_run(follows=False)
    assert paired.width_pairs >= paired.min_pairs and levels.width_pairs == 0
    assert np.diff(paired.predict_widths(16, widths, 2400))[0] == pytest.approx(0.15, rel=0.1)
    assert np.diff(levels.predict_widths(16, widths, 2400))[0] < 0.1  # the scenario does confound a level fit
    assert (paired.theta >= 0).all()


def test_cost_model_prices_the_first_draft_token_above_the_others():
    """A verify step costs a fixed amount more than a decode step (on CPU, width 1 runs as a plain
    decode) and then a per-token amount: width 2 pays both, width 4 over width 2 only the tokens."""
    rng = random.Random(4)
    model = CostModel(refit_every=1)
    for t in range(160):
        w = (1, 2, 4, 8)[rng.randrange(4)]
        seconds = 0.5 + 0.05 * (w > 1) + 0.01 * 16 * (w - 1) + rng.gauss(0, 0.005)
        model.record(16, w, 2000 + t, seconds, follows=t > 0)
    one, two, four = model.predict_widths(16, np.array([1.0, 2.0, 4.0]), 2100)
    assert two - one == pytest.approx(0.21, rel=0.1)
    assert four - two == pytest.approx(0.32, rel=0.1)
    assert model.theta[CostModel.names.index("per_drafting_step")] == pytest.approx(0.05, rel=0.3)


def test_the_width_cost_error_shrinks_as_neighbouring_pairs_accumulate():
    widths = np.array([1.0, 2.0, 4.0])
    early, late = _drifting_run(True, steps=90), _drifting_run(True, steps=400)
    error_early, error_late = early.extra_cost_error(16, widths, 2400), late.extra_cost_error(16, widths, 2400)
    assert error_early[0] == error_late[0] == 0.0  # width 1 is the reference
    assert 0 < error_late[1] < error_early[1]
    assert error_late[2] > error_late[1]  # three draft tokens cost more, less surely
    assert (_drifting_run(False).extra_cost_error(16, widths, 2400) == 0).all()  # no pairs: no error known


def test_caution_raises_each_width_by_its_cost_error():
    policy = WidthPolicy((1, 2, 4))
    policy.cost = _drifting_run(True)
    policy.measured = {1: 50, 2: 50, 4: 50}
    plain, cautious = policy.predicted_costs(16, 2400), policy.predicted_costs(16, 2400, caution=2.0)
    error = policy.cost.extra_cost_error(16, np.array([1.0, 2.0, 4.0]), 2400)
    for i, w in enumerate((1, 2, 4)):
        assert cautious[w] - plain[w] == pytest.approx(2.0 * error[i])


@pytest.mark.parametrize("follows", [True, False])
def test_the_policy_s_per_step_costs_equal_the_model_s_array_predictions(follows):
    """``cautious_costs`` (plain floats, asked every step) is the array path, term for term."""
    model = _drifting_run(follows)
    widths = (1, 2, 4, 8)
    for batch, keys in ((16, 2400), (3, 150), (64, 9000)):
        expected = model.predict_widths(batch, np.array(widths, dtype=float), keys) \
            + 1.5 * model.extra_cost_error(batch, np.array(widths, dtype=float), keys)
        assert model.cautious_costs(batch, widths, keys, 1.5) == pytest.approx(expected.tolist(), rel=1e-12)
        assert model.cautious_costs(batch, widths, keys, 0.0) == pytest.approx(
            model.predict_widths(batch, np.array(widths, dtype=float), keys).tolist(), rel=1e-12)


def _share_of_width_one(follows: bool, seed: int, steps: int = 240) -> float:
    """A policy over the drifting run (a width-2 step costs 1.3x a width-1 step; its draft node is
    accepted 15 % of the time, so drafting cannot pay): the share of its last half at width 1."""
    rng = random.Random(seed)
    policy = WidthPolicy((1, 2, 4, 8))
    chosen = []
    for t in range(steps):
        keys = 2000 + 16 * (t % 50)
        w = policy.choose([[0.15, 0.08, 0.05, 0.04, 0.03, 0.02, 0.01]] * 16, keys)
        slow = 1.3 if t < 60 else 1.0
        policy.record_cost(16, w, keys, slow * (0.3 + 0.0125 * 16 + 0.04 * keys / 1e3) + 0.15 * (w - 1)
                           + rng.gauss(0, 0.03), follows)
        policy.record_outcome([0.15] * (w > 1), [rng.random() < 0.15] * (w > 1))
        chosen.append(w)
    return sum(w == 1 for w in chosen[steps // 2:]) / (steps - steps // 2)


def test_a_drifting_host_does_not_lure_the_policy_into_drafts_that_cannot_pay():
    paired = [_share_of_width_one(True, seed) for seed in range(8)]
    levels = [_share_of_width_one(False, seed) for seed in range(8)]
    assert min(paired) >= 0.9
    assert min(levels) < 0.5  # priced from levels alone, a run settles at width 2


def _run(policy: WidthPolicy, scores_of, cost_of, steps: int) -> list[int]:
    chosen = []
    for _ in range(steps):
        scores = scores_of()
        w = policy.choose(scores, keys=0)
        policy.record_cost(len(scores), w, 0, cost_of(len(scores), w), follows=True)
        chosen.append(w)
    return chosen


def _exploring(policy: WidthPolicy, step: int) -> bool:
    period = policy.early_explore_every if step < policy.early_steps else policy.explore_every
    return bool(period) and step % period == period - 1


def _settled(policy: WidthPolicy, chosen: list[int], last: int) -> list[int]:
    """The last ``last`` choices, exploring steps left out."""
    start = len(chosen) - last
    return [w for step, w in enumerate(chosen) if step >= start and not _exploring(policy, step)]


def test_no_evidence_keeps_the_width_at_one_from_the_first_step():
    policy = WidthPolicy((1, 2, 4, 8), explore_every=0, early_explore_every=0)
    chosen = _run(policy, lambda: [[] for _ in range(16)], lambda bs, w: 0.002 + 0.0001 * bs * w, 20)
    assert chosen == [1] * 20


def test_untried_widths_are_never_assumed_cheap():
    policy = WidthPolicy((1, 2, 4, 8), explore_every=0, early_explore_every=0)
    for _ in range(5):
        policy.record_cost(16, 1, 0, 0.01)
    assert policy.predicted_cost(16, 8, 0) == pytest.approx(8 * policy.predicted_cost(16, 1, 0), rel=0.05)


def test_cheap_width_and_good_drafts_climb_to_the_widest_tree():
    policy = WidthPolicy((1, 2, 4, 8))
    chosen = _run(policy, lambda: [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]] * 8, lambda bs, w: 0.02 + 0.0001 * bs * w,
                  200)
    assert set(_settled(policy, chosen, 40)) == {8}
    assert chosen[0] == 1  # it starts from no drafts and climbs one width at a time


def test_expensive_width_and_weak_drafts_choose_a_small_tree():
    policy = WidthPolicy((1, 2, 4, 8))
    chosen = _run(policy, lambda: [[0.6, 0.1, 0.05, 0.05, 0.02, 0.02, 0.01]] * 32,
                  lambda bs, w: 0.02 + 0.0002 * bs * w, 200)
    assert set(_settled(policy, chosen, 40)) == {2}  # 1.6 tokens for 1.24x the time pays; more nodes add little


def test_when_drafting_cannot_pay_the_policy_does_not_draft():
    policy = WidthPolicy((1, 2, 4, 8))
    chosen = _run(policy, lambda: [[0.6, 0.1, 0.05, 0.05, 0.02, 0.02, 0.01]] * 32,
                  lambda bs, w: 0.001 + 0.001 * bs * w, 200)  # verify cost proportional to tokens
    assert set(_settled(policy, chosen, 40)) == {1}
    assert sum(w > 1 for w in chosen) <= 200 // 8  # only exploring steps paid for a wider tree


def test_exploration_keeps_visiting_a_neighbour():
    policy = WidthPolicy((1, 2, 4, 8), explore_every=4, early_explore_every=4)
    chosen = _run(policy, lambda: [[] for _ in range(8)], lambda bs, w: 0.002 + 0.0001 * bs * w, 40)
    assert 2 in chosen[20:]


def test_one_tenants_outcomes_never_set_another_tenants_width():
    """Tenant b's widths are the same whatever tenant a's drafts did before (no cross-tenant signal)."""
    def widths_of_b(a_accepts: bool) -> list[int]:
        policies = TenantWidthPolicies((1, 2, 4, 8))
        for _ in range(60):  # tenant a: confident drafts, all accepted or all rejected
            w = policies.choose(["a"], [[0.9] * 7])
            policies.record_cost(["a"], w, 0, 0.01 + 0.002 * w)
            policies.record_outcome("a", [0.9] * (w - 1), [a_accepts] * (w - 1))
        chosen = []
        for _ in range(40):
            w = policies.choose(["b"], [[0.5] * 7])
            policies.record_cost(["b"], w, 0, 0.01 + 0.002 * w)
            policies.record_outcome("b", [0.5] * (w - 1), [False] * (w - 1))
            chosen.append(w)
        return chosen

    assert widths_of_b(True) == widths_of_b(False)


def test_a_mixed_batch_uses_each_requests_own_calibration():
    policies = TenantWidthPolicies((1, 2, 4, 8))
    policies.policy("a").calibration.record([0.9] * 500, [True] * 500)
    policies.policy("b").calibration.record([0.9] * 500, [False] * 500)
    lead = policies.policy("a")
    gains = lead.expected_tokens([[0.9] * 7, [0.9] * 7],
                                 [policies.policy("a").calibration, policies.policy("b").calibration])
    assert gains[8] == pytest.approx(2 + 7 * policies.policy("a").calibration.probability(0.9)
                                     + 7 * policies.policy("b").calibration.probability(0.9))
    assert policies.choose(["a", "b", "a"], [[0.9] * 7] * 3) in (1, 2, 4, 8)
    assert policies.report()["tenants"] == 2


def test_a_tenant_step_pairs_only_with_a_step_that_held_the_same_tenant():
    policies = TenantWidthPolicies((1, 2))
    policies.record_cost(["a"], 1, 100, 0.1)
    policies.record_cost(["a", "b"], 2, 100, 0.2, follows=True)
    policies.record_cost(["b"], 1, 100, 0.1, follows=True)
    policies.record_cost(["a"], 2, 100, 0.2, follows=True)  # a's previous row is two steps back
    assert [row[4] for row in policies.policy("a").cost.window_rows()] == [0, 1, 0]
    assert [row[4] for row in policies.policy("b").cost.window_rows()] == [0, 1]


def test_rank_sums_equal_the_calibrated_probabilities_summed_per_rank():
    """The per-step form (tables by score slot) equals ``probabilities`` summed over the positive
    scores of each column, at bin edges, zero, negative and out-of-range scores too, and follows
    the calibration as it learns."""
    rng = np.random.default_rng(3)
    calibration = Calibration()
    edges = np.array([0.0, 0.01, 0.5, 0.9, 1.0, 1.2, -0.3, 5e-324])
    for _ in range(3):
        calibration.record(rng.random(400), rng.random(400) < 0.4)
        scores = rng.random((64, 7))
        scores[rng.random((64, 7)) < 0.3] = 0.0
        scores[: len(edges), 0] = edges
        expected = np.where(scores > 0, calibration.probabilities(scores), 0.0).sum(axis=0)
        np.testing.assert_allclose(calibration.rank_sums(scores), expected, rtol=1e-12, atol=1e-12)

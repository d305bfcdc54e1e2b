"""bench_multisample's per-run draft figures come from two /server_info snapshots around the run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_multisample import _draft_delta, _interleaved, _widths, add_ratios, paired_summary  # noqa: E402


def _state(steps: int, request_steps: int, mean_width: float, histogram: dict | None) -> dict:
    state = {"steps": steps, "request_steps": request_steps, "draft_ms_per_step": 1.0, "mean_width": mean_width}
    state["adaptive"] = {"widths": [1, 2, 4], "tenants": 0} if histogram is None else {
        "width_histogram": histogram, "calibration": [], "cost_model_seconds": {"intercept": 0.1},
        "cost_observations_per_width": {"1": 3}}
    return state


def test_a_run_reports_its_own_widths_after_a_flush_reset_the_policy():
    before = _state(10, 100, 2.0, None)  # the flush before the run started a fresh policy: no histogram yet
    after = _state(30, 300, 2.5, {"1": 5, "2": 12, "4": 3})
    delta = _draft_delta(before, after)
    assert delta["mean_width"] == pytest.approx((2.5 * 300 - 2.0 * 100) / 200)
    assert delta["width_steps"] == {"1": 5, "2": 12, "4": 3}
    assert delta["width_policy"]["cost_model_seconds"] == {"intercept": 0.1}
    assert _widths(delta) == "2.75 (1: 5, 2: 12, 4: 3)"


def test_widths_of_a_continuing_policy_are_differences():
    delta = _draft_delta(_state(10, 100, 1.0, {"1": 10, "2": 0}), _state(20, 200, 1.5, {"1": 15, "2": 5}))
    assert delta["width_steps"] == {"1": 5, "2": 5}
    assert _widths({"accept_length": 1.0}) == "-"


def _run(algorithm: str, round_: int, tokens_per_s: float, invocation: int = 0) -> dict:
    return {"regime": "lockstep", "algorithm": algorithm, "budget": 0 if algorithm == "none" else 8, "n": 4,
            "temperature": 0.7, "invocation": invocation, "round": round_, "tokens_per_s": tokens_per_s,
            "accept_length": 1.0 if algorithm == "none" else 1.2, "accuracy_majority": 0.0, "mean_width": None}


def test_rounds_pair_with_none_of_the_same_round_and_give_a_geometric_mean_with_an_interval():
    # The host ran twice as fast in round 1: each round's ratio is still 1.1, whatever the drift.
    runs = [_run("none", 0, 10.0), _run("consensus", 0, 11.0), _run("none", 1, 20.0), _run("consensus", 1, 22.0),
            _run("none", 2, 15.0), _run("consensus", 2, 15.0)]
    add_ratios(runs)
    assert [r["speedup_vs_none"] for r in runs if r["algorithm"] == "consensus"] == pytest.approx([1.1, 1.1, 1.0])
    (cell,) = paired_summary(runs)
    assert cell["rounds"] == 3 and cell["ratios"] == [1.1, 1.1, 1.0]
    assert cell["geomean"] == pytest.approx((1.1 * 1.1 * 1.0) ** (1 / 3))
    assert cell["low"] < cell["geomean"] < cell["high"]
    # Identical rounds: no spread, the interval closes on the mean.
    same = [_run("none", k, 10.0) for k in range(3)] + [_run("consensus", k, 12.0) for k in range(3)]
    add_ratios(same)
    (cell,) = paired_summary(same)
    assert cell["low"] == pytest.approx(1.2) and cell["high"] == pytest.approx(1.2)


def test_runs_of_another_invocation_or_without_rounds_are_not_paired():
    runs = [_run("none", 0, 10.0), _run("consensus", 0, 11.0, invocation=1), _run("consensus", 1, 11.0)]
    add_ratios(runs)
    assert runs[1]["speedup_vs_none"] is None and runs[2]["speedup_vs_none"] is None
    assert paired_summary(runs) == []


def test_engines_take_turns_only_with_engines_of_the_same_workload():
    lock = [(4, 0.7), (8, 0.7)]
    plan = [(("lockstep", "none", 0, 32), lock), (("lockstep", "consensus", 8, 32), lock),
            (("staggered", "none", 0, 16), [(8, 0.7)]), (("staggered", "consensus", 8, 16), [(8, 0.7)]),
            (("staggered", "consensus", 8, 8), [(4, 0.7)])]
    groups = _interleaved(plan)
    assert [keys for keys, _ in groups] == [
        [("lockstep", "none", 0, 32), ("lockstep", "consensus", 8, 32)],
        [("staggered", "none", 0, 16), ("staggered", "consensus", 8, 16)],
        [("staggered", "consensus", 8, 8)]]
    assert [runs for _, runs in groups] == [lock, [(8, 0.7)], [(4, 0.7)]]

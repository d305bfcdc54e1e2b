"""bench_multisample's per-run draft figures come from two /server_info snapshots around the run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_multisample import _draft_delta, _widths  # noqa: E402


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

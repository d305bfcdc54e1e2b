"""benchmarks/width_costs.py: per-width step costs from a run's recorded cost window."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "width_costs.py"


def _cycle_window(steps: int = 120) -> list[list[float]]:
    """Widths 1, 2, 4, 8 in turn at batch 16, a width's step costing 0.5 + 0.1 * (w - 1) s, with the
    host 30 % slower during the first third (the drift the policy's fit must see through)."""
    rng = random.Random(0)
    rows = []
    for t in range(steps):
        w = (1, 2, 4, 8)[t % 4]
        slow = 1.3 if t < steps // 3 else 1.0
        rows.append([16, w, 2000 + 16 * (t % 40), slow * 0.5 + 0.1 * (w - 1) + rng.gauss(0, 0.01), int(t > 0)])
    return rows


def test_width_costs_reports_medians_and_both_fits(tmp_path):
    results = tmp_path / "run.json"
    results.write_text(json.dumps({"runs": [
        {"regime": "staggered", "algorithm": "consensus", "n": 8, "width_policy": {"cost_window": _cycle_window()}},
        {"regime": "staggered", "algorithm": "none", "n": 8}]}))
    run = subprocess.run([sys.executable, str(SCRIPT), str(results)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if "consensus N=8" in line]
    assert len(lines) == 1  # the run without a window is skipped
    summary = json.loads(lines[0].split(": ", 2)[2])
    assert summary["batch"] == 16 and summary["steps"] == {"1": 30, "2": 30, "4": 30, "8": 30}
    # the policy's fit finds 0.1 s per draft token despite the drift (levels fit with the slow start)
    extra = summary["policy_fit"]["8"] - summary["policy_fit"]["1"]
    assert extra == pytest.approx(0.7, rel=0.05)


def test_width_costs_names_a_missing_file(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope.json")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "no such results file" in run.stderr and "nope.json" in run.stderr


def test_width_costs_names_a_file_that_is_not_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "bad.json is not a bench_multisample.py JSON file" in run.stderr
    assert "Traceback" not in run.stderr

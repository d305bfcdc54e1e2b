"""`sgl-consensus gpu-check`: everything that does not need CUDA is checked here, on CPU."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from sgl_consensus import gpu_check


def test_without_cuda_it_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "sgl_consensus", "gpu-check"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sgl-consensus gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
        "machine, or rehearse with --device cpu"]


def test_unknown_phase_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sgl_consensus", "gpu-check", "--device", "cpu", "--out",
                           str(tmp_path), "--phases", "engine:medusa"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown phase(s) ['engine:medusa']" in proc.stderr


def test_a_phase_past_its_limit_is_killed_and_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.PHASE_LIMITS, "preflight", 0.05)
    ns = argparse.Namespace(out=tmp_path, device="cpu", quick=True)
    record = gpu_check._run_phase(ns, "preflight")
    assert record["status"].startswith("timeout") and "result" not in record


def test_report_finds_the_first_divergence_and_its_margin():
    results = {
        "engine:none": {"status": "ok", "seconds": 1, "result": {
            "greedy": [[1, 2, 3], [4, 5, 6]], "greedy_top2": [[[-0.1, -3.0]] * 3, [[-0.5, -0.6]] * 3],
            "samples": {"T1.0": [[1, 2]] * 50 + [[3, 4]] * 50},
            "throughput": {"lockstep": {"tokens_per_s": 100.0, "tau": 1.0}}}},
        "engine:consensus": {"status": "ok", "seconds": 1, "result": {
            "greedy": [[1, 2, 3], [4, 9, 6]],
            "samples": {"T1.0": [[1, 2]] * 95 + [[3, 4]] * 5},
            "throughput": {"lockstep": {"tokens_per_s": 150.0, "tau": 2.0, "draft_ms_per_step": 0.4}}}},
    }
    rows = gpu_check.report(results)
    row = rows["consensus"]
    assert row["greedy_identical"] is False
    assert row["greedy_divergences"] == [{"position": 1, "top2_logprob_margin": pytest.approx(0.1)}]
    assert row["distribution_pvalues"]["T1.0"] < 1e-6
    assert row["lockstep"]["vs_none"] == pytest.approx(1.5)
    table = gpu_check.format_table(results, rows)
    assert "consensus | NO |" in table and "none | yes |" in table


@pytest.mark.engine
def test_cpu_rehearsal_runs_every_phase_kind(tmp_path):
    """The same phases a GPU runs, small, on this CPU: kernels vs reference, engines, report."""
    proc = subprocess.run([sys.executable, "-m", "sgl_consensus", "gpu-check", "--device", "cpu", "--out",
                           str(tmp_path), "--phases", "preflight,engine:none,engine:consensus"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    preflight = data["phases"]["preflight"]["result"]
    assert preflight["ok"] and preflight["kernels"]["reconstruct_tree"]["mismatches"] == 0
    if preflight["draft_core"] == "native":  # how the step's core calls are made on this machine, and why
        assert preflight["draft_core_calls"] == "fastcall" or preflight["draft_core_calls"].startswith("ctypes")
    consensus = data["report"]["consensus"]
    assert consensus["greedy_identical"] is True
    assert min(consensus["distribution_pvalues"].values()) > 1e-4
    assert consensus["lockstep"]["tau"] > 1.0 and consensus["lockstep"]["vs_none"] > 0
    lock = consensus["lockstep"]  # drafting per step, and the compiled core's part of it (issue 14's split)
    assert 0 < lock["core_ms_per_step"] <= lock["draft_ms_per_step"] and lock["batch_per_step"] >= 1
    assert "consensus | yes |" in proc.stdout

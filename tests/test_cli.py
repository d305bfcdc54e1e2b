"""The command line: clear errors for bad input, and a real (small) demo run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "sgl_consensus.cli"]


def _run(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_help_lists_commands():
    out = _run(["--help"])
    assert out.returncode == 0 and "serve" in out.stdout and "demo" in out.stdout


def test_serve_without_model_path_is_a_clear_error():
    out = _run(["serve", "--device", "cpu", "--", "--port", "1"])
    assert out.returncode == 2 and "--model-path" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("env, needle", [
    ({"CONSENSUS_DRAFT_ALPHA": "1.5"}, "alpha"),
    ({"CONSENSUS_DRAFTER": "eagle"}, "CONSENSUS_DRAFTER"),
    ({"CONSENSUS_GROUPNG": "on"}, "CONSENSUS_GROUPNG"),
    ({"CONSENSUS_CONFIG": "/nonexistent/knobs.json"}, "cannot be read"),
])
def test_serve_rejects_bad_knobs_before_starting(env, needle):
    out = _run(["serve", "--device", "cpu", "--", "--model-path", "unused"], env=env)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_demo_rejects_a_bad_start_method_before_starting():
    out = _run(["demo", "--algorithms", "none"], env={"CONSENSUS_CPU_SPAWN": "true"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "sgl-consensus demo: CONSENSUS_CPU_SPAWN='true': expected 0 (preloaded forkserver) or 1 (SGLang's spawn)"]


def test_demo_rejects_unknown_algorithm():
    out = _run(["demo", "--algorithms", "none,eagle"])
    assert out.returncode != 0 and "eagle" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.engine
def test_demo_writes_a_dataset_file_the_loader_reads(tmp_path):
    from sgl_consensus.workload.datasets import load_jsonl

    path = tmp_path / "heldout.jsonl"
    out = _run(["demo", "--write-dataset", str(path), "--problems", "3"])
    assert out.returncode == 0 and "wrote 3 held-out problems" in out.stdout
    problems = load_jsonl(path)
    assert len(problems) == 3 and all(isinstance(p.answer, int) and p.question for p in problems)
    bad = _run(["demo", "--write-dataset", str(tmp_path / "missing" / "x.jsonl"), "--problems", "3"])
    assert bad.returncode == 1 and "--write-dataset" in bad.stderr and "Traceback" not in bad.stderr


def test_demo_runs_and_reports_json():
    """The demo end to end: the baseline, SGLang's NgramCorpus under the consensus worker (the only
    engine test of that drafter) and consensus. Each further row is one more engine start;
    ``consensus_fixed`` (a fixed width) is the worker's ``CONSENSUS_ADAPTIVE=off``, which engine
    tests of the worker and of isolation start."""
    out = _run(["demo", "--problems", "2", "--paths", "2", "--max-new-tokens", "48", "--temperature", "0",
                "--algorithms", "none,ngram,consensus", "--json"], timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    runs = {r["algorithm"]: r for r in report["runs"]}
    assert list(runs) == ["none", "ngram", "consensus"]
    for r in runs.values():
        for key in ("accept_length", "verify_steps_per_token", "tokens_per_s", "accuracy_single", "accuracy_majority"):
            assert isinstance(r[key], (int, float)), key
        assert r["output_tokens"] > 0
    assert runs["none"]["accept_length"] == pytest.approx(1.0)
    assert runs["none"]["draft_ms_per_step"] is None and runs["consensus"]["draft_ms_per_step"] > 0
    # greedy: speculation must not change a single token
    assert all(r["identical_to_none"] for r in runs.values()), {a: r["identical_to_none"] for a, r in runs.items()}
    assert runs["consensus"]["accept_length"] > 1.0

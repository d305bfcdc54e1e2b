"""The frontend programs run end to end against a CPU consensus server (`--url`; `--cpu` starts the
same kind of server through the same launcher)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
PROGRAMS = Path(__file__).resolve().parents[2] / "programs"


def _run(script: str, url: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(PROGRAMS / script), "--url", url, "--json", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("script", ["self_consistency.py", "best_of_n.py"])
def test_help_explains_the_program(script):
    out = subprocess.run([sys.executable, str(PROGRAMS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "fork" in out.stdout and "--url" in out.stdout and "--cpu" in out.stdout


def test_self_consistency_votes(consensus_server):
    report = _run("self_consistency.py", consensus_server, "--problems", "2", "--n", "3", "--max-tokens", "160")
    assert report["summary"]["problems"] == 2
    for row in report["problems"]:
        assert len(row["votes"]) == 3
        if any(v is not None for v in row["votes"]):
            assert row["vote"] in row["votes"]


def test_self_consistency_with_lead_answers_every_branch(consensus_server):
    report = _run("self_consistency.py", consensus_server, "--problems", "2", "--n", "3", "--max-tokens", "160",
                  "--lead", "16")
    assert [len(row["votes"]) for row in report["problems"]] == [3, 3]


def test_self_consistency_with_early_stop_reports_who_voted(consensus_server):
    report = _run("self_consistency.py", consensus_server, "--problems", "2", "--n", "3", "--max-tokens", "48",
                  "--early-stop", "esc:2", "--in-flight", "1")
    assert report["summary"]["early_stop"] == "esc:2"
    for row in report["problems"]:
        assert 1 <= row["paths_voted"] == len(row["votes"]) <= 3


@pytest.mark.parametrize("args, named", [(["--early-stop", "esc:1"], "esc:1"), (["--in-flight", "2"], "--in-flight")])
def test_bad_early_stop_is_a_usage_error(args, named):
    out = subprocess.run([sys.executable, str(PROGRAMS / "self_consistency.py"), "--url", "http://127.0.0.1:9", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and named in out.stderr and "Traceback" not in out.stderr


def test_bad_lead_is_a_usage_error():
    out = subprocess.run([sys.executable, str(PROGRAMS / "self_consistency.py"), "--url", "http://127.0.0.1:9",
                          "--lead", "soon"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--lead" in out.stderr and "Traceback" not in out.stderr


def test_best_of_n_ranks_by_logprob(consensus_server):
    report = _run("best_of_n.py", consensus_server, "--problems", "2", "--n", "3", "--max-tokens", "160", "--rule", "logprob")
    assert len(report["problems"]) == 2
    assert all(0 <= row["chosen_index"] < 3 for row in report["problems"])
    assert report["accuracy"] <= report["oracle"]


def test_unreachable_server_is_a_clear_error():
    out = subprocess.run([sys.executable, str(PROGRAMS / "best_of_n.py"), "--url", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "cannot reach an SGLang server" in out.stderr and "Traceback" not in out.stderr

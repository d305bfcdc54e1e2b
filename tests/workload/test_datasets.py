"""Dataset files (GSM8K format) the project writes itself, and free-form answer extraction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgl_consensus.workload.datasets import (
    DatasetError,
    build_workload,
    extract_free_form_answer,
    load_jsonl,
    majority,
    write_synthetic,
)

HELD_OUT = 1_000_000_000


def test_synthetic_problems_round_trip_through_a_gsm8k_file(tmp_path):
    path = tmp_path / "held_out.jsonl"
    assert write_synthetic(path, 5, HELD_OUT) == 5
    problems = load_jsonl(path)
    from sgl_consensus.workload.problems import generate_problem

    assert [(p.question, p.answer) for p in problems] == \
        [(q.question, q.answer) for q in (generate_problem(HELD_OUT + i) for i in range(5))]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["answer"].count("####") == 1 and first["answer"].endswith(f"#### {problems[0].answer}")
    assert len(load_jsonl(path, limit=2)) == 2


@pytest.mark.parametrize("line, needle", [
    ("not json", r":1: not JSON"),
    (json.dumps({"question": "q"}), r":1: each line needs string fields"),
    (json.dumps({"question": "q", "answer": "no marker"}), r":1: the answer must end with '#### N'"),
    (json.dumps({"question": "q", "answer": "#### 2.5"}), r"the answer must end with '#### N' \(an integer\)"),
])
def test_bad_files_name_the_line(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DatasetError, match=needle):
        load_jsonl(path)
    with pytest.raises(DatasetError, match="cannot be read"):
        load_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("text, answer", [
    ("so 3 + 4 = 7\n#### 7", 7),
    ("#### 1,234 and then 99", 1234),
    ("First 12 apples, then 30. The answer is 42.", 42),
    ("The answer is: $1,500.", 1500),
    ("answer = -3", -3),
    ("We get 5 and then 8", 8),
    ("no numbers here", None),
    ("The answer is 2.5", None),
])
def test_free_form_answers(text, answer):
    assert extract_free_form_answer(text) == answer


def test_majority_vote_ignores_missing_answers():
    assert majority([None, 3, 4, 3, None]) == 3
    assert majority([None, None]) is None
    assert majority([5, 6]) == 5  # ties: the first seen


def test_tiny_reasoner_keeps_its_prompt_format_and_strict_answers(tmp_path):
    from sgl_consensus.models import BUNDLED_MODEL

    synthetic = build_workload(BUNDLED_MODEL, 2, None, HELD_OUT)
    assert not synthetic.free_form and synthetic.extract("The answer is 5") is None
    path = tmp_path / "d.jsonl"
    write_synthetic(path, 2, HELD_OUT)
    from_file = build_workload(BUNDLED_MODEL, 2, path, HELD_OUT)
    assert from_file.prompts == synthetic.prompts and from_file.answers == synthetic.answers
    assert from_file.free_form and from_file.extract("The answer is 5") == 5


def test_arithmetic_dataset_script_writes_questions_the_loader_reads_with_right_answers(tmp_path):
    import re
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "make_arithmetic_dataset.py"
    path = tmp_path / "arithmetic.jsonl"
    out = subprocess.run([sys.executable, str(script), str(path), "--problems", "30"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    problems = load_jsonl(path)
    assert len(problems) == 30
    for p in problems:
        a, op, b = re.fullmatch(r"What is (\d+) ([+x-]) (\d+)\?", p.question).groups()
        assert p.answer == {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
    bad = subprocess.run([sys.executable, str(script), str(path), "--problems", "0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--problems must be >= 1, got 0" in bad.stderr

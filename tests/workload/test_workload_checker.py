"""Answer extraction edge cases and the majority vote."""

from __future__ import annotations

import pytest

from sgl_consensus.workload.checker import extract_answer, is_correct, majority_answer


@pytest.mark.parametrize("text, expected", [
    ("so 3 + 4 = 7.\n#### 7", 7),
    ("####42", 42),
    ("#### -5", -5),
    ("#### 1,234", 1234),
    ("#### 12\n#### 13", 12),
    ("#### 12 and then the model rambles 99", 12),
    ("#### 007", 7),
    ("no marker 12", None),
    ("#### abc", None),
    ("####", None),
    ("", None),
    ("### 5", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct():
    assert is_correct("x\n#### 15", 15)
    assert not is_correct("x\n#### 16", 15)
    assert not is_correct("x 15", 15)


def test_majority_answer():
    assert majority_answer(["#### 3", "#### 4", "#### 4", "nothing"]) == 4
    assert majority_answer(["#### 3", "#### 4"]) == 3  # tie: first seen
    assert majority_answer(["nothing", ""]) is None

"""The problem generator: deterministic per seed, correct answers, 2-6 steps, varied phrasing and order."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from sgl_consensus.workload.checker import extract_answer
from sgl_consensus.workload.problems import PROMPT_SUFFIX, format_prompt, generate_problem

SEEDS = range(1500)
ARITHMETIC = re.compile(r"(\d+(?: \+ \d+)*) ?(\+|-|\*|x|/|plus|minus|times|divided by) (\d+) (?:=|is) (\d+)")


@pytest.fixture(scope="module")
def problems():
    return [generate_problem(seed) for seed in SEEDS]


def recompute_answer(family: str, q: dict) -> int:
    """Independent of the generator's code path: the answer from the raw quantities alone."""
    if family == "shopping":
        total = sum(c * p for c, p in zip(q["counts"], q["prices"])) - q["coupon"]
        return q["bill"] - total if q["bill"] else total
    if family == "collection":
        count = q["start"]
        for op, arg in q["ops"]:
            count = {"add": count + arg, "sub": count - arg, "mul": count * arg, "div": count // arg}[op]
            assert op != "div" or count * arg == count * arg // arg * arg
        return count
    if family == "work":
        return q["hours"] * q["days"] * q["rate"] + q["bonus"] - q["spent"]
    if family == "farm":
        return sum(c * legs for c, legs in zip(q["counts"], q["legs_per_animal"]))
    raise AssertionError(family)


def test_same_seed_same_problem():
    assert generate_problem(123) == generate_problem(123)
    assert generate_problem(123) != generate_problem(124)


def test_answers_match_quantities(problems):
    for p in problems:
        assert p.answer == recompute_answer(p.family, p.quantities), p.seed
        assert p.answer >= 0


def test_solution_ends_with_answer_line(problems):
    for p in problems:
        assert p.solution.endswith(f"\n#### {p.answer}")
        assert extract_answer(p.solution) == p.answer


def test_every_arithmetic_step_is_right(problems):
    ops = {"+": int.__add__, "plus": int.__add__, "-": int.__sub__, "minus": int.__sub__,
           "*": int.__mul__, "x": int.__mul__, "times": int.__mul__, "/": int.__floordiv__, "divided by": int.__floordiv__}
    checked = 0
    for p in problems:
        for left, op, right, result in ARITHMETIC.findall(p.solution):
            value = sum(int(t) for t in left.split(" + "))
            assert ops[op](value, int(right)) == int(result), (p.seed, left, op, right, result)
            if op in ("/", "divided by"):
                assert value % int(right) == 0
            checked += 1
    assert checked > 3 * len(problems)


def test_two_to_six_steps(problems):
    counts = Counter(p.n_steps for p in problems)
    assert set(counts) == {2, 3, 4, 5, 6}


def test_all_families_appear(problems):
    assert set(p.family for p in problems) == {"shopping", "collection", "work", "farm"}


def skeleton(line: str) -> str:
    """A solution line with numbers and names abstracted away: what remains is the template."""
    return re.sub(r"\d+", "N", re.sub(r"\b[A-Z][a-z]+\b", "W", line))


def test_paraphrase_variety(problems):
    lines = Counter(skeleton(line) for p in problems for line in p.solution.split("\n")[:-1])
    assert len(lines) > 300
    # no single template dominates the corpus
    assert lines.most_common(1)[0][1] < 0.1 * sum(lines.values())


def test_independent_steps_come_in_varied_order(problems):
    first_item_first = Counter()
    for p in problems:
        if p.family == "shopping" and len(p.quantities["counts"]) >= 2:
            c, price = p.quantities["counts"][0], p.quantities["prices"][0]
            first_expression = re.search(r"(\d+) (?:\*|x|times) (\d+)", p.solution).groups()
            first_item_first[first_expression == (str(c), str(price))] += 1
    assert first_item_first[True] > 20 and first_item_first[False] > 20


def test_prompt_format():
    assert format_prompt("Q?") == "Q?" + PROMPT_SUFFIX
    assert PROMPT_SUFFIX.strip()

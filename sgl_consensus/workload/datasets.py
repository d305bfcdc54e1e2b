"""Question files in GSM8K's format, and answers read out of free-form model outputs.

A dataset file is JSON lines, one problem per line: ``{"question": "...", "answer": "... #### 42"}``
(the reference solution ends with ``#### N``, N an integer; commas allowed). ``load_jsonl`` checks
every line and names the line of the first problem; ``write_jsonl`` writes the project's own files
(e.g. held-out problems of the synthetic task, ``sgl-consensus demo --write-dataset``).

Free-form outputs (a chat model's English) are read by :func:`extract_free_form_answer`:
``#### N`` if present, else the number after the last "answer is" (or "answer:"), else the last
number in the text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_MARKER_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*\$?\s*(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER_RE = re.compile(_NUMBER)


@dataclass(frozen=True)
class DatasetProblem:
    question: str
    answer: int


class DatasetError(ValueError):
    """A malformed dataset file; the message names the file, the line and the problem."""


def _to_int(text: str) -> int | None:
    cleaned = text.replace(",", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def load_jsonl(path: str | Path, limit: int | None = None) -> list[DatasetProblem]:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"dataset {path} cannot be read: {exc.strerror}") from None
    problems = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                or not isinstance(record.get("answer"), str):
            raise DatasetError(f"{path}:{number}: each line needs string fields 'question' and 'answer'")
        match = _MARKER_RE.search(record["answer"])
        answer = _to_int(match.group(1)) if match else None
        if answer is None:
            raise DatasetError(f"{path}:{number}: the answer must end with '#### N' (an integer), "
                               f"got {record['answer'][-40:]!r}")
        problems.append(DatasetProblem(record["question"], answer))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise DatasetError(f"dataset {path} holds no problems")
    return problems


def write_jsonl(path: str | Path, problems: Iterable[tuple[str, str, int]]) -> int:
    """Write (question, solution text, answer) triples; returns how many."""
    count = 0
    with open(path, "w") as f:
        for question, solution, answer in problems:
            f.write(json.dumps({"question": question, "answer": f"{solution.strip()}\n#### {answer}"}) + "\n")
            count += 1
    return count


def extract_free_form_answer(text: str) -> int | None:
    """The integer a free-form solution ends with (see the module docstring), None if none."""
    for pattern in (_MARKER_RE, _ANSWER_IS_RE):
        found = pattern.findall(text)
        if found:
            return _to_int(found[-1] if pattern is _ANSWER_IS_RE else found[0])
    numbers = _ANY_NUMBER_RE.findall(text)
    return _to_int(numbers[-1]) if numbers else None


def majority(answers: Sequence[int | None]) -> int | None:
    """Self-consistency vote over extracted answers (ties: the first seen), None if none."""
    valid = [a for a in answers if a is not None]
    if not valid:
        return None
    counts = Counter(valid)
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)


CHAT_INSTRUCTION = "Solve the problem step by step, then finish with: The answer is N."


@dataclass(frozen=True)
class Workload:
    """What a self-consistency run sends: one prompt per problem, the reference answers, and how
    to read an answer out of an output."""

    prompts: list[str]
    answers: list[int]
    free_form: bool  # True: extract_free_form_answer; False: the strict '#### N' of the tiny reasoner

    def extract(self, text: str) -> int | None:
        if self.free_form:
            return extract_free_form_answer(text)
        from sgl_consensus.workload.checker import extract_answer

        return extract_answer(text)


def build_workload(model: Path, problems: int, dataset: str | Path | None, seed_start: int) -> Workload:
    """Questions from ``dataset`` (a GSM8K-format file) or the synthetic task's held-out problems;
    prompts in the tiny reasoner's trained format, or through a chat model's template."""
    from sgl_consensus.models import uses_chat_template

    if dataset is not None:
        items = [(p.question, p.answer) for p in load_jsonl(dataset, limit=problems)]
    else:
        from sgl_consensus.workload.problems import generate_problem

        items = [(p.question, p.answer) for p in (generate_problem(seed_start + i) for i in range(problems))]
    if uses_chat_template(model):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{q}\n{CHAT_INSTRUCTION}"}],
                                                 tokenize=False, add_generation_prompt=True) for q, _ in items]
        return Workload(prompts, [a for _, a in items], free_form=True)
    from sgl_consensus.workload.problems import format_prompt

    return Workload([format_prompt(q) for q, _ in items], [a for _, a in items], free_form=dataset is not None)


def write_synthetic(path: str | Path, problems: int, seed_start: int) -> int:
    """Held-out problems of the synthetic task as a GSM8K-format file."""
    from sgl_consensus.workload.problems import generate_problem

    items = (generate_problem(seed_start + i) for i in range(problems))
    return write_jsonl(path, ((p.question, p.solution.rsplit("\n####", 1)[0], p.answer) for p in items))

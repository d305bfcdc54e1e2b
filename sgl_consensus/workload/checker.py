"""Answer extraction and checking for generated solutions.

The answer is the integer after the first ``####`` marker (GSM8K convention). Text after that number
(a model that keeps going) is ignored; commas inside the number (``1,234``) are accepted; anything
that is not an integer after the marker means no answer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_ANSWER_RE = re.compile(r"####\s*(-?\s*[\d,]*\d)")


def extract_answer(text: str) -> int | None:
    """The integer after the first ``####``, or None if there is none."""
    match = _ANSWER_RE.search(text)
    if match is None:
        return None
    digits = match.group(1).replace(",", "").replace(" ", "")
    try:
        return int(digits)
    except ValueError:
        return None


def is_correct(text: str, answer: int) -> bool:
    return extract_answer(text) == answer


def majority_answer(texts: Iterable[str]) -> int | None:
    """Self-consistency vote: the most common extracted answer (ties go to the first seen), None if none."""
    answers = [a for a in (extract_answer(t) for t in texts) if a is not None]
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)

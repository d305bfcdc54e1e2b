"""Early-stopping self-consistency: stop sampling paths once the vote is decided.

Terms used throughout:

- a *path* is one sampled solution of a problem; it *finishes* when SGLang ends it (stop token or
  length), and then *votes* with the answer extracted from its text, or abstains (no answer);
- the *vote* is the finished paths' answers in finish order; the *leader* is the most common answer
  so far (ties: the first to reach that count), the *runner-up* the next most common;
- *undecided* paths are those launched and still running plus those not launched yet;
- a *rule* looks at the vote and the number of undecided paths and says whether to stop. It never
  stops before its ``min_votes`` answers. When it stops, the undecided paths are aborted or never
  launched, and the leader is the result.

Rules (``parse_rule`` reads them from ``NAME[:PARAMETER]``):

- ``decided``: the leader cannot be caught: leader > runner-up + undecided. The result is the full
  vote's result by construction (zero accuracy change); it saves only the tail.
- ``esc:W`` (Early-Stopping Self-Consistency, arXiv 2401.10480, per finished path instead of per
  window of samples): the last ``W`` votes are one answer.
- ``beta:LEVEL`` (Adaptive-Consistency, arXiv 2305.11860): with ``a`` votes for the leader and ``b``
  for the runner-up, the posterior probability that the leader's share exceeds the runner-up's,
  P(p > 1/2) for p ~ Beta(a + 1, b + 1), is at least ``LEVEL``.

Pure Python, no SGLang: ``sgl_consensus.early_stop_runner`` drives SGLang with it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

Answer = Hashable  # an extracted answer; None = the path abstained


class EarlyStopError(ValueError):
    """A bad rule name or parameter; the message names the value."""


@dataclass(frozen=True)
class Decided:
    """Stop when the leader cannot be caught by the undecided paths."""

    min_votes: int = 1
    name: str = "decided"

    def stops(self, counts: Counter, recent: Sequence[Answer], undecided: int) -> bool:
        leader, runner_up = _top_two(counts)
        return leader > runner_up + undecided


@dataclass(frozen=True)
class Window:
    """ESC: the last ``window`` votes (abstentions included, which break a run) are one answer."""

    window: int = 4
    name: str = "esc"

    @property
    def min_votes(self) -> int:
        return self.window

    def stops(self, counts: Counter, recent: Sequence[Answer], undecided: int) -> bool:
        tail = recent[-self.window:]
        return len(tail) == self.window and tail[0] is not None and all(a == tail[0] for a in tail)


@dataclass(frozen=True)
class BetaPosterior:
    """Adaptive-Consistency's Beta rule: P(leader's share > runner-up's) >= ``level``."""

    level: float = 0.95
    min_votes: int = 3
    name: str = "beta"

    def stops(self, counts: Counter, recent: Sequence[Answer], undecided: int) -> bool:
        leader, runner_up = _top_two(counts)
        return leader > 0 and leader_ahead_probability(leader, runner_up) >= self.level


Rule = Decided | Window | BetaPosterior


def leader_ahead_probability(leader_votes: int, runner_up_votes: int) -> float:
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1): with integer parameters it is
    P(Binomial(a + b + 1, 1/2) <= a), an exact finite sum."""
    a, b = leader_votes, runner_up_votes
    n = a + b + 1
    return sum(math.comb(n, j) for j in range(a + 1)) / 2 ** n


def _top_two(counts: Counter) -> tuple[int, int]:
    top = [c for _, c in counts.most_common(2)] + [0, 0]
    return top[0], top[1]


RULE_HELP = "decided, esc:W (W >= 2 equal votes in a row), beta:LEVEL (0.5 < LEVEL < 1)"


def parse_rule(spec: str) -> Rule:
    """``decided``, ``esc:W`` or ``beta:LEVEL``; :class:`EarlyStopError` names a bad value."""
    text = str(spec).strip().lower()
    name, _, parameter = text.partition(":")
    if name == "decided" and not parameter:
        return Decided()
    if name == "esc":
        try:
            window = int(parameter or 4)
        except ValueError:
            window = 0
        if window < 2:
            raise EarlyStopError(f"early-stop rule {spec!r}: the ESC window must be an integer >= 2")
        return Window(window)
    if name == "beta":
        try:
            level = float(parameter or 0.95)
        except ValueError:
            level = math.nan
        if not 0.5 < level < 1.0:
            raise EarlyStopError(f"early-stop rule {spec!r}: the Beta level must be a number in (0.5, 1)")
        return BetaPosterior(level)
    raise EarlyStopError(f"unknown early-stop rule {spec!r}; choose one of: {RULE_HELP}")


@dataclass
class Vote:
    """One problem's vote under a rule: ``record`` each finished path; it says when to stop."""

    rule: Rule
    paths: int  # paths the full vote would run
    answers: dict[int, Answer] = field(default_factory=dict)  # path index -> answer, in finish order
    stopped_after: int | None = None  # votes recorded when the rule fired

    def __post_init__(self) -> None:
        if self.paths < 1:
            raise EarlyStopError(f"a vote needs at least one path, got {self.paths}")

    @property
    def stopped(self) -> bool:
        return self.stopped_after is not None

    def record(self, path: int, answer: Answer) -> bool:
        """Path ``path`` finished with ``answer``; returns whether the vote should stop now."""
        if self.stopped:
            return True
        self.answers[path] = answer
        votes = len(self.answers)
        undecided = self.paths - votes
        counts = Counter(a for a in self.answers.values() if a is not None)
        if undecided == 0 or (votes >= self.rule.min_votes
                              and self.rule.stops(counts, list(self.answers.values()), undecided)):
            self.stopped_after = votes
        return self.stopped

    def leader(self) -> Answer:
        """The most common answer so far (ties: the first to reach the count), None if none."""
        counts: Counter = Counter()
        best, best_count = None, 0
        for answer in self.answers.values():
            if answer is None:
                continue
            counts[answer] += 1
            if counts[answer] > best_count:
                best, best_count = answer, counts[answer]
        return best


def replay(rule: Rule, answers: Sequence[Answer], finish_order: Sequence[int]) -> Vote:
    """The vote ``rule`` reaches when the paths finish in ``finish_order`` (indices into
    ``answers``): for offline evaluation over recorded samples."""
    vote = Vote(rule, len(answers))
    for path in finish_order:
        if vote.record(path, answers[path]):
            break
    return vote


def simulate(rule: Rule, answers: Sequence[Answer], lengths: Sequence[int], in_flight: int) -> tuple[Vote, int]:
    """The vote ``rule`` reaches, and the tokens generated by then, when the paths are launched in
    index order ``in_flight`` at a time and each produces one token per tick (lock-step decoding):
    for offline evaluation over recorded samples. A path still running when the rule fires has
    produced one token per tick since its launch."""
    paths = len(answers)
    vote = Vote(rule, paths)
    started: dict[int, int] = {}
    running: list[tuple[int, int]] = []  # (finish tick, path)

    def launch(path: int, tick: int) -> None:
        started[path] = tick
        heapq.heappush(running, (tick + lengths[path], path))

    for path in range(min(max(in_flight, 1), paths)):
        launch(path, 0)
    tick = 0
    while running:
        tick, path = heapq.heappop(running)
        if vote.record(path, answers[path]):
            break
        if len(started) < paths:
            launch(len(started), tick)
    tokens = sum(min(lengths[p], tick - start) for p, start in started.items())
    return vote, tokens


def full_vote(answers: Sequence[Answer], finish_order: Sequence[int] | None = None) -> Answer:
    """The leader once every path has voted (ties: first to reach the count in finish order)."""
    vote = Vote(Decided(min_votes=len(answers) + 1), len(answers))
    for path in finish_order if finish_order is not None else range(len(answers)):
        vote.record(path, answers[path])
    return vote.leader()


Extractor = Callable[[str], Answer]

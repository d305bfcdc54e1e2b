"""`Drafter`: what the worker asks of a drafter, and `RankedDrafter`: one whose candidates are
ranked, so the worker can choose the verify width per step (sgl_consensus.adaptive).

Every drafter implements `Drafter` (tests/drafting/test_protocol.py checks the signatures):
`ConsensusDrafter` (siblings, global corpus, own history) and `PromptLookupDrafter` (own history).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .core import CandidateBatch, Written
from .tree import Candidates


@runtime_checkable
class Drafter(Protocol):
    """Per-request token history in, draft trees out (SGLang NGRAM's layout, see drafter.py)."""

    def add(self, rid: Hashable, group: Hashable | None, prompt_ids: Sequence[int] | np.ndarray,
            tenant: Hashable | None = None) -> None:
        """Start tracking `rid`; `group` names its siblings, `tenant` bounds what it drafts from."""

    def extend(self, rid: Hashable, token_ids: Sequence[int] | np.ndarray, logprobs: Any = None) -> None:
        """Tokens committed to `rid` since the last call, with their logprobs if known."""

    def extend_many(self, rids: Sequence[Hashable], token_lists: Sequence[Sequence[int]],
                    logprob_lists: Sequence[Sequence[float] | None] | None = None, *,
                    probabilities: np.ndarray | None = None) -> None:
        """`extend` for a batch; ``logprob_lists[i]`` covers the last tokens of ``token_lists[i]``,
        or ``probabilities`` holds one value per token, flat over all rows (NaN: unknown)."""

    def remove(self, rid: Hashable) -> None:
        """Forget `rid` (KeyError if it is not tracked)."""

    def propose(self, rids: Sequence[Hashable], budgets: Sequence[int] | None = None,
                width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokens int64 [bs, width] and ancestor mask bool [bs, width, width]; `width` defaults to the
        drafter's draft size, `budgets` caps each request's nodes (the rest of its row padding)."""

    def last_proposal_sources(self) -> list[tuple[int, int, int]]:
        """Per request of the last proposal: draft nodes from (siblings, global corpus, own history)."""

    def last_token(self, rid: Hashable) -> int:
        """The last token recorded for `rid`: the next tree's root."""

    def maintain(self) -> None:
        """Background work, run while the device verifies."""

    def reset(self) -> None:
        """Drop every request and index."""

    def stats(self) -> dict[str, int]:
        """Plain counts for metrics and leak checks."""

    def __contains__(self, rid: object) -> bool: ...

    def __len__(self) -> int: ...


@runtime_checkable
class RankedDrafter(Drafter, Protocol):
    """A drafter whose candidates carry scores: any prefix of a request's candidates is its best
    tree of that size, so the width can be chosen after proposing."""

    def propose_candidates(self, rids: Sequence[Hashable], rank_weights: tuple | None = None) -> CandidateBatch:
        """Per request its best draft nodes, best first, with path scores (and, given piecewise-linear
        ``rank_weights``, the batch's weighted score sum at each rank: `core.rank_weight_sums`)."""

    def extend_rows(self, rids: Sequence[Hashable], tokens: np.ndarray, lens: np.ndarray,
                    logprobs: np.ndarray | None = None, logprob_counts: np.ndarray | None = None) -> Written:
        """`extend_many` in a verify's row layout (request i: ``tokens[i, :lens[i]]``) with its
        logprob matrix, in one call (the worker's common step); returns (tokens written with a
        probability, the sum of those probabilities, each request's last token)."""

    def layout(self, candidates: CandidateBatch | Sequence[Candidates], width: int,
               budgets: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `width` nodes from `propose_candidates`'s result (as `propose` returns them)."""

    def accepted(self, candidates: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
        """bool [bs, n]: the candidates (laid out at `width`) each request's committed tokens walk
        through from the root (the nodes its verify accepted)."""

    def outcomes(self, candidates: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per real draft node of each request with committed tokens (rows, as `extend_rows`'s): its
        request index, score and whether the verify accepted it, in row order."""

    def last_proposal_labels(self) -> np.ndarray:
        """Per request of the last proposal: int64 [bs, 4] draft nodes from (siblings, global corpus,
        own history, the target's earlier predictions)."""

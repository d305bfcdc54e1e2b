"""Prompt-lookup drafting: a request drafts from its own history (prompt + output).

The fallback for requests without siblings, and the "own history only" control in benchmarks. It
keeps, per request, an index from every k-gram (``min_match <= k <= max_match``) to the position
right after its latest occurrence, updated incrementally on ``extend`` (O(new tokens x max_match)).
``propose`` looks up the longest suffix that occurred before and drafts the tokens that followed it
as a chain, in SGLang NGRAM's tree layout (node 0 = last committed token, padding = token 0 under
the root).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from .validation import flat_probabilities, probabilities, token_list

@dataclass
class _History:
    tokens: list[int] = field(default_factory=list)
    # (k-gram tuple) -> index of the token that followed its latest occurrence
    follow: dict[tuple[int, ...], int] = field(default_factory=dict)


def chain_tree(last_token: int, chain: Sequence[int], num_draft_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """A linear draft (root + chain) padded to ``num_draft_tokens`` nodes, with its ancestor mask."""
    n = num_draft_tokens
    chain = list(chain[: n - 1])
    tokens = np.zeros(n, dtype=np.int64)
    tokens[0] = last_token
    tokens[1 : 1 + len(chain)] = chain
    mask = np.zeros((n, n), dtype=np.bool_)
    depth = len(chain)
    # chain nodes: lower-triangular (every earlier chain node is an ancestor)
    mask[: depth + 1, : depth + 1] = np.tril(np.ones((depth + 1, depth + 1), dtype=np.bool_))
    # padding nodes: detached (no ancestor), so no verify walk reaches them
    for i in range(depth + 1, n):
        mask[i, i] = True
    return tokens, mask


class PromptLookupDrafter:
    """Drafts each request's continuation from the latest earlier occurrence of its own suffix."""

    def __init__(self, num_draft_tokens: int, max_match: int = 4, min_match: int = 1) -> None:
        if num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
        if not 1 <= min_match <= max_match:
            raise ValueError(f"need 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.num_draft_tokens = num_draft_tokens
        self.max_match = max_match
        self.min_match = min_match
        self._requests: dict[Hashable, _History] = {}
        self._drafted_nodes = 0
        self._propose_calls = 0
        self._last_sources: list[tuple[int, int, int]] = []

    def add(self, rid: Hashable, group: Hashable | None, prompt_ids: Sequence[int], tenant: Hashable | None = None) -> None:
        if rid in self._requests:
            raise ValueError(f"request {rid!r} was already added")
        ids = token_list(rid, prompt_ids, "prompt_ids")
        if not ids:
            raise ValueError(f"prompt_ids of request {rid!r} is empty")
        self._requests[rid] = _History()
        self._append(self._requests[rid], ids)

    def extend(self, rid: Hashable, token_ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        history = self._history(rid)
        ids = token_list(rid, token_ids, "token_ids")
        if logprobs is not None:
            probabilities(rid, logprobs, len(ids))  # validated for API parity; own history ignores them
        self._append(history, ids)

    def extend_many(self, rids: Sequence[Hashable], token_lists: Sequence[Sequence[int]],
                    logprob_lists: Sequence[Sequence[float] | None] | None = None, *,
                    probabilities: np.ndarray | None = None) -> None:
        """`extend` for a batch (logprobs, which cover each row's last tokens, or the flat
        ``probabilities``, are validated and ignored)."""
        if probabilities is not None:
            flat_probabilities(rids, [token_list(rid, row, "token_ids") for rid, row in zip(rids, token_lists)],
                               probabilities)
        for i, (rid, tokens) in enumerate(zip(rids, token_lists)):
            row = None if logprob_lists is None else logprob_lists[i]
            if row is not None:
                probabilities(rid, row, len(row))
            self.extend(rid, tokens)

    def propose(self, rids: Sequence[Hashable], budgets: Sequence[int] | None = None,
                width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Chains of up to ``width - 1`` tokens (``budgets[i] - 1`` for request i), padded to ``width``."""
        n = self.num_draft_tokens if width is None else width
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= self.num_draft_tokens:
            raise ValueError(f"width must be an integer in [1, {self.num_draft_tokens}] (num_draft_tokens), got {width!r}")
        if budgets is not None and (len(budgets) != len(rids) or any(
                isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= n for b in budgets)):
            raise ValueError(f"budgets must hold {len(rids)} integers in [1, {n}], got {budgets!r}")
        tokens = np.zeros((len(rids), n), dtype=np.int64)
        masks = np.zeros((len(rids), n, n), dtype=np.bool_)
        self._last_sources = []
        for row, rid in enumerate(rids):
            history = self._history(rid)
            chain = self._lookup(history)
            if budgets is not None:
                chain = chain[: int(budgets[row]) - 1]
            tokens[row], masks[row] = chain_tree(history.tokens[-1], chain, n)
            drafted = min(len(chain), n - 1)
            self._drafted_nodes += drafted
            self._last_sources.append((0, 0, drafted))
        self._propose_calls += 1
        return tokens, masks

    def last_proposal_sources(self) -> list[tuple[int, int, int]]:
        """Per request of the last `propose`: draft nodes from (siblings, global, own history) = (0, 0, k)."""
        return list(self._last_sources)

    def last_token(self, rid: Hashable) -> int:
        return self._history(rid).tokens[-1]

    def remove(self, rid: Hashable) -> None:
        if self._requests.pop(rid, None) is None:
            raise KeyError(f"unknown request {rid!r}")

    def reset(self) -> None:
        self._requests.clear()

    def maintain(self) -> None:
        """Nothing runs in the background: the own-history index is updated by `extend`."""

    def __contains__(self, rid: object) -> bool:
        return rid in self._requests

    def __len__(self) -> int:
        return len(self._requests)

    def stats(self) -> dict[str, int]:
        return {
            "live_requests": len(self._requests),
            "live_groups": 0,
            "indexed_tokens": sum(len(h.tokens) for h in self._requests.values()),
            "index_entries": sum(len(h.follow) for h in self._requests.values()),
            "propose_calls": self._propose_calls,
            "draft_nodes_own_history": self._drafted_nodes,
        }

    def _history(self, rid: Hashable) -> _History:
        try:
            return self._requests[rid]
        except KeyError:
            raise KeyError(f"unknown request {rid!r} (add() it first)") from None

    def _append(self, history: _History, ids: list[int]) -> None:
        tokens = history.tokens
        for token in ids:
            # index the k-grams that end at the current last token: they are followed by `token`
            end = len(tokens)
            for k in range(self.min_match, min(self.max_match, end) + 1):
                history.follow[tuple(tokens[end - k : end])] = end
            tokens.append(token)

    def _lookup(self, history: _History) -> list[int]:
        tokens = history.tokens
        end = len(tokens)
        for k in range(min(self.max_match, end), self.min_match - 1, -1):
            start = history.follow.get(tuple(tokens[end - k :]))
            if start is not None:
                return tokens[start : start + self.num_draft_tokens - 1]
        return []

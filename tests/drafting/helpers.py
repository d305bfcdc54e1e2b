"""Shared helpers for the drafting tests: tree checks and a tiny offline replay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from sgl_consensus.drafting import ConsensusDrafter

DATA_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "data"


def parents_from_mask(mask: np.ndarray) -> list[int]:
    """Parent of each node: its nearest (highest-index) strict ancestor; -1 for the root."""
    n = mask.shape[0]
    parents = [-1]
    for i in range(1, n):
        ancestors = [j for j in range(i) if mask[i, j]]
        parents.append(max(ancestors) if ancestors else -2)
    return parents


def assert_valid_tree(tokens: np.ndarray, mask: np.ndarray, last_token: int) -> None:
    """SGLang NGRAM layout: root = last token, BFS order, ancestor masks, padding at the root."""
    n = tokens.shape[0]
    assert mask.shape == (n, n)
    assert tokens[0] == last_token
    assert mask[0].tolist() == [True] + [False] * (n - 1)
    parents = parents_from_mask(mask)
    depths = [0]
    for i in range(1, n):
        p = parents[i]
        if is_padding(tokens, mask, i):
            depths.append(0)
            continue
        assert 0 <= p < i, f"node {i} has no parent before it"
        assert mask[i, i]
        assert not mask[i, i + 1:].any(), f"node {i} sees a later node"
        expected = mask[p].copy()
        expected[i] = True
        assert (mask[i] == expected).all(), f"row {i} is not its parent's row plus itself"
        depths.append(depths[p] + 1)
    real = n
    while real > 1 and is_padding(tokens, mask, real - 1):
        real -= 1  # trailing padding (detached rows) follows the tree
    assert not any(is_padding(tokens, mask, i) for i in range(1, real)), "padding inside the tree"
    assert depths[:real] == sorted(depths[:real]), "nodes are not in BFS (depth) order"
    # Siblings carry distinct tokens (padding aside): a duplicate would waste a draft slot.
    seen = set()
    for i in range(1, n):
        if not is_padding(tokens, mask, i):
            key = (parents[i], int(tokens[i]))
            assert key not in seen, f"duplicate child token {tokens[i]} under node {parents[i]}"
            seen.add(key)


def is_padding(tokens: np.ndarray, mask: np.ndarray, i: int) -> bool:
    """A detached row: token 0, no ancestor (no verify walk can reach it)."""
    return int(tokens[i]) == 0 and mask[i].sum() == 1 and mask[i, i]


def paths(tokens: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """Token paths from below the root to every node."""
    n = tokens.shape[0]
    return [[int(tokens[j]) for j in range(1, n) if mask[i, j]] for i in range(1, n)]


def accepted(tokens: np.ndarray, mask: np.ndarray, continuation: list[int]) -> int:
    """Longest tree path matching `continuation`."""
    best = 0
    for path in paths(tokens, mask):
        if path == continuation[: len(path)]:
            best = max(best, len(path))
    return best


def load_streams(name: str) -> dict:
    """``name``: ``T07`` / ``T10`` (the sibling streams) or a file stem of benchmarks/data."""
    stem = name if name.endswith(tuple("0123456789")) and "_" in name else f"sibling_streams_{name}"
    with gzip.open(DATA_DIR / f"{stem}.json.gz", "rt") as f:
        return json.load(f)


def replay_ahead(drafter: ConsensusDrafter, problems: list[dict], n: int) -> float:
    """tau of path 0 with the other paths already finished (their group still live)."""
    tokens_total = steps = 0
    for pi, problem in enumerate(problems):
        group = f"g{pi}"
        target = problem["samples"][0]
        drafter.add((pi, 0), group, problem["prompt_ids"])
        for j, sample in enumerate(problem["samples"][1:], start=1):
            drafter.add((pi, j), group, problem["prompt_ids"])
            drafter.extend((pi, j), sample)
            drafter.remove((pi, j))
        pos = 0
        new = target[:1]
        pos = 1
        while pos < len(target):
            drafter.extend((pi, 0), new)
            tokens, mask = drafter.propose([(pi, 0)])
            drafter.maintain()
            acc = accepted(tokens[0], mask[0], target[pos: pos + n])
            advance = min(acc + 1, len(target) - pos)
            new = target[pos: pos + advance]
            pos += advance
            tokens_total += advance
            steps += 1
        drafter.remove((pi, 0))
    return tokens_total / steps

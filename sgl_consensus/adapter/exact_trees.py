"""Draft trees that SGLang's CUDA tree sampling verifies exactly.

SGLang's CUDA verify (``tree_speculative_sampling_target_only``) accepts the k-th child of a node with
one coin against the running sum of its children's target probabilities: exact only if the children
of a node carry distinct tokens (``sgl_consensus.testing.cuda_tree_reference`` states the rule).
SGLang's NgramCorpus pads small trees with token-0 children of the root, which breaks that. The
consensus drafter never emits such trees (its padding rows are detached); trees from other sources
(``CONSENSUS_DRAFTER=ngram_corpus``) pass through :func:`detach_duplicate_siblings`.
"""

from __future__ import annotations

import numpy as np


def detach_duplicate_siblings(tokens: np.ndarray, mask: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Detach (clear every ancestor bit of) each node that repeats an earlier sibling's token.

    ``tokens``: [bs * n]; ``mask``: [bs * n * n] with ``mask[b, i, j]`` = j is i or an ancestor of i.
    A detached node has no parent, so no verify walk reaches it or anything below it; the first
    sibling with the token keeps its place. Returns new flat arrays.
    """
    tree = mask.reshape(-1, n, n).astype(bool, copy=True)
    toks = tokens.reshape(-1, n)
    order = np.arange(n)
    earlier = order[None, :] < order[:, None]  # [i, j]: j < i
    ancestors = tree & earlier
    has_parent = ancestors.any(-1)
    parent = np.where(has_parent, n - 1 - np.argmax(ancestors[..., ::-1], axis=-1), -1)
    same = (parent[:, :, None] == parent[:, None, :]) & (toks[:, :, None] == toks[:, None, :])
    duplicate = (same & earlier[None] & has_parent[:, :, None]).any(-1)
    if duplicate.any():
        b, i = np.nonzero(duplicate)
        tree[b, i, :] = False
        tree[b, i, i] = True
    return tokens, tree.reshape(-1)

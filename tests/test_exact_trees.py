"""The adapter's exactness guards: duplicate siblings detached, inexact CUDA verifies routed away."""

from __future__ import annotations

import numpy as np

from sgl_consensus.adapter.exact_trees import detach_duplicate_siblings
from sgl_consensus.testing.cuda_tree_reference import reachable_duplicate_siblings


def test_ngram_style_padding_is_detached():
    """SGLang's NgramCorpus layout: padding = token-0 children of the root, next to a real token 0."""
    n = 5
    tokens = np.array([7, 0, 3, 0, 0], dtype=np.int64)
    mask = np.eye(n, dtype=bool)
    mask[1:, 0] = True  # every node a child of the root
    assert reachable_duplicate_siblings(tokens, mask) == 2
    out_tokens, out_mask = detach_duplicate_siblings(tokens, mask.reshape(-1), n)
    tree = out_mask.reshape(n, n)
    assert reachable_duplicate_siblings(out_tokens, tree) == 0
    assert tree[1].tolist() == [True, True, False, False, False]  # the first token-0 child keeps its place
    assert tree[3].tolist() == [False, False, False, True, False] and tree[4, :4].sum() == 0


def test_distinct_siblings_are_left_alone():
    n = 4
    tokens = np.array([1, 5, 6, 5], dtype=np.int64)  # the second 5 is a grandchild, not a sibling
    mask = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=bool)
    _, out = detach_duplicate_siblings(tokens, mask.reshape(-1), n)
    assert (out.reshape(n, n) == mask).all()


def test_batches_the_cuda_verify_gets_wrong_take_the_exact_sampler():
    from types import SimpleNamespace

    from sgl_consensus.adapter.verify import needs_exact_verification

    def info(greedy=False, top_k=False, top_p=False, min_p=False):
        return SimpleNamespace(is_all_greedy=greedy, need_top_k_sampling=top_k, need_top_p_sampling=top_p,
                               need_min_p_sampling=min_p)

    assert needs_exact_verification(info(top_k=True, top_p=True), on_cpu=False)
    assert needs_exact_verification(info(min_p=True), on_cpu=False)
    assert not needs_exact_verification(info(top_p=True), on_cpu=False)
    assert not needs_exact_verification(info(top_k=True), on_cpu=False)
    assert needs_exact_verification(info(), on_cpu=True)  # CPU: SGLang verifies sampled requests greedily
    assert not needs_exact_verification(info(greedy=True, top_k=True, top_p=True), on_cpu=True)

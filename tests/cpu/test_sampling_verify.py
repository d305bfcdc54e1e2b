"""Lossless CPU verification: the filtered distribution matches SGLang's sampler, and the tree walk
over per-node samples reproduces plain sequential sampling."""

from __future__ import annotations

import itertools

import pytest
import torch

from sgl_consensus.cpu.sampling_verify import filtered_probs, sample_rows, sample_tree_targets, walk_tree


@pytest.mark.parametrize("seed", range(4))
def test_filtered_probs_match_sglang_sampler(seed):
    from sglang.srt.layers.sampler import top_k_top_p_min_p_sampling_from_probs_torch

    gen = torch.Generator().manual_seed(seed)
    rows, vocab = 6, 50
    logits = torch.randn(rows, vocab, generator=gen) * 3
    temps = torch.rand(rows, generator=gen) + 0.3
    top_ks = torch.randint(1, vocab + 1, (rows,), generator=gen)
    top_ps = torch.rand(rows, generator=gen) * 0.9 + 0.1
    min_ps = torch.rand(rows, generator=gen) * 0.2
    ours, ids = filtered_probs(logits, temps, top_ks, top_ps, min_ps)
    probs = torch.softmax(logits / temps.view(-1, 1), dim=-1)
    _, theirs, their_ids, _ = top_k_top_p_min_p_sampling_from_probs_torch(
        probs.clone(), top_ks, top_ps, min_ps, True, None, torch.zeros(rows, dtype=torch.long),
        return_filtered_probs=True,
    )
    # Compare as token -> weight maps (sorting ties may order ids differently).
    for r in range(rows):
        want = {int(t): float(w) for t, w in zip(their_ids[r], theirs[r]) if w > 0}
        got = {int(t): float(w) for t, w in zip(ids[r], ours[r]) if w > 0}
        assert got.keys() == want.keys()
        assert all(abs(got[t] - want[t]) < 1e-6 for t in got)


def test_greedy_rows_take_the_argmax():
    logits = torch.randn(8, 30)
    ones = torch.ones(8)
    samples = sample_tree_targets(logits, ones, torch.ones(8, dtype=torch.long), ones, None, num_draft=1)
    assert torch.equal(samples.view(-1), logits.argmax(-1))


def test_tree_walk_over_node_samples_is_plain_sampling():
    """Two-token continuations: tree-walk verification vs exact sequential probabilities."""
    vocab = 4
    torch.manual_seed(0)
    # Next-token distribution depends on the previous token: a random bigram model.
    bigram_logits = torch.randn(vocab, vocab) * 1.5
    root_logits = torch.randn(vocab) * 1.5
    # Draft tree: root(0) -> children tokens 1 and 2 (nodes 1, 2); node 1 -> child token 3 (node 3).
    candidates = torch.tensor([[0, 1, 2, 3]])
    parents = torch.tensor([[-1, 0, 0, 1]])
    node_context = [None, 1, 2, 3]  # the token each node ends with
    samples = 40_000
    node_logits = torch.stack([root_logits if c is None else bigram_logits[c] for c in node_context])
    logits = node_logits.repeat(samples, 1)
    temps = torch.ones(samples)
    targets = sample_tree_targets(logits, temps, torch.full((samples,), vocab), temps, None, num_draft=4)
    counts: dict[tuple[int, int], int] = {}
    for b in range(samples):
        path, bonus = walk_tree(candidates, parents, targets[b : b + 1])
        tokens = [int(candidates[0, i]) for i in path[0][1:]] + bonus
        key = (tokens[0], tokens[1]) if len(tokens) >= 2 else None
        if key is None:  # only the first token emitted this step: extend by plain sampling
            nxt = int(torch.multinomial(torch.softmax(bigram_logits[tokens[0]], -1), 1))
            key = (tokens[0], nxt)
        counts[key] = counts.get(key, 0) + 1
    p_root = torch.softmax(root_logits, -1)
    p_next = torch.softmax(bigram_logits, -1)
    tv = 0.5 * sum(
        abs(counts.get((a, b), 0) / samples - float(p_root[a] * p_next[a, b]))
        for a, b in itertools.product(range(vocab), repeat=2)
    )
    assert tv < 0.02, f"total variation {tv:.4f}: tree verification changed the distribution"


def test_unfiltered_fast_path_samples_the_same_distribution():
    """No top-k / top-p / min-p: sampling skips the sort and must match the filtered path's distribution."""
    torch.manual_seed(3)
    logits = (torch.randn(1, 6) * 1.5).repeat(40_000, 1)
    temps = torch.full((40_000,), 0.8)
    fast = sample_rows(logits, temps, None, None, None)
    slow = sample_rows(logits, temps, torch.full((40_000,), 1 << 30), torch.ones(40_000), None)
    expected = torch.softmax(logits[0] / 0.8, dim=-1)
    for samples in (fast, slow):
        freq = torch.bincount(samples, minlength=6).float() / len(samples)
        assert torch.allclose(freq, expected, atol=0.01), (freq, expected)

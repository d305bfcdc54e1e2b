"""Lossless verification of sampled requests against a deterministic draft tree (pure torch).

SGLang 0.5.23 verifies every request greedily on CPU, which changes the output distribution of
sampled requests. For drafts that come with no draft distribution (the draft "probability" of the
proposed token is 1, as for n-gram and consensus drafts) exact speculative sampling reduces to:

    at node u, sample x ~ p(. | prefix, path to u); if a child of u carries token x, accept it and
    continue there; otherwise stop and emit x as the bonus token.

Every node's sample is used at most once along the accepted path, so sampling all nodes up front,
independently, and then walking the tree with those samples (exactly the greedy tree walk, with the
samples in place of the argmax) gives the same distribution as plain sampling, token for token.

``p`` here must be the very distribution plain decoding samples from: SGLang's sampler computes
``softmax(logits / temperature)``, then keeps the ``top_k`` highest, then the smallest prefix of
the sorted distribution whose mass before each token is ``<= top_p``, then drops tokens below
``min_p * max_prob``; greedy requests arrive with ``top_k = 1``.
"""

from __future__ import annotations

import torch


def filtered_probs(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_ks: torch.Tensor,
    top_ps: torch.Tensor,
    min_ps: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the (unnormalised) filtered probabilities in descending order, and their token ids.

    logits: [rows, vocab]; temperatures: [rows] or [rows, 1]; top_ks, top_ps, min_ps: [rows].
    """
    probs = torch.softmax(logits.float() / temperatures.reshape(-1, 1).float(), dim=-1)
    sorted_probs, token_ids = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(sorted_probs.shape[-1], device=logits.device).view(1, -1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop = (ranks >= top_ks.view(-1, 1)) | (mass_before > top_ps.view(-1, 1).float())
    if min_ps is not None:
        drop |= sorted_probs < (sorted_probs[:, :1] * min_ps.view(-1, 1).float())
    return sorted_probs.masked_fill(drop, 0.0), token_ids


def sample_rows(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_ks: torch.Tensor,
    top_ps: torch.Tensor,
    min_ps: torch.Tensor | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One sample per row from the filtered distribution: int64 [rows]. ``top_ks`` None: no row
    filters (no top-k, top-p or min-p), so the sort is skipped."""
    if top_ks is None:
        probs = torch.softmax(logits.float() / temperatures.reshape(-1, 1).float(), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).view(-1)
    weights, token_ids = filtered_probs(logits, temperatures, top_ks, top_ps, min_ps)
    picked = torch.multinomial(weights, num_samples=1, generator=generator)
    return token_ids.gather(1, picked).view(-1)


def sample_tree_targets(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_ks: torch.Tensor,
    top_ps: torch.Tensor,
    min_ps: torch.Tensor | None,
    num_draft: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample every verify node of every request: logits [bs*n, vocab] -> int64 [bs, n].

    Sampling parameters are per request ([bs]); each node uses its request's. ``top_ks`` None:
    no request filters its distribution (the fast path of ``sample_rows``).
    """
    expand = lambda t: None if t is None else torch.repeat_interleave(t.reshape(-1), num_draft)  # noqa: E731
    samples = sample_rows(
        logits, expand(temperatures), expand(top_ks), expand(top_ps), expand(min_ps), generator
    )
    return samples.view(-1, num_draft)


def walk_tree(
    candidates: torch.Tensor, parents: torch.Tensor, targets: torch.Tensor
) -> tuple[list[list[int]], list[int]]:
    """Reference tree walk (plain Python), for tests: accepted node indices and bonus token per request.

    candidates, parents, targets: [bs, n]; parents[b, i] = parent node of i (-1 for the root).
    """
    accepted, bonus = [], []
    for b in range(candidates.shape[0]):
        node, path = 0, [0]
        while True:
            children = [i for i in range(candidates.shape[1]) if int(parents[b, i]) == node]
            nxt = next((c for c in children if int(candidates[b, c]) == int(targets[b, node])), None)
            if nxt is None:
                break
            node = nxt
            path.append(node)
        accepted.append(path)
        bonus.append(int(targets[b, node]))
    return accepted, bonus

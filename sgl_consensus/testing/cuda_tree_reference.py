"""A pure-torch reference of SGLang's CUDA tree verification, written from its semantics.

SGLang 0.5.23 verifies sampled requests on CUDA with ``tree_speculative_sampling_target_only``; the
tree is rebuilt from the draft mask by ``reconstruct_indices_from_tree_mask``. This module
restates both rules in plain Python/torch, so that CPU tests can run the worker's real draft trees
through the very acceptance rule a GPU applies, and ``sgl-consensus gpu-check`` can compare.

Terms:

- node: a row of the draft tree (node 0 = the root, the last committed token); ``candidates[i]``
  its token;
- ``mask[i, j]``: j is i or an ancestor of i (SGLang's draft-tree mask);
- parent of i: its nearest ancestor, the largest ``j < i`` with ``mask[i, j]``; a row with no
  ancestor has no parent (nothing can reach it: a *detached* row);
- first child of i: the first row ``k > i`` with ``mask[k, i]``; next sibling of i: the first row
  ``k > i`` whose parent is i's parent;
- q_u: the target distribution at node u (after temperature, top-k and top-p as SGLang's verify
  computes them);
- the rule: at node u, draw one coin c ~ U(0, 1); walk u's children in sibling order, adding their
  tokens' q_u mass to a running sum; accept the first child whose running sum exceeds c (and whose
  own mass is > 0), continue from it with a fresh coin. If no child is accepted, emit a bonus token
  sampled from q_u with the rejected children's tokens removed (renormalised); at the depth limit,
  from q_u itself.

The rule is exact (the emitted tokens are distributed as plain sampling) only if the children of a
node carry distinct tokens: a token present twice is counted twice in the running sum.
"""

from __future__ import annotations

import torch


def tree_links(mask: torch.Tensor) -> tuple[list[int], list[int], list[int]]:
    """(parent, first child, next sibling) of every node of one tree, -1 where none."""
    n = mask.shape[0]
    rows = mask.bool().tolist()
    parent = []
    for i in range(n):
        ancestors = [j for j in range(i) if rows[i][j]]
        parent.append(ancestors[-1] if ancestors else -1)
    first_child = [next((k for k in range(i + 1, n) if rows[k][i]), -1) for i in range(n)]
    next_sibling = []
    for i in range(n):
        p = parent[i]
        next_sibling.append(-1 if p < 0 else next((k for k in range(i + 1, n) if parent[k] == p), -1))
    return parent, first_child, next_sibling


def reachable_duplicate_siblings(tokens, mask) -> int:
    """Pairs of siblings with the same token that a walk from the root can reach (0 = exact tree)."""
    tokens = [int(t) for t in tokens]
    parent, first_child, next_sibling = tree_links(torch.as_tensor(mask))
    duplicates = 0
    frontier = [0]
    while frontier:
        node = frontier.pop()
        seen: set[int] = set()
        child = first_child[node]
        while child != -1:
            if tokens[child] in seen:
                duplicates += 1
            seen.add(tokens[child])
            frontier.append(child)
            child = next_sibling[child]
    return duplicates


def verify_tree(
    candidates: list[int],
    mask: torch.Tensor,
    node_probs: torch.Tensor,
    generator: torch.Generator | None = None,
    max_depth: int | None = None,
    coins: list[float] | None = None,
    final_coin: float | None = None,
) -> tuple[list[int], int]:
    """One request's verification: (accepted node indices, root first; the bonus token).

    ``node_probs[i]``: q at node i ([n, vocab], rows summing to 1). ``max_depth``: accepted drafts
    at most (SGLang: ``num_speculative_tokens - 1``; default: no limit below the tree's own).
    ``coins`` (one per node) and ``final_coin`` replay the kernel's uniform samples exactly (the
    bonus is then the first token whose cumulative residual mass exceeds ``final_coin`` times the
    residual total); otherwise they are drawn from ``generator``.
    """
    _, first_child, next_sibling = tree_links(mask)
    limit = len(candidates) if max_depth is None else max_depth
    node, path = 0, [0]
    rejected: list[int] = []
    while len(path) - 1 < limit:
        coin = coins[node] if coins is not None else float(torch.rand((), generator=generator))
        running, accepted, rejected = 0.0, -1, []
        child = first_child[node]
        while child != -1:
            mass = float(node_probs[node, candidates[child]])
            running += mass
            if mass > 0.0 and coin < running:
                accepted = child
                break
            rejected.append(candidates[child])
            child = next_sibling[child]
        if accepted < 0:
            break
        node = accepted
        path.append(node)
        rejected = []
    residual = node_probs[node].clone()
    if rejected:
        residual[torch.tensor(rejected)] = 0.0
    if float(residual.sum()) <= 0.0:  # every token with mass was drafted and rejected: cannot happen exactly
        residual = node_probs[node].clone()
    if final_coin is None:
        return path, int(torch.multinomial(residual, 1, generator=generator))
    cumulative = residual.double().cumsum(0)
    bonus = int(torch.searchsorted(cumulative, final_coin * cumulative[-1], right=True))
    return path, min(bonus, residual.numel() - 1)


def renormalized_sequential(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """SGLang's CUDA verify probabilities: top-k renormalised, then top-p on the renormalised result
    (plain decoding applies both to the original distribution at once, and also min_p)."""
    out = probs.clone()
    if top_k < probs.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = torch.where(out >= kth, out, torch.zeros_like(out))
        out = out / out.sum(-1, keepdim=True)
    if top_p < 1.0:
        sorted_probs, order = out.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = torch.where(before > top_p, torch.zeros_like(sorted_probs), sorted_probs)
        out = torch.zeros_like(out).scatter(-1, order, sorted_probs)
        out = out / out.sum(-1, keepdim=True)
    return out

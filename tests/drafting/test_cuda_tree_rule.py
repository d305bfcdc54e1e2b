"""The worker's draft trees under SGLang's CUDA acceptance rule (a pure-torch reference, on CPU).

A small Markov "model" (next-token distribution depends on the last token; token 0 is favoured, the
padding case) generates sibling paths in lock-step: each step the real consensus drafter proposes a
tree per path, the reference rule verifies it, and the accepted tokens plus the bonus are
committed. The emitted tokens must be distributed as plain sampling from the same chain; with the
old padding (duplicate token-0 children of the root) forced back, the same test must see the skew.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.testing.cuda_tree_reference import reachable_duplicate_siblings, verify_tree

VOCAB = 10
LENGTH = 6  # emitted tokens compared per path
PROMPT = [3, 4, 5, 3, 4]


def _chain(seed: int = 0) -> torch.Tensor:
    """q(. | last token): peaked rows (drafts get accepted), token 0 favoured everywhere."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(VOCAB, VOCAB, generator=g)
    logits[:, 0] += 1.5
    return torch.softmax(logits, dim=-1)


def _reattach_padding(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The old layout: padding rows (token 0, no ancestor) hang off the root as extra children."""
    mask = mask.copy()
    for i in range(1, mask.shape[0]):
        if not mask[i, :i].any():
            mask[i, 0] = True
    return mask


def _speculative_paths(chain: torch.Tensor, groups: int, siblings: int, width: int, duplicates: bool,
                       seed: int) -> list[list[int]]:
    torch.manual_seed(seed)
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width, use_global=False, linger_groups=0))
    out = []
    found_duplicates = 0
    for g in range(groups):
        rids = [(g, s) for s in range(siblings)]
        emitted = {rid: [] for rid in rids}
        for rid in rids:
            drafter.add(rid, g, PROMPT)
        while any(len(v) < LENGTH for v in emitted.values()):
            live = [rid for rid in rids if len(emitted[rid]) < LENGTH]
            tokens, masks = drafter.propose(live)
            for rid, row, mask in zip(live, tokens, masks):
                if duplicates:
                    mask = _reattach_padding(row, mask)
                found_duplicates += reachable_duplicate_siblings(row, mask)
                node_probs = chain[torch.as_tensor(row)]
                path, bonus = verify_tree(row.tolist(), torch.as_tensor(mask), node_probs)
                new = [int(row[i]) for i in path[1:]] + [bonus]
                emitted[rid] += new
                drafter.extend(rid, new)
        for rid in rids:
            drafter.remove(rid)
            out.append(emitted[rid][:LENGTH])
    assert (found_duplicates > 0) == duplicates, found_duplicates
    return out


def _plain_paths(chain: torch.Tensor, count: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        last, path = PROMPT[-1], []
        for _ in range(LENGTH):
            last = int(torch.multinomial(chain[last], 1, generator=g))
            path.append(last)
        out.append(path)
    return out


def _min_pvalue(a: list[list[int]], b: list[list[int]]) -> float:
    """Bonferroni-corrected chi-square two-sample tests of each position's token histogram."""
    pvalues = []
    for pos in range(LENGTH):
        ca, cb = Counter(p[pos] for p in a), Counter(p[pos] for p in b)
        tokens = sorted(set(ca) | set(cb))
        table = np.array([[ca[t] for t in tokens], [cb[t] for t in tokens]])
        table = table[:, table.sum(0) >= 5]
        pvalues.append(stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0)
    return min(pvalues) * len(pvalues)


@pytest.mark.parametrize("width", [4, 8])
def test_worker_trees_sample_exactly_under_the_cuda_rule(width):
    chain = _chain()
    speculative = _speculative_paths(chain, groups=300, siblings=3, width=width, duplicates=False, seed=1)
    plain = _plain_paths(chain, len(speculative), seed=2)
    assert _min_pvalue(speculative, plain) > 1e-3


def test_duplicate_padding_skews_the_cuda_rule():
    chain = _chain()
    speculative = _speculative_paths(chain, groups=300, siblings=3, width=8, duplicates=True, seed=1)
    plain = _plain_paths(chain, len(speculative), seed=2)
    assert _min_pvalue(speculative, plain) < 1e-6


def test_no_reachable_duplicate_siblings_on_unseen_streams():
    """Random streams (not the project's data): every proposed tree of every width is exact."""
    rng = random.Random(7)
    for width in (2, 3, 4, 8, 16):
        drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width, max_branch=rng.choice([1, 2, 4, 8])))
        for g in range(20):
            rids = [(g, s) for s in range(rng.randint(1, 5))]
            prompt = [rng.randrange(6) for _ in range(rng.randint(1, 30))]
            for rid in rids:
                drafter.add(rid, g, prompt)
            for _ in range(15):
                for rid in rids:
                    drafter.extend(rid, [rng.randrange(6) for _ in range(rng.randint(1, 3))])
                tokens, masks = drafter.propose(rids)
                for row, mask in zip(tokens, masks):
                    assert reachable_duplicate_siblings(row, mask) == 0
            for rid in rids:
                drafter.remove(rid)


# --- sampling parameters SGLang's CUDA verify gets wrong ---------------------------------------

def test_cuda_verify_probabilities_differ_from_plain_sampling_for_top_k_with_top_p():
    """SGLang's CUDA verify renormalises top-k, then top-p; plain decoding filters both (and min_p)
    on the original distribution. With both set, the tree rule samples from the wrong distribution."""
    from sgl_consensus.cpu.sampling_verify import filtered_probs
    from sgl_consensus.testing.cuda_tree_reference import renormalized_sequential

    probs = _chain(3)
    logits = probs.log()
    ones = torch.ones(VOCAB)

    def plain(top_k: int, top_p: float) -> torch.Tensor:
        weights, ids = filtered_probs(logits, ones, torch.full((VOCAB,), top_k), torch.full((VOCAB,), top_p), None)
        dense = torch.zeros_like(probs).scatter(-1, ids, weights)
        return dense / dense.sum(-1, keepdim=True)

    def distance(a, b):
        return float((a - b).abs().sum(-1).max() / 2)

    assert distance(renormalized_sequential(probs, 4, 0.8), plain(4, 0.8)) > 0.05  # both: inexact
    assert distance(renormalized_sequential(probs, 4, 1.0), plain(4, 1.0)) < 1e-5  # top-k alone: exact
    assert distance(renormalized_sequential(probs, VOCAB, 0.8), plain(VOCAB, 0.8)) < 1e-5  # top-p alone

"""Model-informed nodes: the target's earlier top successors fill the tree where siblings are silent."""

from __future__ import annotations

import random

import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.drafting.successors import SuccessorTable, add_model_nodes
from sgl_consensus.drafting.tree import MODEL, Candidates


def _root_only(token: int) -> Candidates:
    return Candidates(tokens=[token], parents=[-1], depths=[0], labels=[-1], scores=[1.0])


def test_a_chain_of_confident_successors_becomes_a_chain():
    table = SuccessorTable()
    table.update([5, 6, 7], [[6, 9], [7, 9], [8, 9]], [[0.9, 0.05], [0.8, 0.1], [0.7, 0.2]])
    cands = add_model_nodes(_root_only(5), table, size=4, weight=1.0)
    assert cands.tokens == [5, 6, 7, 8] and cands.parents == [-1, 0, 1, 2]
    assert cands.labels[1:] == [MODEL] * 3
    assert cands.scores[3] == pytest.approx(0.9 * 0.8 * 0.7)


def test_weight_zero_or_a_full_tree_adds_nothing():
    table = SuccessorTable()
    table.update([5], [[6]], [[0.9]])
    root = _root_only(5)
    assert add_model_nodes(root, table, size=4, weight=0.0) is root
    assert add_model_nodes(root, table, size=1, weight=1.0) is root


@pytest.mark.parametrize("seed", range(20))
def test_merged_trees_stay_best_first_trees_without_duplicate_siblings(seed):
    rng = random.Random(seed)
    d = ConsensusDrafter(DraftConfig(num_draft_tokens=8, model_weight=rng.choice([0.3, 1.0])))
    prompt = [rng.randrange(12) for _ in range(30)]
    d.add("a", "g", prompt)
    d.add("b", "g", prompt)
    for rid in ("a", "b"):
        d.extend(rid, [rng.randrange(12) for _ in range(rng.randrange(1, 20))])
    for _ in range(3):
        inputs = [rng.randrange(12) for _ in range(8)]
        succ = [rng.sample(range(12), 2) for _ in inputs]
        d.observe_successors("a", inputs, succ, [[0.6, 0.3] for _ in inputs])
    cands = d.propose_candidates(["a"])[0]
    n = len(cands)
    assert n <= 8 and cands.parents[0] == -1
    for i in range(1, n):
        assert 0 <= cands.parents[i] < i
        assert cands.scores[i] <= cands.scores[cands.parents[i]] + 1e-12
        assert cands.depths[i] == cands.depths[cands.parents[i]] + 1
    assert cands.scores[1:] == sorted(cands.scores[1:], reverse=True)
    siblings = [(cands.parents[i], cands.tokens[i]) for i in range(1, n)]
    assert len(siblings) == len(set(siblings))
    tokens, mask = d.propose(["a", "b"])
    assert tokens.shape == (2, 8) and mask.shape == (2, 8, 8)
    assert d.stats()["draft_nodes_model"] == int(d.last_proposal_labels()[:, 3].sum())


def test_model_nodes_fill_a_silent_tree():
    d = ConsensusDrafter(DraftConfig(num_draft_tokens=4, model_weight=1.0, use_global=False))
    d.add("a", None, [1, 2, 3])
    d.observe_successors("a", [3], [[40, 41]], [[0.8, 0.1]])
    cands = d.propose_candidates(["a"])[0]
    assert 40 in cands.tokens
    tokens, _ = d.propose(["a"])
    assert 40 in tokens[0].tolist() and d.last_proposal_labels()[0, 3] >= 1


def test_model_settings_are_validated():
    with pytest.raises(ValueError, match="model_weight"):
        DraftConfig(model_weight=1.5)
    with pytest.raises(ValueError, match="model_topk"):
        DraftConfig(model_topk=0)

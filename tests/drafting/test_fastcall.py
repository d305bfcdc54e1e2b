"""The per-step calls through `fastcall.c` (a CPython extension) against the same calls through
ctypes: identical writes, proposals, layouts and outcomes; wrong arrays refused by name; without
the extension (no headers) the core runs through ctypes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.drafting.native import NativeCore, binding, build


def _fast_module():
    module = binding.load_fastcall()
    if module is None:  # no headers on this machine: the ctypes path is all there is (tested below)
        pytest.skip(f"fastcall not built here: {binding.fastcall_unavailable}")
    return module


def _drafters(config: DraftConfig) -> tuple[ConsensusDrafter, ConsensusDrafter]:
    fast, slow = NativeCore(config), NativeCore(config, fastcall=False)
    assert fast._fast is not None and slow._fast is None
    assert fast.calls == "fastcall" and slow.calls.startswith("ctypes")
    return ConsensusDrafter(config, core=fast), ConsensusDrafter(config, core=slow)


@pytest.mark.parametrize("seed", range(4))
def test_fast_calls_write_propose_and_lay_out_exactly_as_ctypes(seed: int) -> None:
    """Batches of verify rows (with and without logprobs), proposals (with and without rank
    weights), layouts (with and without budgets), outcomes: every output identical through both paths."""
    _fast_module()
    rng = random.Random(seed)
    config = DraftConfig(num_draft_tokens=rng.choice([4, 8, 12]))
    fast, slow = _drafters(config)
    vocab = rng.choice([5, 50])
    rids = [f"r{i}" for i in range(rng.randint(3, 12))]
    for i, rid in enumerate(rids):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 20))]
        for drafter in (fast, slow):
            drafter.add(rid, f"g{i % 3}", prompt)
    n = config.num_draft_tokens
    for _ in range(30):
        batch = rng.sample(rids, rng.randint(1, len(rids)))
        stride = rng.randint(1, 5)
        tokens = np.array([[rng.randrange(vocab) for _ in range(stride)] for _ in batch], dtype=np.int64)
        lens = np.array([rng.randint(0, stride) for _ in batch], dtype=np.int64)
        logprobs = counts = None
        if rng.random() < 0.6:
            logprobs = -3 * np.array([[rng.random() for _ in range(stride)] for _ in batch])
            counts = np.minimum(lens, rng.randint(0, stride))
        written = [d.extend_rows(batch, tokens, lens, logprobs, counts) for d in (fast, slow)]
        assert written[0].with_prob == written[1].with_prob and written[0].tokens == written[1].tokens
        assert written[0].prob_sum == written[1].prob_sum
        np.testing.assert_array_equal(written[0].last_tokens, written[1].last_tokens)
        weights = None
        if rng.random() < 0.5:
            edges = np.sort(np.array([rng.random() for _ in range(rng.randint(0, 4))]))
            weights = (edges, np.array([rng.random() for _ in range(len(edges) + 1)]),
                       np.array([rng.random() for _ in range(len(edges) + 1)]))
        proposals = [d.propose_candidates(batch, weights) for d in (fast, slow)]
        np.testing.assert_array_equal(proposals[0].block, proposals[1].block)
        np.testing.assert_array_equal(proposals[0].scores, proposals[1].scores)
        if weights is not None:
            np.testing.assert_array_equal(proposals[0].rank_sums, proposals[1].rank_sums)
        width = rng.randint(1, n)
        budgets = [rng.randint(1, width) for _ in batch] if rng.random() < 0.3 else None
        fast_rows, fast_mask = fast.layout(proposals[0], width, budgets)
        slow_rows, slow_mask = slow.layout(proposals[1], width, budgets)
        np.testing.assert_array_equal(fast_rows, slow_rows)
        np.testing.assert_array_equal(fast_mask, slow_mask)
        np.testing.assert_array_equal(fast.last_proposal_labels(), slow.last_proposal_labels())
        # what the width policy learns after the launch: the nodes the next committed tokens walk through
        committed = np.array([[rng.randrange(vocab) for _ in range(stride)] for _ in batch], dtype=np.int64)
        counts_next = np.array([rng.randint(0, stride) for _ in batch], dtype=np.int64)
        learned = [drafter.outcomes(candidates, width, committed, counts_next)
                   for drafter, candidates in zip((fast, slow), proposals)]
        for got, want in zip(*learned):
            np.testing.assert_array_equal(got, want)
    assert fast.stats() == slow.stats()


def test_a_bad_row_through_the_fast_call_is_named_and_writes_nothing() -> None:
    """The core's own value checks (a token out of range) reach the caller as through ctypes."""
    _fast_module()
    fast, slow = _drafters(DraftConfig())
    for drafter in (fast, slow):
        drafter.add("a", "g", [1, 2, 3])
        drafter.add("b", "g", [1, 2, 3])
    tokens = np.array([[4, 5], [6, -7]], dtype=np.int64)
    messages = []
    for drafter in (fast, slow):
        with pytest.raises(ValueError) as error:
            drafter.extend_rows(["a", "b"], tokens, np.array([2, 2]))
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "'b'" in messages[0] and "-7" in messages[0]
    assert fast.last_token("a") == 3 and fast.stats() == slow.stats()


def test_the_fast_calls_refuse_wrong_arrays_by_name() -> None:
    """Called directly with arrays the core cannot read, each function raises a one-line error
    naming the argument, and calls nothing."""
    module = _fast_module()
    core = NativeCore(DraftConfig(num_draft_tokens=4))
    extend = core._extend_rows_function
    requests = np.zeros(2, dtype=np.int32)
    tokens, lens = np.zeros((2, 3), dtype=np.int64), np.zeros(2, dtype=np.int64)
    out, info, last = np.zeros(1), np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int64)
    def args(**changed):
        given = {"function": extend, "core": core._pointer, "requests": requests, "tokens": tokens, "lens": lens,
                 "logprobs": None, "counts": None, "out": out, "info": info, "last": last} | changed
        return tuple(given.values())

    cases = [
        (args(requests=requests.astype(np.int64)), TypeError, "requests must be a C-ordered array of int32"),
        (args(tokens=tokens[:1]), ValueError, "tokens must have 2 rows"),
        (args(logprobs=np.zeros((2, 3))), ValueError, "logprobs and counts go together"),
        (args(tokens=tokens.T), TypeError, "tokens must be a C-ordered"),
        (args(lens=[0, 0]), TypeError, "lens must be a NumPy array"),
        (args(info=info[:2]), ValueError, "info has shape"),
        (args(core=0), ValueError, "core is a null pointer"),
    ]
    for args, kind, message in cases:
        with pytest.raises(kind, match=message):
            module.extend_rows(*args)
    with pytest.raises(TypeError, match="takes 10 arguments, got 2"):
        module.extend_rows(extend, core._pointer)
    block, scores = np.zeros(4 * 2 * 4 + 2, dtype=np.int32), np.zeros(8)
    readonly = block.copy()
    readonly.flags.writeable = False
    propose = core._propose_function
    with pytest.raises(TypeError, match="block must be a C-ordered, writable array of int32"):
        module.propose(propose, core._pointer, requests, readonly, scores, 4, None, None, None, None)
    with pytest.raises(ValueError, match="scores has shape"):
        module.propose(propose, core._pointer, requests, block, scores[:7], 4, None, None, None, None)
    with pytest.raises(ValueError, match="intercepts has shape"):
        module.propose(propose, core._pointer, requests, block, scores, 4, np.zeros(2), np.zeros(2), np.zeros(3),
                       np.zeros(3))
    layout = binding._function(binding.load(), "sgc_layout")
    mask, rows = np.zeros(2 * 3 * 3, dtype=np.bool_), np.zeros(2 * 3 + 3 * 4, dtype=np.int64)
    with pytest.raises(ValueError, match="need 1 <= width <= n"):
        module.layout(layout, block, 4, 5, None, rows, mask)
    with pytest.raises(ValueError, match="block has a size no batch has"):
        module.layout(layout, block[:-1], 4, 3, None, rows, mask)
    with pytest.raises(ValueError, match="budgets has shape"):
        module.layout(layout, block, 4, 3, np.ones(3, dtype=np.int32), rows, mask)
    outcomes = binding._function(binding.load(), "sgc_outcomes")
    committed, picked = np.zeros((2, 3), dtype=np.int64), np.zeros(8, dtype=np.int32)
    learned = (np.zeros(8), np.zeros(8, dtype=np.bool_))
    with pytest.raises(ValueError, match="tokens must have 2 rows"):
        module.outcomes(outcomes, block, scores, 4, 3, committed[:1], lens, picked, *learned)
    with pytest.raises(TypeError, match="accepted must be a C-ordered, writable array of bool"):
        module.outcomes(outcomes, block, scores, 4, 3, committed, lens, picked, learned[0], np.zeros(8))
    with pytest.raises(ValueError, match="block has a size no batch has"):
        module.outcomes(outcomes, block[:-1], scores, 4, 3, committed, lens, picked, *learned)


def test_where_the_headers_are_found_the_fast_calls_are_used() -> None:
    try:
        build.fastcall_headers()
    except build.NativeCoreUnavailable:
        pytest.skip("no Python or NumPy headers here (the next test covers this case)")
    assert NativeCore(DraftConfig())._fast is not None


def test_without_headers_the_core_calls_through_ctypes(monkeypatch) -> None:
    """No Python.h: the extension is not built, the reason is kept, and the core drafts through
    ctypes as it would through the extension."""
    def no_headers(force: bool = False):
        raise build.NativeCoreUnavailable("no Python.h in /nowhere (install this Python's development headers)")

    monkeypatch.setattr(binding, "_fastcall", None)
    monkeypatch.setattr(binding, "fastcall_unavailable", None)
    monkeypatch.setattr(binding, "build_fastcall", no_headers)
    drafter = ConsensusDrafter(DraftConfig(), core=NativeCore(DraftConfig()))
    assert drafter.core._fast is None and "no Python.h" in binding.fastcall_unavailable
    assert drafter.core.calls == "ctypes (no Python.h in /nowhere (install this Python's development headers))"
    drafter.add("a", "g", [1, 2, 3, 1, 2])
    drafter.extend_rows(["a"], np.array([[3, 1]], dtype=np.int64), np.array([2], dtype=np.int64))
    candidates = drafter.propose_candidates(["a"])
    assert candidates.tokens[0, 0] == 1 and candidates.lengths[0] > 1  # 1 -> 2 -> 3 seen: drafts follow
    tokens, mask = drafter.layout(candidates, 4)
    assert tokens.shape == (1, 4) and mask.shape == (1, 4, 4)


@pytest.mark.parametrize("core", ["python", "native", "native-ctypes"])
def test_rank_sums_of_a_single_linear_piece(core: str) -> None:
    """Rank weights with no edges (one linear piece, weight = a + b * score) are summed like any
    other (the ctypes path once passed no address for the empty edges and summed nothing)."""
    config = DraftConfig(num_draft_tokens=6)
    chosen = {"python": "python", "native": "native", "native-ctypes": NativeCore(config, fastcall=False)}[core]
    drafter = ConsensusDrafter(config, core=chosen)
    drafter.add("a", "g", [1, 2, 3, 1, 2, 3, 1, 2])
    drafter.add("b", "g", [1, 2, 4, 1, 2, 4, 1, 2])
    intercepts, slopes = np.array([0.25]), np.array([0.5])
    candidates = drafter.propose_candidates(["a", "b"], (np.zeros(0), intercepts, slopes))
    scores = candidates.scores[:, 1:]
    assert (scores > 0).any()
    expected = (0.25 + 0.5 * scores).sum(axis=0)  # every rank of every row, padding (score 0.0) included
    np.testing.assert_allclose(candidates.rank_sums, expected, rtol=1e-12)

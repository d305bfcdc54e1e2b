"""The native (C++) draft core against the Python reference: identical drafts, scores and state.

Both drafters get the same random life: requests of several groups and tenants added, extended
(with and without logprobs), removed (groups then linger, go to the global corpus, merge in
steps and rotate generations), proposals at random widths and budgets, maintenance. Every
proposal must be identical: candidate arrays (scores bit for bit), rows, masks, label counts,
and the drafters' stats.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.drafting.native import NativeCore

CONFIGS = {
    "defaults": {},
    "wide_nodes_small_global": {"global_max_nodes": 400, "max_pending_merges": 2, "merge_visits_per_token": 8},
    "frequency_only_fuzzy": {"alpha": 0.0, "fuzzy_max_edits": 2, "max_branch": 2},
    "probability_only_deep": {"alpha": 1.0, "max_match_len": 3, "num_draft_tokens": 16, "max_branch": 6},
    "no_siblings_min_score": {"use_siblings": False, "min_path_score": 0.05},
    "no_own_no_global": {"use_own_history": False, "use_global": False, "linger_groups": 0},
    "tiny_group_cap": {"group_max_nodes": 300, "global_min_count": 1},
}


def _pair(overrides: dict) -> tuple[ConsensusDrafter, ConsensusDrafter]:
    config = DraftConfig(**overrides)
    return ConsensusDrafter(config, core="python"), ConsensusDrafter(config, core="native")


def _assert_same_proposal(reference: ConsensusDrafter, native: ConsensusDrafter, rids: list, rng: random.Random):
    want = reference.propose_candidates(rids)
    got = native.propose_candidates(rids)
    for field in ("lengths", "tokens", "parents", "depths", "labels", "scores"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    n = reference.config.num_draft_tokens
    width = rng.randint(1, n)
    budgets = [rng.randint(1, width) for _ in rids] if rng.random() < 0.3 else None
    rows_ref, mask_ref = reference.layout(want, width, budgets)
    rows_nat, mask_nat = native.layout(got, width, budgets)
    np.testing.assert_array_equal(rows_nat, rows_ref)
    np.testing.assert_array_equal(mask_nat, mask_ref)
    assert native.last_proposal_sources() == reference.last_proposal_sources()


def _life(overrides: dict, seed: int, steps: int = 120) -> int:
    """Drive both drafters through one random life; the number of proposals compared."""
    rng = random.Random(seed)
    reference, native = _pair(overrides)
    vocab = rng.choice([6, 40, 300])  # small vocabularies make wide (> 16 children) trie nodes
    prompts = {g: [rng.randrange(vocab) for _ in range(rng.randint(1, 30))] for g in range(6)}
    live: dict[str, tuple[int, object]] = {}
    next_id = 0
    compared = 0
    for _ in range(steps):
        action = rng.random()
        if action < 0.15 or len(live) < 2:
            group = rng.randrange(6)
            tenant = rng.choice([None, "a", "b"])
            rid = f"r{next_id}"
            next_id += 1
            prompt = prompts[group] if rng.random() < 0.8 else [rng.randrange(vocab) for _ in range(5)]
            for drafter in (reference, native):
                drafter.add(rid, None if group == 5 else f"g{group}", prompt, tenant=tenant)
            live[rid] = (group, tenant)
        elif action < 0.25:
            rid = rng.choice(sorted(live))
            del live[rid]
            for drafter in (reference, native):
                drafter.remove(rid)
        elif action < 0.3:
            reference.maintain()
            native.maintain()
        else:
            rids = sorted(live)
            for rid in rids:
                group = live[rid][0]
                base = prompts[group]
                length = rng.randint(0, 4)
                # Siblings mostly repeat one another (shifted copies of the prompt plus noise).
                tokens = [base[(i + rng.randrange(3)) % len(base)] if rng.random() < 0.7 else rng.randrange(vocab)
                          for i in range(length)]
                logprobs = [-rng.random() * 3 for _ in tokens] if tokens and rng.random() < 0.6 else None
                for drafter in (reference, native):
                    drafter.extend(rid, tokens, logprobs)
            rng.shuffle(rids)
            _assert_same_proposal(reference, native, rids, rng)
            compared += 1
            native.maintain()
            reference.maintain()
        assert native.stats() == reference.stats()
    for rid in sorted(live):
        assert native.last_token(rid) == reference.last_token(rid)
    return compared


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", range(6))
def test_native_core_drafts_exactly_as_the_python_reference(name: str, seed: int) -> None:
    assert _life(CONFIGS[name], seed) > 20


def test_native_core_matches_on_real_sibling_streams() -> None:
    """Real text (SmolLM2 and the tiny reasoner's recorded streams, with logprobs), lock-step."""
    from tests.drafting.helpers import load_streams

    problems = []
    for name in ("sibling_streams_T07", "smollm2_streams_T07"):
        for problem in load_streams(name)["problems"][:3]:
            logprobs = problem.get("logprobs") or [None] * len(problem["samples"])
            problems.append((problem["prompt_ids"], list(zip(problem["samples"], logprobs))))
    reference, native = _pair({})
    rng = random.Random(0)
    for p, (prompt, outputs) in enumerate(problems):
        rids = [f"p{p}.{i}" for i in range(len(outputs))]
        for drafter in (reference, native):
            for rid in rids:
                drafter.add(rid, f"g{p}", prompt)
        longest = max(len(tokens) for tokens, _ in outputs)
        for position in range(0, longest, 3):
            running = [rid for rid, (tokens, _) in zip(rids, outputs) if position < len(tokens)]
            for rid, (tokens, logprobs) in zip(rids, outputs):
                if position < len(tokens):
                    chunk = slice(position, position + 3)
                    for drafter in (reference, native):
                        drafter.extend(rid, tokens[chunk], None if logprobs is None else logprobs[chunk])
            if running:
                _assert_same_proposal(reference, native, running, rng)
        for drafter in (reference, native):
            for rid in rids:
                drafter.remove(rid)
            drafter.maintain()
        assert native.stats() == reference.stats()


def test_native_core_is_the_default_where_it_builds() -> None:
    assert isinstance(ConsensusDrafter().core, NativeCore)


def test_unknown_core_name_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"core must be one of \['auto', 'native', 'python'\], got 'fast'"):
        ConsensusDrafter(core="fast")
    with pytest.raises(TypeError, match=r"core must be one of \['auto', 'native', 'python'\] or a DraftCore, got int"):
        ConsensusDrafter(core=5)


def test_a_library_of_another_abi_or_not_of_the_core_is_named_not_loaded(tmp_path) -> None:
    """`load_library` checks the ABI before it declares any signature: a build of another version
    (which may lack functions) and a library that is no build of core.cpp are one-line errors."""
    import subprocess

    from sgl_consensus.drafting.native import binding, build

    for name, source, message in (
            ("older", "extern \"C\" int sgc_abi_version() { return 1; }\n", r"has ABI 1, expected \d+"),
            ("other", "extern \"C\" int something_else() { return 0; }\n", "is not a build of core.cpp")):
        path = tmp_path / f"{name}.cpp"
        path.write_text(source)
        library = tmp_path / f"{name}.so"
        subprocess.run([build.compiler(), "-shared", "-fPIC", str(path), "-o", str(library)], check=True)
        with pytest.raises(build.NativeCoreUnavailable, match=message):
            binding.load_library(library)


def test_a_core_instance_is_used_as_given() -> None:
    """A caller's core (an instrumented one, as the replay benchmark records calls with) drafts."""
    config = DraftConfig(num_draft_tokens=4)
    core = NativeCore(config)
    drafter = ConsensusDrafter(config, core=core)
    assert drafter.core is core
    drafter.add("a", "g", [1, 2, 3])
    drafter.add("b", "g", [1, 2, 3])
    drafter.extend("a", [4, 5, 6, 4, 5])
    tokens, _ = drafter.propose(["b"])
    assert tokens[0, 1:].tolist() == [4, 5, 6]


def test_an_only_child_is_found_before_and_after_it_gains_siblings() -> None:
    """Only children are reached through their parent, the children of wider nodes through the edge
    map: a node that goes from one child to several keeps every child findable, in both cores."""
    config = DraftConfig(num_draft_tokens=6, max_match_len=2, min_match_len=1)
    drafts = {}
    for name in ("native", "python"):
        drafter = ConsensusDrafter(config, core=name)
        drafter.add("a", "g", [9])
        drafter.add("b", "g", [9])
        drafter.extend("a", [1, 2, 7, 1, 2, 8, 1, 3, 1, 2, 7, 1, 4])  # after [1]: 2, 2, 3, 2, 4
        drafter.extend("b", [5, 1])
        drafts[name] = drafter.propose(["b"])
    assert np.array_equal(drafts["native"][0], drafts["python"][0])
    assert np.array_equal(drafts["native"][1], drafts["python"][1])
    tokens = drafts["native"][0][0].tolist()
    assert tokens[1] == 2 and {3, 4} <= set(tokens[1:])  # the most frequent first, the rare ones too



@pytest.mark.parametrize("core", ["native", "python"])
def test_extend_many_equals_one_extend_per_request(core: str) -> None:
    """The batch call (logprobs covering each row's last tokens) leaves the drafter exactly as
    per-request calls do: tokens without logprobs first, then those with."""
    rng = random.Random(3)
    one, many = (ConsensusDrafter(DraftConfig(), core=core) for _ in range(2))
    rids = [f"r{i}" for i in range(6)]
    for drafter in (one, many):
        for i, rid in enumerate(rids):
            drafter.add(rid, f"g{i % 2}", [1, 2, 3, 4, 5])
    for _ in range(40):
        tokens = [[rng.randrange(8) for _ in range(rng.randint(0, 3))] for _ in rids]
        logprobs = [None if not row or rng.random() < 0.3 else [-rng.random() for _ in range(rng.randint(1, len(row)))]
                    for row in tokens]
        many.extend_many(rids, tokens, logprobs)
        for rid, row, lps in zip(rids, tokens, logprobs):
            known = len(lps) if lps else 0
            one.extend(rid, row[:len(row) - known])
            if known:
                one.extend(rid, row[len(row) - known:], lps)
        a, b = one.propose_candidates(rids), many.propose_candidates(rids)
        for field in ("lengths", "tokens", "parents", "scores"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
        assert [many.last_token(r) for r in rids] == [one.last_token(r) for r in rids]
    assert many.stats() == one.stats()


@pytest.mark.parametrize("core", ["native", "python"])
def test_flat_probabilities_equal_the_same_logprob_rows(core: str) -> None:
    """The worker's form (one probability per token, flat, NaN = unknown) writes what the
    per-row logprobs write: the same drafts, bit for bit."""
    rng = random.Random(5)
    rows, flat = (ConsensusDrafter(DraftConfig(), core=core) for _ in range(2))
    rids = [f"r{i}" for i in range(5)]
    for drafter in (rows, flat):
        for i, rid in enumerate(rids):
            drafter.add(rid, "g", [1, 2, 3])
    for _ in range(30):
        tokens = [[rng.randrange(6) for _ in range(rng.randint(0, 3))] for _ in rids]
        logprobs = [None if not row or rng.random() < 0.3 else [-rng.random() for _ in range(rng.randint(1, len(row)))]
                    for row in tokens]
        probs = [p for row, lps in zip(tokens, logprobs)
                 for p in [math.nan] * (len(row) - len(lps or ())) + [math.exp(v) for v in lps or ()]]
        rows.extend_many(rids, tokens, logprobs)
        flat.extend_many(rids, tokens, probabilities=np.array(probs))
        a, b = rows.propose_candidates(rids), flat.propose_candidates(rids)
        for field in ("lengths", "tokens", "parents", "scores"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))


def test_flat_probabilities_name_the_request_and_value() -> None:
    drafter = ConsensusDrafter(DraftConfig())
    drafter.add("a", None, [1, 2])
    drafter.add("b", None, [1, 2])
    with pytest.raises(ValueError, match=r"request 'b': probabilities must be in \[0, 1\] .*got 1\.5"):
        drafter.extend_many(["a", "b"], [[3], [4, 5]], probabilities=np.array([0.5, np.nan, 1.5]))
    with pytest.raises(ValueError, match=r"one value per token \(3\), got shape \(2,\)"):
        drafter.extend_many(["a", "b"], [[3], [4, 5]], probabilities=np.array([0.5, 0.5]))
    with pytest.raises(TypeError, match="probabilities must be numbers, got \"\\['x'\\]\""):
        drafter.extend_many(["a"], [[3]], probabilities=["x"])
    with pytest.raises(ValueError, match="logprob_lists or probabilities, not both"):
        drafter.extend_many(["a"], [[3]], [[-0.1]], probabilities=np.array([0.5]))


def test_extend_many_names_the_request_with_bad_input() -> None:
    drafter = ConsensusDrafter(DraftConfig())
    drafter.add("a", None, [1, 2])
    drafter.add("b", None, [1, 2])
    with pytest.raises(ValueError, match=r"request 'b': logprobs must be <= 0 .*got 0\.5"):
        drafter.extend_many(["a", "b"], [[3], [4]], [[-0.1], [0.5]])
    with pytest.raises(ValueError, match=r"request 'a': got 2 logprobs for 1 tokens"):
        drafter.extend_many(["a", "b"], [[3], [4]], [[-0.1, -0.2], None])
    with pytest.raises(ValueError, match=r"request 'b': token_ids must be in \[0, 2147483647\], got -1"):
        drafter.extend_many(["a", "b"], [[3], [-1]])
    with pytest.raises(KeyError, match="request 'c' is not tracked"):
        drafter.extend_many(["c"], [[3]])


@pytest.mark.parametrize("core", ["native", "python"])
def test_verify_rows_write_what_the_same_logprob_rows_write(core: str) -> None:
    """`extend_rows` (the worker's common step: the verify's token rows, logprob matrix and
    counts) writes what `extend_many` writes with the same rows: the same drafts, bit for bit,
    including rows whose logprobs cannot be used (a NaN, more of them than new tokens), and
    returns each request's last token."""
    rng = random.Random(9)
    rows, flat = (ConsensusDrafter(DraftConfig(), core=core) for _ in range(2))
    rids = [f"r{i}" for i in range(6)]
    for drafter in (rows, flat):
        for i, rid in enumerate(rids):
            drafter.add(rid, f"g{i % 2}", [1, 2, 3])
    stride = 4
    used = 0
    for _ in range(40):
        tokens = [[rng.randrange(6) for _ in range(rng.randint(0, 3))] for _ in rids]
        matrix = np.full((len(rids), stride), np.nan)
        counts = np.zeros(len(rids), dtype=np.int64)
        expected = []
        for i, row in enumerate(tokens):
            counts[i] = rng.randint(0, stride)
            matrix[i, :counts[i]] = [-rng.random() * 3 for _ in range(counts[i])]
            if counts[i] and rng.random() < 0.1:
                matrix[i, rng.randrange(counts[i])] = np.nan  # sanitised logits: the row is not used
            values = matrix[i, :counts[i]].tolist()
            usable = counts[i] <= len(row) and not any(v != v for v in values)
            expected.append(values if usable and values else None)
            used += bool(usable and values)
        rows.extend_many(rids, tokens, expected)
        width = rng.randint(3, 5)  # any row width that holds the rows
        padded = np.array([row + [rng.randrange(9)] * (width - len(row)) for row in tokens], dtype=np.int64)
        lens = np.array([len(row) for row in tokens], dtype=np.int64)
        with_prob, total, last, written = flat.extend_rows(rids, padded, lens, matrix, counts)
        assert last.tolist() == [rows.last_token(r) for r in rids] and written == sum(len(row) for row in tokens)
        assert with_prob == sum(len(v) for v in expected if v)
        assert total == pytest.approx(sum(math.exp(x) for v in expected if v for x in v))
        a, b = rows.propose_candidates(rids), flat.propose_candidates(rids)
        for field in ("lengths", "tokens", "parents", "scores"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
        assert [flat.last_token(r) for r in rids] == [rows.last_token(r) for r in rids]
    assert used > 20, "too few rows with usable logprobs: the comparison would be weak"
    assert flat.stats() == rows.stats()


@pytest.mark.parametrize("core", ["native", "python"])
def test_a_bad_row_batch_is_named_and_writes_nothing(core: str) -> None:
    drafter = ConsensusDrafter(DraftConfig(), core=core)
    for rid in ("a", "b"):
        drafter.add(rid, "g", [1, 2])
    before = drafter.propose_candidates(["a", "b"])
    rows = np.array([[3, 3], [3, -4]])
    with pytest.raises(ValueError, match=r"request 'b': token_ids must be in \[0, 2147483647\], got -4"):
        drafter.extend_rows(["a", "b"], rows, np.array([2, 2]))
    with pytest.raises(ValueError, match=r"request 'a': lens must be in \[0, 2\] \(the row width\), got 3"):
        drafter.extend_rows(["a", "b"], rows, np.array([3, 1]))
    with pytest.raises(ValueError, match=r"request 'b': lens must be in \[0, 2\] \(the row width\), got -1"):
        drafter.extend_rows(["a", "b"], rows, np.array([1, -1]))
    with pytest.raises(ValueError, match=r"request 'b': logprob_counts must be <= the logprobs' stride \(1\), got 2"):
        drafter.extend_rows(["a", "b"], rows, np.array([1, 1]), np.zeros((2, 1)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"logprobs must be a float array of shape \(2, stride\)"):
        drafter.extend_rows(["a", "b"], rows, np.array([1, 1]), np.zeros((3, 2)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="logprobs and logprob_counts go together"):
        drafter.extend_rows(["a", "b"], rows, np.array([1, 1]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"lens must be a NumPy integer array of shape \(2,\)"):
        drafter.extend_rows(["a", "b"], rows, np.array([1]))
    with pytest.raises(TypeError, match=r"tokens must be a NumPy integer array of shape \(2, width\), got list"):
        drafter.extend_rows(["a", "b"], [[3], [3]], np.array([1, 1]))
    after = drafter.propose_candidates(["a", "b"])
    for field in ("lengths", "tokens", "parents", "scores"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))
    assert drafter.stats()["tokens_extended"] == 0 and drafter.last_token("b") == 2


@pytest.mark.parametrize("core", ["native", "python"])
def test_the_core_counts_its_busy_time_per_kind_of_work(core: str) -> None:
    """`DraftCore.busy`: calls and time per kind of work (writes of committed tokens, proposals,
    merge steps), cumulative; a prompt's index is not a write of committed tokens."""
    drafter = ConsensusDrafter(DraftConfig(linger_groups=0, global_min_count=1), core=core)
    busy = drafter.core.busy
    assert busy() == {"writes": (0.0, 0), "proposals": (0.0, 0), "merges": (0.0, 0)}
    for rid in ("a", "b"):
        drafter.add(rid, "g", [1, 2, 3])
    assert busy()["writes"] == (0.0, 0)  # prompts
    drafter.extend_rows(["a", "b"], np.array([[4, 5], [4, 6]]), np.array([2, 1]))
    drafter.propose_candidates(["a", "b"])
    drafter.propose_candidates(["a"])
    after = busy()
    assert after["writes"][1] >= 1 and after["writes"][0] > 0
    assert after["proposals"][1] == 2 and after["proposals"][0] > 0
    assert after["merges"] == (0.0, 0)
    drafter.remove("a")
    drafter.remove("b")  # the group ends: its trie is queued for the tenant's global corpus
    drafter.add("c", "h", [7, 8])
    for _ in range(8):
        drafter.extend("c", [9])
        drafter.propose_candidates(["c"])
        drafter.maintain()  # the merge steps the writes paid for
    final = busy()
    assert final["merges"][1] >= 1 and final["merges"][0] > 0
    assert final["proposals"][1] == 10
    for work, (seconds, calls) in final.items():
        assert seconds >= after[work][0] and calls >= after[work][1], work  # cumulative

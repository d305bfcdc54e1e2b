"""DraftStep: the worker's per-step drafting, driven with stand-in requests (no SGLang).

The accepted-node walk is checked against a direct per-request reference on real candidate trees;
the step against what it must hand SGLang (roots, widths) and what it must learn (outcomes per tenant).
"""

from __future__ import annotations

import random
from array import array
from types import SimpleNamespace

import numpy as np
import pytest

from sgl_consensus.adapter.draft_step import DraftStep, VerifyRecord
from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.adapter.request_tracker import RequestTracker
from sgl_consensus.adaptive import TenantWidthPolicies
from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.grouping import SiblingGrouper


def reference_accepted(tokens, parents, size, committed) -> set[int]:
    """The walk, one request at a time: the first node (by index) with that parent and token."""
    children: dict[tuple[int, int], int] = {}
    for i in range(1, size):
        children.setdefault((parents[i], tokens[i]), i)
    node, accepted = 0, set()
    for token in committed:
        node = children.get((node, token), -1)
        if node < 0:
            break
        accepted.add(node)
    return accepted


def _candidates(seed: int, core: str = "python", paths: int = 6, width: int = 8):
    """Real candidate trees: siblings sharing a small vocabulary, so trees branch."""
    rng = random.Random(seed)
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width), core=core)
    rids = [f"r{i}" for i in range(paths)]
    for rid in rids:
        drafter.add(rid, "g", [1, 2, 3])
    for _ in range(30):
        for rid in rids:
            drafter.extend(rid, [rng.randrange(4, 9)])
    return drafter, drafter.propose_candidates(rids), rng


@pytest.mark.parametrize("core", ["python", "native"])
@pytest.mark.parametrize("seed", range(8))
def test_accepted_nodes_match_the_per_request_walk(seed, core):
    drafter, candidates, rng = _candidates(seed, core)
    width = rng.choice([2, 4, 8])
    sizes = np.minimum(candidates.lengths, width)
    tokens, parents = candidates.tokens.tolist(), candidates.parents.tolist()
    committed = []
    for b in range(len(sizes)):  # half follow a path of the tree (then stray), half are random
        if rng.random() < 0.5 and sizes[b] > 1:
            node = rng.randrange(1, int(sizes[b]))
            path = []
            while node > 0:
                path.append(tokens[b][node])
                node = parents[b][node]
            committed.append(path[::-1] + [rng.randrange(4, 9)])
        else:
            committed.append([rng.randrange(4, 9) for _ in range(rng.randrange(0, 4))])
    mask = drafter.accepted(candidates, width, committed)
    for b in range(len(sizes)):
        assert set(np.flatnonzero(mask[b]).tolist()) == reference_accepted(tokens[b], parents[b], int(sizes[b]),
                                                                           committed[b])
    assert mask.any(), "no row walked into its tree: the check above would be vacuous"


@pytest.mark.parametrize("core", ["python", "native"])
def test_accepted_nodes_of_rows_without_tokens_and_bad_rows(core):
    drafter, candidates, _ = _candidates(0, core)
    assert not drafter.accepted(candidates, 8, [[] for _ in range(len(candidates))]).any()
    with pytest.raises(ValueError, match="one committed-token row per request: 6 requests, 2 rows"):
        drafter.accepted(candidates, 8, [[1], [2]])
    with pytest.raises(ValueError, match="width must be an integer in \\[1, 8\\].*got 9"):
        drafter.accepted(candidates, 9, [[] for _ in range(len(candidates))])


@pytest.mark.parametrize("core", ["python", "native"])
@pytest.mark.parametrize("seed", range(8))
def test_outcomes_are_the_accepted_walk_of_each_real_draft_node_in_row_order(seed, core):
    """`outcomes` (one call, flat committed tokens) gives what the width policy learned from before:
    the scores and accepted flags of nodes 1 .. min(width, length) - 1 of every request with
    committed tokens, row by row; requests without any are left out."""
    drafter, candidates, rng = _candidates(seed, core)
    width = rng.choice([1, 2, 4, 8])
    tokens, parents = candidates.tokens.tolist(), candidates.parents.tolist()
    committed = []
    for b in range(len(candidates)):
        if rng.random() < 0.25:
            committed.append([])  # nothing committed: no outcome for this request
            continue
        node, path = rng.randrange(0, int(candidates.lengths[b])), []
        while node > 0:
            path.append(tokens[b][node])
            node = parents[b][node]
        committed.append(path[::-1] + [rng.randrange(4, 9)])
    lens = np.array([len(row) for row in committed], dtype=np.int64)
    matrix = np.array([row + [0] * (lens.max() + 1 - len(row)) for row in committed], dtype=np.int64)
    rows, scores, accepted = drafter.outcomes(candidates, width, matrix, lens)
    mask = drafter.accepted(candidates, width, committed)
    expected = [(b, candidates.scores[b, i], bool(mask[b, i])) for b in range(len(committed)) if committed[b]
                for i in range(1, min(width, int(candidates.lengths[b])))]
    assert list(zip(rows.tolist(), scores.tolist(), accepted.tolist())) == expected
    assert width == 1 or len(expected) > 0
    too_long = lens.copy()
    too_long[0] = matrix.shape[1] + 5  # reading row 0 would overrun it
    with pytest.raises(ValueError, match=r"lens must be in \[0, \d+\] \(the row width\)"):
        drafter.outcomes(candidates, width, matrix, too_long)
    with pytest.raises(ValueError, match=r"lens must be a NumPy integer array of shape"):
        drafter.outcomes(candidates, width, matrix, lens[:-1])


def _req(rid, prompt, tenant=None):
    ids = array("q", prompt)
    custom = {"consensus_group": "g", **({"consensus_tenant": tenant} if tenant else {})}
    return SimpleNamespace(rid=rid, origin_input_ids_unpadded=ids, origin_input_ids=ids, output_ids=array("q"),
                           finished=lambda: False,
                           sampling_params=SimpleNamespace(n=1, max_new_tokens=64, custom_params=custom))


def _step(widths=(1, 2, 4, 8)):
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=8))
    tracker = RequestTracker(drafter, SiblingGrouper())
    return DraftStep(tracker, TenantWidthPolicies(widths), DraftMetrics(log_interval_s=0)), tracker


def _admitted(tracker, tenants) -> tuple[list, list]:
    """One request per entry of ``tenants`` (None: no tenant) on a repetitive stream, its first
    token committed and the request admitted: (requests, streams)."""
    streams = [[5, 6, 7, 8, 9] * 40 for _ in tenants]
    reqs = [_req(f"r{i}", [1, 2, 3], tenant=t) for i, t in enumerate(tenants)]
    for r, s in zip(reqs, streams):
        r.output_ids.append(s[0])
    tracker.admit(reqs)
    return reqs, streams


def _run(step, reqs, streams, steps):
    """Commit each request's stream token by token along what the trees get right (plus a bonus)."""
    verified = None
    plans = []
    for _ in range(steps):
        seq_lens = [len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs]
        plan = step.plan(reqs, seq_lens, None, verified)
        step.after_launch(reqs)
        plans.append(plan)
        proposal = step.proposal
        sizes = np.minimum(proposal.candidates.lengths, plan.width)
        futures = [s[len(r.output_ids): len(r.output_ids) + plan.width] for r, s in zip(reqs, streams)]
        counts = step.tracker.drafter.accepted(proposal.candidates, plan.width, futures).sum(axis=1) + 1
        lens = []
        for r, s, k in zip(reqs, streams, counts):
            take = s[len(r.output_ids): len(r.output_ids) + int(k)]
            r.output_ids.extend(take)
            lens.append(len(take))
        logprobs = np.full((len(reqs), plan.width + 1), -0.1, dtype=np.float32)
        verified = VerifyRecord(plan.rids, logprobs, np.array(lens), None, plan.tokens, sizes.tolist())
    return plans


def test_plan_roots_are_the_last_committed_tokens_and_widths_are_allowed():
    step, tracker = _step()
    reqs, streams = _admitted(tracker, [None] * 4)
    for plan in _run(step, reqs, streams, 40):
        assert plan.width in (1, 2, 4, 8) and plan.tokens.shape == (4, plan.width)
        assert plan.report["consensus_width"] == [plan.width] * 4
    roots = step.plan(reqs, [len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs], None, None).tokens[:, 0]
    assert roots.tolist() == [r.output_ids[-1] for r in reqs]
    # a repetitive stream is easy to draft: the policy must have learned to go wide
    report = step.policy.report()
    accepted = sum(b["accepted"] for b in report["calibration"])
    assert accepted > 10 and max(int(w) for w, n in report["width_histogram"].items() if n) > 1
    assert tracker.tokens_with_probs > 0


def test_outcomes_are_learned_per_tenant():
    step, tracker = _step()
    reqs, streams = _admitted(tracker, ["a", "a", "b", "b"])
    _run(step, reqs, streams, 20)
    proposed = {t: sum(b["proposed"] for b in step.policy.policy(t).report()["calibration"]) for t in ("a", "b")}
    assert proposed["a"] > 0 and proposed["b"] > 0
    assert step.policy.policy(None).report()["calibration"][0]["proposed"] == 0  # the default tenant saw none


def test_steps_pair_with_their_neighbours_only_when_nothing_ran_between_them():
    """The cost model differences neighbouring steps: a step after a prefill (forget_timing) or
    the first step has no neighbour; every other step follows the one recorded before it."""
    step, tracker = _step()
    reqs, streams = _admitted(tracker, [None, None])
    _run(step, reqs, streams, 4)
    step.forget_timing()  # a prefill ran here
    _run(step, reqs, streams, 3)
    follows = [row[4] for row in step.policy.policy(None).cost.window_rows()]
    # 7 plans: the 2nd..4th record steps 1..3 (step 4's period held the prefill: dropped), the
    # 6th and 7th record steps 5 and 6: step 5 began after the prefill, so it has no neighbour.
    assert follows == [0, 1, 1, 0, 1]


def test_step_phase_benchmark_runs_both_cores_and_reports_every_phase(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from sgl_consensus.adapter.metrics import AFTER_LAUNCH_PHASES, DRAFT_PHASES

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step_phases.py"
    out = tmp_path / "phases.json"
    run = subprocess.run([sys.executable, str(script), "--groups", "1", "--paths", "3", "--waves", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["core"] for r in data["runs"]] == ["native", "python"]
    for r in data["runs"]:
        assert r["full_batch_steps"] > 0 and set(r["phase_ms_per_step_full_batch"]) == set(DRAFT_PHASES)
        assert set(r["after_launch_ms_per_step_full_batch"]) == set(AFTER_LAUNCH_PHASES)
        assert r["after_launch_ms_per_step_full_batch"]["learn"] > 0  # the outcomes are learned after launch
        assert r["tokens_per_step_per_request"] >= 1.0  # every step commits at least the bonus token
        inside = r["core_ms_per_step_full_batch"]  # the data plane's share: within the step's own phases
        assert inside["writes"] > 0 and inside["proposals"] > 0
        step_and_after = r["ms_per_step_full_batch"] + sum(r["after_launch_ms_per_step_full_batch"].values())
        assert inside["writes"] + inside["proposals"] + inside["merges"] <= step_and_after, r
    bad = subprocess.run([sys.executable, str(script), "--groups", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--groups must be >= 1, got 0" in bad.stderr


def test_work_left_by_a_step_without_after_launch_is_done_at_the_next_plan():
    """A caller that never calls ``after_launch`` loses nothing: each plan first learns the
    outcomes and records the cost the last step left (the policy sees the same steps)."""
    with_hook, without = _step(), _step()
    for (step, tracker), hook in ((with_hook, True), (without, False)):
        step.learned_from = []  # the outcomes handed to the policy, one entry per step learned from
        record = step.policy.record_outcome
        step.policy.record_outcome = lambda *args, step=step, record=record: (step.learned_from.append(1), record(*args))
        reqs, streams = _admitted(tracker, [None] * 3)
        verified = None
        for _ in range(12):
            seq_lens = [len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs]
            plan = step.plan(reqs, seq_lens, None, verified)
            if hook:
                step.after_launch(reqs)
            for r, s in zip(reqs, streams):
                r.output_ids.append(s[len(r.output_ids)])
            sizes = np.minimum(step.proposal.candidates.lengths, plan.width)
            verified = VerifyRecord(plan.rids, np.full((3, plan.width + 1), -0.1, dtype=np.float32),
                                    np.ones(3, dtype=np.int64), None, plan.tokens, sizes.tolist())
    def learned(step) -> tuple[int, int]:
        return step.policy.policy(None).cost.observations, len(step.learned_from)

    # 12 plans: with the hook, steps 1-11 are costed and learned from; without it, steps 1-10,
    # step 11's share still pending (its outcomes and its end are known only at plan 12) ...
    assert learned(with_hook[0]) == (11, 11) and learned(without[0]) == (10, 10)
    # ... and done by the next plan
    step, tracker = without
    reqs = [tracker._tracked[rid].req for rid in step.proposal.rids]
    step.plan(reqs, [len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs], None, verified)
    assert learned(step) == (11, 11)


def test_the_ab_script_alternates_old_and_new_and_names_a_failing_tree(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "ab_step_phases.py"
    out = tmp_path / "ab.json"
    run = subprocess.run([sys.executable, str(script), "--old", str(root), "--rounds", "2", "--waves", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [(r["code"], r["round"]) for r in data["runs"]] == [("old", 1), ("new", 1), ("new", 2), ("old", 2)]
    assert data["median"]["new"]["ms_per_step_full_batch"] > 0 and "learn" in data["median"]["new"]["after_launch"]
    assert "Median step: old" in out.with_suffix(".md").read_text()
    broken = tmp_path / "broken" / "benchmarks"
    broken.mkdir(parents=True)
    (broken / "bench_step_phases.py").write_text("import sys\nsys.exit('no such core')\n")
    bad = subprocess.run([sys.executable, str(script), "--old", str(broken.parent), "--rounds", "1", "--out",
                          str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("failed (exit 1): no such core")
    assert "Traceback" not in bad.stderr


def test_the_core_replay_alternates_builds_and_names_one_that_drafts_otherwise(tmp_path):
    """``ab_core_replay``: the recorded calls replayed against two builds of core.cpp in turns, each
    required to reproduce the recorded drafts; a build that drafts otherwise is named in one line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "ab_core_replay.py"
    source = root / "sgl_consensus" / "drafting" / "native" / "core.cpp"
    small = ["--groups", "2", "--paths", "3", "--waves", "1", "--evict-mb", "0.5"]
    out = tmp_path / "replay.json"
    run = subprocess.run([sys.executable, str(script), "--old", str(source), "--rounds", "2", *small, "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [(r["code"], r["round"]) for r in data["runs"]] == [("old", 1), ("new", 1), ("new", 2), ("old", 2)]
    assert data["steps"] > 0 and all(r["extend_rows"] > 0 and r["propose"] > 0 for r in data["runs"])
    # the core's own time for the same calls lies within what the binding's calls took
    assert all(0 < r["core_writes"] <= r["extend_rows"] and 0 < r["core_proposals"] <= r["propose"]
               for r in data["runs"])
    assert "Medians: old" in out.with_suffix(".md").read_text()
    text = source.read_text()
    assert "if (score > cfg.min_score) {" in text
    other = tmp_path / "other.cpp"  # a core that keeps fewer nodes: its drafts differ
    other.write_text(text.replace("if (score > cfg.min_score) {", "if (score > cfg.min_score + 0.2) {"))
    bad = subprocess.run([sys.executable, str(script), "--old", str(other), "--rounds", "1", *small,
                          "--out", str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "ab_core_replay: the old core: step" in bad.stderr
    assert "the drafts differ from the recorded ones" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, str(script), "--old", str(tmp_path / "none.cpp")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--old: no such file" in missing.stderr


def test_cold_call_costs_benchmark_times_each_operation_cold_and_warm(tmp_path):
    """``cold_call_costs``: every building block timed with the caches flushed and without; the
    flushed timings are the larger (a flush of a few MB makes the next call reload its code)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cold_call_costs.py"
    out = tmp_path / "cold.json"
    run = subprocess.run([sys.executable, str(script), "--reps", "40", "--evict-mb", "8", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) >= 6 and all(r["cold_us"] > 0 and r["warm_us"] > 0 for r in rows)
    ctypes_call = next(r for r in rows if r["operation"].startswith("ctypes call"))
    assert ctypes_call["cold_us"] > ctypes_call["warm_us"]
    assert "| operation | cold (us) | warm (us) |" in out.with_suffix(".md").read_text()


def _trained_calibration(rng: random.Random):
    """A calibration that has seen some outcomes (so its tables differ from the prior's)."""
    from sgl_consensus.adaptive import Calibration

    calibration = Calibration()
    for _ in range(rng.randint(0, 6)):
        scores = [rng.random() ** 2 for _ in range(40)]
        calibration.record(scores, [rng.random() < s for s in scores])
    return calibration


@pytest.mark.parametrize("core", ["python", "native"])
@pytest.mark.parametrize("seed", range(6))
def test_rank_sums_made_with_the_proposal_equal_the_policys_own(seed, core):
    """The per-rank sums of calibrated acceptance probabilities the drafter makes inside its
    proposal call equal, bit for bit, what the width policy computes from the scores itself, and
    so the policy chooses the same width from either (several batches, trained calibrations)."""
    from sgl_consensus.adaptive import WidthPolicy

    drafter, candidates, rng = _candidates(seed, core, paths=rng_paths(seed))
    rids = [f"r{i}" for i in range(len(candidates))]
    for _ in range(3):
        calibration = _trained_calibration(rng)
        with_sums = drafter.propose_candidates(rids, calibration.rank_weights())
        assert with_sums.rank_sums is not None and with_sums.rank_sums.shape == (7,)
        np.testing.assert_array_equal(with_sums.rank_sums, calibration.rank_sums(with_sums.scores[:, 1:]))
        twins = [WidthPolicy((1, 2, 4, 8)) for _ in range(2)]
        for policy in twins:
            policy.calibration = calibration
        keys = rng.randrange(100, 5000)
        assert twins[0].choose(with_sums.scores[:, 1:], keys) == \
            twins[1].choose(with_sums.scores[:, 1:], keys, rank_sums=with_sums.rank_sums)
        for _ in range(4):
            for rid in rids:
                drafter.extend(rid, [rng.randrange(4, 9)])
    assert drafter.propose_candidates(rids).rank_sums is None  # not asked for: not made


def rng_paths(seed: int) -> int:
    return 1 + seed * 3  # one request up to a batch of 16


@pytest.mark.parametrize("core", ["python", "native"])
def test_bad_rank_weights_are_one_line_errors(core):
    drafter, _, _ = _candidates(0, core)
    rids = [f"r{i}" for i in range(6)]
    edges = np.array([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"rank_weights: edges must be 1-D \(\[m\]\) and intercepts, slopes \[m \+ 1\]"):
        drafter.propose_candidates(rids, (edges, np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match=r"rank_weights: edges must rise, got \[0.0, 0.5, 0.5\]"):
        drafter.propose_candidates(rids, (np.array([0.0, 0.5, 0.5]), np.zeros(4), np.zeros(4)))
    with pytest.raises(TypeError, match="rank_weights must be \\(edges, intercepts, slopes\\) arrays of floats"):
        drafter.propose_candidates(rids, ("a", np.zeros(4), np.zeros(4)))
    with pytest.raises(ValueError, match="rank_weights must be finite"):
        drafter.propose_candidates(rids, (edges, np.full(4, np.nan), np.zeros(4)))


def test_a_batch_of_several_tenants_gets_no_rank_weights():
    """Rank sums stand for one calibration: a mixed batch's policy weighs each request by its own."""
    policies = TenantWidthPolicies((1, 2, 4, 8))
    assert policies.rank_weights(("a", "a")) is policies.policy("a").calibration.rank_weights()
    assert policies.rank_weights(("a", "b")) is None
    assert TenantWidthPolicies((1, 2, 4, 8), cycle=True).rank_weights(("a",)) is None

"""The evidence oracles of benchmarks/replay_alpha.py bound what copying drafters reach in the same replay."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_draft_latency import EvidenceOracleAdapter, OursAdapter, load_real, replay  # noqa: E402

from sgl_consensus.drafting import DraftConfig  # noqa: E402


@pytest.mark.parametrize("regime", ["lockstep", "staggered"])
def test_oracles_bound_the_drafters_that_copy_their_evidence(regime):
    problems = load_real("T07", "reasoner_streams")[:4]  # 8 recorded paths each

    def tau(adapter) -> float:
        return replay(adapter, problems, 8, regime, 8, 6)["tau"]

    everything = tau(EvidenceOracleAdapter(problems, 8, context=1))
    group = tau(EvidenceOracleAdapter(problems, 8, context=1, per_group=True))
    longer_context = tau(EvidenceOracleAdapter(problems, 8, context=3))
    ours = tau(OursAdapter(DraftConfig(num_draft_tokens=8)))
    siblings_only = tau(OursAdapter(DraftConfig(num_draft_tokens=8, use_global=False)))
    assert ours <= everything
    assert siblings_only <= group <= everything
    assert longer_context < everything  # a longer required context finds less
    assert siblings_only < group < everything  # strictly here: these paths share text across problems too

"""benchmarks/replay_model_nodes.py feeds the recorded successors at the right positions."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_draft_latency import OursAdapter, load_real, replay  # noqa: E402
from replay_model_nodes import ModelNodesAdapter  # noqa: E402

from sgl_consensus.drafting import DraftConfig  # noqa: E402


def test_successors_that_name_the_true_next_token_raise_tau_and_wrong_ones_do_not():
    problems = load_real("T07", "reasoner_streams")[:3]
    config = DraftConfig(num_draft_tokens=8, model_weight=1.0)

    def successors(kind: str) -> dict[str, list]:
        """At position q the top successor is the token sampled at q ("true"), at q + 1 ("shifted",
        what a feed off by one position would see) or one unused id ("wrong")."""
        def top(sample: list[int], q: int) -> int:
            if kind == "wrong":
                return 7
            return sample[min(q + (kind == "shifted"), len(sample) - 1)]
        return {f"p{i}.{j}": [[[top(sample, q), 3], [0.9, 0.05]] for q in range(len(sample))]
                for i, p in enumerate(problems) for j, sample in enumerate(p.samples[:8])}

    plain = replay(OursAdapter(DraftConfig(num_draft_tokens=8)), problems, 8, "lockstep", 8, 6)["tau"]
    right, shifted, wrong = (replay(ModelNodesAdapter(config, successors(kind)), problems, 8, "lockstep", 8, 6)["tau"]
                             for kind in ("true", "shifted", "wrong"))
    assert right > plain and right > shifted, (right, plain, shifted)
    assert wrong <= plain + 0.01, (wrong, plain)

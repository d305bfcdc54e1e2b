#!/usr/bin/env python
"""Model-informed draft nodes in offline replay: do the target's own top successors pay?

The worker can fill the parts of a tree where the siblings are silent with the target's top-k
successors of a token, seen at earlier verifies (`DraftConfig.model_weight`, drafting/successors.py).
This replays recorded sibling streams that carry, at every position, the target's top tokens and
probabilities (`make_reasoner_streams.py --successors 2`) through the drafter with and without those
nodes, next to SGLang's NgramCorpus, as `bench_draft_latency.replay` drives them (fixed width).

What the replay feeds the successor table: after each step, for every token the step committed, the
target's top successors at that position, keyed by the token before it (the input of the verified
node that predicted it). A real verify also sees the successors of the nodes it rejected, so the
table fills a little faster in serving than here.

Usage: .venv/bin/python benchmarks/replay_model_nodes.py [--streams smollm2_streams_T07] [--weights 0.5,1]
Writes benchmarks/results/model_nodes_replay.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_draft_latency import (  # noqa: E402
    NgramAdapter,
    OursAdapter,
    Problem,
    load_ngram_corpus,
    load_real,
    replay,
)

from sgl_consensus.drafting.config import DraftConfig  # noqa: E402

RESULTS = HERE / "results"


class ModelNodesAdapter(OursAdapter):
    """`OursAdapter` that also hands the drafter the recorded top successors of what each step committed."""

    def __init__(self, config: DraftConfig, successors: dict[str, list]) -> None:
        super().__init__(config)
        self.successors = successors  # rid -> per position [top token ids, their probabilities]

    def step(self, rids, new_tokens, new_logprobs, prompts, outputs):
        for rid, tokens, prompt, output in zip(rids, new_tokens, prompts, outputs):
            if tokens:
                first = len(output) - len(tokens)  # position of the first token committed this step
                inputs = [output[q - 1] if q else prompt[-1] for q in range(first, len(output))]
                tops = self.successors[rid][first: len(output)]
                self.drafter.observe_successors(rid, inputs, [t for t, _ in tops], [p for _, p in tops])
        return super().step(rids, new_tokens, new_logprobs, prompts, outputs)


def successors_by_request(problems: list[Problem], paths: int) -> dict[str, list]:
    """Replay's request names (``p{problem}.{path}``) -> that sample's recorded successors."""
    return {f"p{i}.{j}": tops for i, p in enumerate(problems) for j, tops in enumerate(p.successors[:paths])}


def load(stream: str, paths: int) -> list[Problem]:
    """The problems of a bundled stream set (``prefix_tag``) with ``paths`` samples and recorded successors."""
    prefix, tag = stream.rsplit("_", 1)
    problems = [p for p in load_real(tag, prefix) if len(p.samples) >= paths]
    if not problems or problems[0].successors is None:
        raise SystemExit(f"{stream}: no problems with {paths} samples and recorded successors "
                         "(record them with make_reasoner_streams.py --successors 2)")
    return problems


def run(streams: list[str], weights: list[float], paths: int, regimes: list[str], draft_tokens: int,
        stagger: int) -> list[dict]:
    corpus_cls, error = load_ngram_corpus()
    if corpus_cls is None:
        print(f"NOTE: SGLang's NgramCorpus is unavailable ({error}); our drafter alone.")
    rows = []
    for stream in streams:
        problems = load(stream, paths)
        successors = successors_by_request(problems, paths)
        for regime in regimes:
            adapters = [("ours", OursAdapter(DraftConfig(num_draft_tokens=draft_tokens)))]
            adapters += [(f"ours + model nodes (weight {w:g})",
                          ModelNodesAdapter(DraftConfig(num_draft_tokens=draft_tokens, model_weight=w), successors))
                         for w in weights]
            if corpus_cls is not None:
                adapters.append(("ngram_global", NgramAdapter(corpus_cls, draft_tokens, False)))
            for name, adapter in adapters:
                result = replay(adapter, problems, paths, regime, draft_tokens, stagger)
                row = {"streams": stream, "regime": regime, "paths": paths, "drafter": name,
                       "problems": len(problems), "tau": result["tau"], "verify_steps": result["verify_steps"]}
                if isinstance(adapter, OursAdapter):
                    stats = adapter.drafter.stats()
                    drafted = sum(stats[f"draft_nodes_{k}"] for k in ("sibling", "global", "own", "model"))
                    row["model_node_share"] = stats["draft_nodes_model"] / max(drafted, 1)
                rows.append(row)
                print(f"{stream} {regime} {name}: tau {result['tau']:.3f}", flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = ["# Model-informed draft nodes (offline replay)", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}. {report['paths']} paths per problem, {report['draft_tokens']} draft "
             "tokens, fixed width; ratios against `ours` (no model nodes) of the same streams and regime. What the "
             "replay feeds the successor table is in the script's docstring.", "",
             "| streams | regime | drafter | tau | vs ours | model nodes, share of draft nodes |", "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        base = next(r["tau"] for r in report["rows"] if r["drafter"] == "ours"
                    and (r["streams"], r["regime"]) == (row["streams"], row["regime"]))
        share = f"{100 * row['model_node_share']:.0f} %" if "model_node_share" in row else "-"
        lines.append(f"| {row['streams']} | {row['regime']} | {row['drafter']} | {row['tau']:.3f} | "
                     f"{row['tau'] / base:.3f}x | {share} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="smollm2_streams_T07")
    parser.add_argument("--weights", default="0.5,1")
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--regimes", default="lockstep,staggered")
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--stagger", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "model_nodes_replay.json")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    if any(not 0.0 < w <= 1.0 for w in weights):
        parser.error(f"--weights must lie in (0, 1], got {args.weights!r}")
    rows = run(args.streams.split(","), weights, args.paths, args.regimes.split(","), args.draft_tokens,
               args.stagger)
    report = {"command": ".venv/bin/python benchmarks/replay_model_nodes.py " + shlex.join(sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
              "paths": args.paths, "draft_tokens": args.draft_tokens, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

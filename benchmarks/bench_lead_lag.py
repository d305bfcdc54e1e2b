#!/usr/bin/env python
"""Lead-lag scheduling, end to end: does a leader running ahead cut verify work without costing time?

SGLang's real engine (CPU here) on the bundled tiny reasoner; held-out problems, N sampled paths
each, tagged as one sibling group per problem. For each (N, T) it runs, on the same problems:

- ``consensus`` with lead H = 0 (lock-step: every branch starts together) and each H of ``--leads``
  (``custom_params["consensus_lead"]``: the first branch to queue leads, its siblings wait until it
  has H output tokens; ``inf`` = until it finished), one consensus engine for all of them;
- ``ngram``: SGLang's NgramCorpus drafts under the same lossless verification, lock-step;
- ``none`` (``--mode concurrent`` only): no speculation.

Modes: ``single`` runs one group at a time (an idle machine: the time to finish a group, in seconds
and in scheduler steps, is the latency a user waits for a self-consistency vote); ``concurrent``
submits ``--groups`` groups at once (a busy server: output tokens/s).

Per run: output tokens, request-steps (verify rows: one per running path per step = total verify
work), target tokens processed (request-steps x draft tokens: SGLang verifies a fixed-width tree per
row, padding included), tau, scheduler steps, group completion time (mean and max, seconds),
tokens/s, accuracy. Ratios are to lock-step consensus of the same (mode, N, T) in the same run; work
is also given per output token (paths of different runs sample different lengths).

Caches (radix cache, corpora) are flushed before every run. JSON after every run (``--resume`` skips
runs already there); then PNG + Markdown next to it. ``--report-only`` rebuilds them.

Example (small): .venv/bin/python benchmarks/bench_lead_lag.py --n 4 --temperatures 0.7 --leads 16 \\
    --problems 2 --modes single --out /tmp/ll.json
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

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_multisample import _consensus_state, _flush, model_fingerprint  # noqa: E402

from sgl_consensus.lead_lag import parse_lead  # noqa: E402
from sgl_consensus.request_params import LEAD_PARAM  # noqa: E402
from sgl_consensus.lead_lag import format_lead as _lead_label  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "lead_lag.json"
MODES = ("single", "concurrent")
# Targets of the issue (N = 8, T = 0.7).
TARGET = {"n": 8, "temperature": 0.7}


def _csv(kind):
    """A comma-separated list of ``kind``; a bad item is an argparse error naming it."""
    def parse(text: str):
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _lead(text: str) -> float:
    return parse_lead(text, f"lead {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from sgl_consensus.demo import EVAL_SEED_START
    from sgl_consensus.models import BUNDLED_MODEL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--n", type=_csv(int), default=[4, 8, 16], help="paths per problem")
    p.add_argument("--temperatures", type=_csv(float), default=[0.7, 1.0])
    p.add_argument("--leads", type=_csv(_lead), default=[16, 32, 64, math.inf], help="leads H in tokens; inf allowed")
    p.add_argument("--modes", type=_csv(str), default=list(MODES), help=f"from {MODES}")
    p.add_argument("--problems", type=int, default=8, help="groups run one at a time in --mode single")
    p.add_argument("--groups", type=int, default=16, help="concurrent groups in --mode concurrent")
    p.add_argument("--concurrent-n", type=_csv(int), default=[8], help="N values run in --mode concurrent")
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START)
    p.add_argument("--draft-tokens", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report-only", action="store_true")
    ns = p.parse_args(argv)
    bad = sorted(set(ns.modes) - set(MODES))
    if bad:
        p.error(f"unknown --modes {bad}; choose from {list(MODES)}")
    if min(ns.n + ns.concurrent_n) < 2:
        p.error("--n and --concurrent-n need N >= 2 (a group needs siblings)")
    if ns.problems < 1 or ns.groups < 1:
        p.error("--problems and --groups must be >= 1")
    return ns


# ---------------------------------------------------------------------------------------------
# Measuring


async def _run_groups(engine, prompts: list[str], n: int, params: dict, lead: float, tag: str, on_done):
    """All paths of all ``prompts`` at once; per path (group, text, ids, verify steps, finish s)."""
    t0 = time.perf_counter()

    async def one(group: int):
        custom = {"consensus_group": f"{tag}-{group}"}
        if lead:
            custom[LEAD_PARAM] = _lead_label(lead)
        out = await engine.async_generate(prompts[group], {**params, "custom_params": custom})
        on_done()
        ids = list(out.get("output_ids") or [])
        meta = out["meta_info"]
        steps = int(meta.get("spec_verify_ct") or len(ids))
        return group, out["text"], ids, steps, time.perf_counter() - t0

    return await asyncio.gather(*(one(g) for g in range(len(prompts)) for _ in range(n)))


def _measure(engine, prompts, answers, n, params, lead, tag, on_done, has_state: bool) -> dict:
    from sgl_consensus.workload.checker import extract_answer, majority_answer

    _flush(engine)
    before = _consensus_state(engine) if has_state else None
    start = time.perf_counter()
    paths = engine.run(_run_groups(engine, prompts, n, params, lead, tag, on_done))
    wall = time.perf_counter() - start
    after = _consensus_state(engine) if has_state else None
    tokens = sum(len(p[2]) for p in paths)
    request_steps = sum(p[3] for p in paths)
    finish: dict[int, float] = {}
    votes: dict[int, list[str]] = {}
    for group, text, _, _, done_s in paths:
        finish[group] = max(finish.get(group, 0.0), done_s)
        votes.setdefault(group, []).append(text)
    return {
        "wall_s": wall, "output_tokens": tokens, "request_steps": request_steps,
        "batch_steps": (after["steps"] - before["steps"]) if before and after else None,
        "lead_holds": (after["lead_lag"]["lead_holds"] - before["lead_lag"]["lead_holds"]) if before and after else 0,
        "group_s": list(finish.values()),
        "accuracy_single": sum(extract_answer(p[1]) == answers[p[0]] for p in paths) / len(paths),
        "majority_correct": sum(majority_answer(v) == answers[g] for g, v in votes.items()),
    }


def _record(mode, algorithm, lead, n, temperature, draft_tokens, parts: list[dict], **extra) -> dict:
    tokens = sum(p["output_tokens"] for p in parts)
    request_steps = sum(p["request_steps"] for p in parts)
    wall = sum(p["wall_s"] for p in parts)
    group_s = [s for p in parts for s in p["group_s"]]
    batch = [p["batch_steps"] for p in parts]
    per_token_width = draft_tokens if algorithm != "none" else 1
    return {
        "mode": mode, "algorithm": algorithm, "lead": _lead_label(lead), "n": n, "temperature": temperature,
        "groups": len(group_s), "paths": len(group_s) * n, "output_tokens": tokens,
        "request_steps": request_steps, "target_tokens": request_steps * per_token_width,
        "tau": tokens / max(request_steps, 1), "verify_steps_per_token": request_steps / max(tokens, 1),
        "batch_steps": None if None in batch else sum(batch),
        "group_steps_mean": None if None in batch else sum(batch) / len(batch),
        "wall_s": wall, "tokens_per_s": tokens / max(wall, 1e-9),
        "group_s_mean": statistics.mean(group_s), "group_s_max": max(group_s),
        "lead_holds": sum(p["lead_holds"] for p in parts),
        "accuracy_single": statistics.mean(p["accuracy_single"] for p in parts),
        "accuracy_majority": sum(p["majority_correct"] for p in parts) / len(group_s),
        "loadavg_1m": round(os.getloadavg()[0], 2), **extra,
    }


def _plan(ns) -> list[tuple[str, str, float, int, float]]:
    """(mode, algorithm, lead, n, T) in an order that keeps each engine's runs together."""
    plan = []
    for algorithm in ("none", "ngram", "consensus"):
        for mode in ns.modes:
            if algorithm == "none" and mode == "single":
                continue  # no scheduler step counts without speculation; the concurrent rows say enough
            ns_of_mode = ns.concurrent_n if mode == "concurrent" else ns.n
            leads = [0.0] + list(ns.leads) if algorithm == "consensus" else [0.0]
            for n in ns_of_mode:
                for temperature in ns.temperatures:
                    for lead in leads:
                        plan.append((mode, algorithm, lead, n, temperature))
    return plan


def _key(mode, algorithm, lead, n, temperature) -> tuple:
    return mode, algorithm, _lead_label(lead) if not isinstance(lead, str) else lead, n, float(temperature)


def benchmark(ns) -> dict:
    from sgl_consensus import cpu

    cpu.activate()
    from tqdm import tqdm

    from sgl_consensus.demo import ROWS, _engine_kwargs
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.workload.problems import format_prompt, generate_problem

    count = max(ns.problems, ns.groups)
    problems = [generate_problem(ns.seed_start + i) for i in range(count)]
    prompts = [format_prompt(p.question) for p in problems]
    answers = [p.answer for p in problems]
    settings = {"model": str(ns.model), "seed_start": ns.seed_start, "draft_tokens": ns.draft_tokens,
                "max_new_tokens": ns.max_new_tokens, "problems": ns.problems, "groups": ns.groups}
    data = json.loads(ns.out.read_text()) if ns.resume and ns.out.exists() else {}
    if data and data.get("settings") != settings:
        raise SystemExit(f"--resume: {ns.out} was measured with other settings {data.get('settings')}")
    data.setdefault("settings", settings)
    data.setdefault("invocations", []).append({
        "command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
    })
    data.setdefault("runs", [])
    done = {_key(r["mode"], r["algorithm"], r["lead"], r["n"], r["temperature"]) for r in data["runs"]}
    plan = [step for step in _plan(ns) if _key(*step) not in done]
    total = sum(n * (ns.problems if mode == "single" else ns.groups) for mode, _, _, n, _ in plan)
    max_running = max([ns.groups * n for n in ns.concurrent_n] + [max(ns.n)]) if plan else 1
    weights = model_fingerprint(ns.model)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="paths", unit="path", file=sys.stderr, dynamic_ncols=True) as bar:
        for algorithm in ("none", "ngram", "consensus"):
            steps = [s for s in plan if s[1] == algorithm]
            if not steps:
                continue
            bar.set_postfix_str(f"{algorithm}: starting engine")
            env = {**ROWS[algorithm][1], "CONSENSUS_LOG_INTERVAL": "0"} if algorithm != "none" else {}
            kwargs = _engine_kwargs(ns.model, algorithm, ns.draft_tokens, max_running)
            kwargs["max_total_tokens"] = max(kwargs.get("max_total_tokens") or 0, max_running * 400)
            with environment(env):
                engine = start_engine(**kwargs)
            try:
                engine.run(engine.async_generate(prompts[0], {"temperature": 0.0, "max_new_tokens": 16}))  # warm-up
                for mode, _, lead, n, temperature in steps:
                    bar.set_postfix_str(f"{algorithm} {mode} N={n} T={temperature} H={_lead_label(lead)}")
                    params = {"temperature": temperature, "max_new_tokens": ns.max_new_tokens}
                    tag = f"{mode}-{n}-{temperature}-{_lead_label(lead)}"
                    has_state = algorithm != "none"
                    if mode == "single":
                        parts = [_measure(engine, [prompts[i]], [answers[i]], n, params, lead, f"{tag}-{i}",
                                          bar.update, has_state) for i in range(ns.problems)]
                    else:
                        parts = [_measure(engine, prompts[: ns.groups], answers[: ns.groups], n, params, lead, tag,
                                          bar.update, has_state)]
                    data["runs"].append(_record(mode, algorithm, lead, n, temperature, ns.draft_tokens, parts,
                                                model_sha256=weights))
                    data["invocations"][-1]["wall_s"] = round(time.perf_counter() - t0, 1)
                    ns.out.parent.mkdir(parents=True, exist_ok=True)
                    ns.out.write_text(json.dumps(data, indent=1))
            finally:
                engine.shutdown()
    data["invocations"][-1]["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ns.out.write_text(json.dumps(data, indent=1))
    return data


# ---------------------------------------------------------------------------------------------
# Reporting


def add_ratios(runs: list[dict]) -> None:
    """Ratios to lock-step consensus (lead 0) of the same mode, N and T."""
    base = {(r["mode"], r["n"], r["temperature"]): r for r in runs if r["algorithm"] == "consensus" and r["lead"] == "0"}
    for r in runs:
        b = base.get((r["mode"], r["n"], r["temperature"]))
        if b is None:
            continue
        r["work_vs_lockstep"] = r["request_steps"] / b["request_steps"]
        r["work_per_token_vs_lockstep"] = r["verify_steps_per_token"] / b["verify_steps_per_token"]
        r["group_s_vs_lockstep"] = r["group_s_mean"] / b["group_s_mean"]
        r["tokens_per_s_vs_lockstep"] = r["tokens_per_s"] / b["tokens_per_s"]
        if r.get("group_steps_mean") and b.get("group_steps_mean"):
            r["group_steps_vs_lockstep"] = r["group_steps_mean"] / b["group_steps_mean"]


def _row_name(r: dict) -> str:
    if r["algorithm"] != "consensus":
        return r["algorithm"] + (" (lock-step)" if r["algorithm"] == "ngram" else "")
    return "consensus lock-step" if r["lead"] == "0" else f"consensus lead {r['lead']}"


def _f(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def _ratio(r: dict, key: str, spec: str = ".3f") -> str:
    return _f(r.get(key), spec)


def _work(r: dict) -> str:
    return f"{_ratio(r, 'work_vs_lockstep')} ({_ratio(r, 'work_per_token_vs_lockstep')})"


# Columns of each mode's table: (header, cell of a run).
COLUMNS = {
    "single": [
        ("tau", lambda r: f"{r['tau']:.2f}"),
        ("verify steps/token", lambda r: f"{r['verify_steps_per_token']:.3f}"),
        ("work vs lock-step (per token)", _work),
        ("group steps", lambda r: _f(r["group_steps_mean"], ".1f")),
        ("group s (mean)", lambda r: f"{r['group_s_mean']:.2f}"),
        ("group time vs lock-step (steps / s)",
         lambda r: f"{_ratio(r, 'group_steps_vs_lockstep')} / {_ratio(r, 'group_s_vs_lockstep')}"),
    ],
    "concurrent": [
        ("tau", lambda r: f"{r['tau']:.2f}"),
        ("request-steps", lambda r: str(r["request_steps"])),
        ("target tokens", lambda r: str(r["target_tokens"])),
        ("work vs lock-step (per token)", _work),
        ("tokens/s", lambda r: f"{r['tokens_per_s']:.1f}"),
        ("vs lock-step", lambda r: f"{_ratio(r, 'tokens_per_s_vs_lockstep', '.2f')}x"),
        ("group s (mean / max)", lambda r: f"{r['group_s_mean']:.1f} / {r['group_s_max']:.1f}"),
    ],
}
ACCURACY_COLUMNS = [("acc single", lambda r: f"{r['accuracy_single']:.2f}"),
                    ("acc majority", lambda r: f"{r['accuracy_majority']:.2f}")]


def _table(runs: list[dict], mode: str, n: int, temperature: float) -> list[str]:
    rows = [r for r in runs if r["mode"] == mode and r["n"] == n and r["temperature"] == temperature]
    if not rows:
        return []
    columns = [("schedule", _row_name)] + COLUMNS[mode] + ACCURACY_COLUMNS
    lines = ["| " + " | ".join(head for head, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return lines


def targets(runs: list[dict]) -> list[str]:
    n, t = TARGET["n"], TARGET["temperature"]
    single = [r for r in runs if r["mode"] == "single" and r["n"] == n and r["temperature"] == t
              and r["algorithm"] == "consensus" and r["lead"] != "0"]
    conc = [r for r in runs if r["mode"] == "concurrent" and r["n"] == n and r["temperature"] == t
            and r["algorithm"] == "consensus" and r["lead"] != "0"]
    lines = ["| target (N=8, T=0.7) | best lead | measured | met |", "|---|---|---|---|"]
    if single:
        ok = [r for r in single if r.get("group_s_vs_lockstep", 9) <= 1.10]
        best = min(ok or single, key=lambda r: r.get("work_per_token_vs_lockstep", 9))
        met = best.get("work_per_token_vs_lockstep", 9) <= 0.70 and best.get("group_s_vs_lockstep", 9) <= 1.10
        lines.append(f"| verify work <= 0.70x lock-step with group time <= 1.10x | {best['lead']} | work "
                     f"{_f(best.get('work_per_token_vs_lockstep'), '.3f')}x per token, group time "
                     f"{_f(best.get('group_s_vs_lockstep'), '.3f')}x | {'yes' if met else '**no**'} |")
    if conc:
        best = max(conc, key=lambda r: r.get("tokens_per_s_vs_lockstep", 0))
        met = best.get("tokens_per_s_vs_lockstep", 0) >= 1.2
        lines.append(f"| 16 concurrent groups: tokens/s >= 1.2x lock-step | {best['lead']} | "
                     f"{_f(best.get('tokens_per_s_vs_lockstep'))}x | {'yes' if met else '**no**'} |")
    return lines


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in data["runs"] if r["algorithm"] == "consensus"]
    single = [r for r in runs if r["mode"] == "single"]
    if not single:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    leads = sorted({r["lead"] for r in single}, key=lambda x: math.inf if x == "inf" else int(x))
    xs = list(range(len(leads)))
    for n in sorted({r["n"] for r in single}):
        for t in sorted({r["temperature"] for r in single}):
            pts = {r["lead"]: r for r in single if r["n"] == n and r["temperature"] == t}
            label = f"N={n} T={t}"
            axes[0].plot(xs, [pts[h].get("work_per_token_vs_lockstep", math.nan) if h in pts else math.nan
                              for h in leads], marker="o", label=label)
            axes[1].plot(xs, [pts[h].get("group_s_vs_lockstep", math.nan) if h in pts else math.nan
                              for h in leads], marker="o", label=label)
    axes[0].axhline(0.7, color="grey", ls="--", lw=1, label="target 0.70")
    axes[1].axhline(1.1, color="grey", ls="--", lw=1, label="limit 1.10")
    for ax, title in zip(axes, ("verify work per output token vs lock-step", "group completion time vs lock-step")):
        ax.set_xticks(xs, ["lock-step" if h == "0" else h for h in leads])
        ax.set_xlabel("lead H (tokens)")
        ax.set_title(title, fontsize=10)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Lead-lag on the tiny reasoner (SGLang on CPU, one group at a time)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(data: dict, out: Path) -> str:
    runs = data["runs"]
    add_ratios(runs)
    s = data["settings"]
    lines = ["# Lead-lag benchmark", "",
             f"Model `tiny-reasoner`, held-out problems from seed {s['seed_start']}, {s['draft_tokens']} draft tokens, "
             f"max {s['max_new_tokens']} new tokens; single mode = {s['problems']} groups one at a time, concurrent mode "
             f"= {s['groups']} groups at once. Ratios are to lock-step consensus of the same mode, N and T in the same "
             "file; 'per token' divides by output tokens (runs sample different lengths).", "", "Commands:", ""]
    lines += [f"- `{inv['command']}` ({inv.get('started_utc')}, {inv.get('wall_s')} s)" for inv in data["invocations"]]
    lines += ["", "## Targets", ""] + targets(runs)
    for mode in MODES:
        for n in sorted({r["n"] for r in runs if r["mode"] == mode}):
            for t in sorted({r["temperature"] for r in runs if r["mode"] == mode}):
                table = _table(runs, mode, n, t)
                if table:
                    lines += ["", f"## {mode}, N={n}, T={t}", ""] + table
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    plot(data, out.with_suffix(".png"))
    return text


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.report_only:
        if not ns.out.exists():
            raise SystemExit(f"--report-only: {ns.out} does not exist")
        data = json.loads(ns.out.read_text())
    else:
        data = benchmark(ns)
    text = report(data, ns.out)
    ns.out.write_text(json.dumps(data, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

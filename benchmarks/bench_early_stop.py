"""Early-stopping self-consistency on SGLang: generated tokens, wall-clock and majority accuracy
against the full vote of the same run.

Per algorithm (``consensus``, ``none``), one engine on this machine:

1. **Full vote, live**: every problem's ``--n`` paths, all problems submitted at once (the server
   batches them; ``--max-running`` slots), each path's answer, output tokens and finish order
   recorded. Wall-clock per problem = the run's wall / problems.
2. **Early stop, live**: the same problems again with ``--live-rule``, each problem's paths launched
   ``--in-flight`` at a time (a new one whenever one finishes): when the rule fires, the problem's
   running paths are aborted and the rest never start.
3. **Replay** of every rule in ``--rules`` over the recorded full votes (``--replay-n``: the first N
   paths of each problem): the vote each rule reaches, and the tokens it would have generated, with
   the paths launched ``--in-flight`` at a time and with all N at once
   (``sgl_consensus.early_stop.simulate``: one token per path per step).

Why waves: paths started together finish close together (similar lengths), so a rule that fires
after k votes has already paid for most of every other path; launched a few at a time, a decided vote
never starts the rest. With many problems in flight the server stays full either way, so wall-clock
per problem follows the tokens.

Accuracy noise of the full vote: the 2.5-97.5 % interval of its majority accuracy when each
problem's paths are resampled with replacement (1,000 bootstrap draws).

Writes ``--out`` (JSON), and next to it a Markdown summary and a PNG (tokens saved against the
change in majority accuracy, per rule).

    .venv/bin/python benchmarks/bench_early_stop.py --problems 200 --n 16 --replay-n 8,16 \\
        --out benchmarks/results/early_stop.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_RULES = "decided,esc:2,esc:3,esc:4,beta:0.8,beta:0.9,beta:0.95"


def _never(paths: int):
    from sgl_consensus.early_stop import Decided

    return Decided(min_votes=paths + 1)  # fires only when every path has voted


def _live(engine, prompts, params, n, rule, extract, in_flight=None, lead: float = 0) -> tuple[list, float]:
    from sgl_consensus.early_stop_runner import EngineBackend, run_votes

    start = time.perf_counter()
    results = engine.run(run_votes(EngineBackend(engine), prompts, params, n, rule, extract, in_flight, lead))
    return results, time.perf_counter() - start


def early_stop_runs(run: dict) -> list[dict]:
    """A run's live early-stop rows, one per lead (files written before ``--leads`` hold one, lead 0)."""
    return run.get("early_stops") or [{"lead": 0, **run["early_stop"], "tokens_saved_live": run["tokens_saved_live"],
                                        "wall_speedup_live": run["wall_speedup_live"]}]


def _record(results, answers) -> list[dict]:
    return [{"truth": truth, "answers": [p.answer for p in r.paths], "tokens": [p.output_tokens for p in r.paths],
             "voted": [p.voted for p in r.paths], "finish_order": r.finish_order, "vote": r.answer,
             "never_launched": r.never_launched, "stopped_after": r.stopped_after}
            for r, truth in zip(results, answers)]


def replay_rule(rule, problems: list[dict], n: int, in_flight: int) -> dict:
    """A rule over recorded full votes: the first ``n`` paths of each problem, ``in_flight`` at a time."""
    from sgl_consensus.early_stop import simulate

    tokens = full_tokens = right = agree = full_right = votes = 0
    for p in problems:
        answers, lengths = p["answers"][:n], p["tokens"][:n]
        vote, used = simulate(rule, answers, lengths, in_flight)
        tokens += used
        full_tokens += sum(lengths)
        # the full vote in the same simulated finish order (ties go to the first to reach a count)
        full = simulate(_never(len(answers)), answers, lengths, in_flight)[0].leader()
        right += vote.leader() == p["truth"]
        full_right += full == p["truth"]
        agree += vote.leader() == full
        votes += vote.stopped_after
    count = len(problems)
    return {"n": n, "in_flight": in_flight, "tokens": tokens, "full_tokens": full_tokens,
            "tokens_saved": 1 - tokens / max(full_tokens, 1), "accuracy": right / count,
            "full_accuracy": full_right / count, "agreement": agree / count, "mean_votes": votes / count}


def _spec(rule) -> str:
    parameter = getattr(rule, "window", getattr(rule, "level", None))
    return rule.name if parameter is None else f"{rule.name}:{parameter}"


def _pick(replays: list[dict], n: int, in_flight: int, interval: tuple[float, float]) -> str:
    """The replayed rule (at ``n`` paths, ``in_flight`` at a time) that saves the most tokens with a
    majority accuracy inside the full vote's bootstrap interval (``decided`` if none)."""
    fits = [x for x in replays if x["n"] == n and x["in_flight"] == min(in_flight, n)
            and interval[0] <= x["accuracy"] <= max(interval[1], x["full_accuracy"])]
    return max(fits, key=lambda x: x["tokens_saved"])["rule"] if fits else "decided"


def bootstrap_interval(problems: list[dict], n: int, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    from collections import Counter

    def majority(answers):
        counts = Counter(a for a in answers if a is not None)
        if not counts:
            return None
        best = max(counts.values())
        return next(a for a in answers if a is not None and counts[a] == best)

    rng = random.Random(seed)
    accuracies = []
    for _ in range(draws):
        right = 0
        for p in problems:
            answers = p["answers"][:n]
            sample = [answers[rng.randrange(len(answers))] for _ in answers]
            right += majority(sample) == p["truth"]
        accuracies.append(right / len(problems))
    accuracies.sort()
    return accuracies[int(0.025 * draws)], accuracies[int(0.975 * draws) - 1]


def measure(ns) -> dict:
    from sgl_consensus import cpu

    cpu.activate()
    from sgl_consensus.demo import ROWS
    from sgl_consensus.demo import _engine_kwargs as demo_engine_kwargs
    from sgl_consensus.early_stop import parse_rule
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.testing.engines import flush
    from sgl_consensus.workload.datasets import build_workload

    workload = build_workload(ns.model, ns.problems, ns.dataset, ns.seed_start)
    params = {"temperature": ns.temperature, "top_p": 1.0, "max_new_tokens": ns.max_new_tokens}
    rules = [parse_rule(r) for r in ns.rules.split(",")]
    data = {"settings": {"model": str(ns.model).replace(str(Path.home()), "~", 1), "problems": ns.problems,
                         "n": ns.n, "temperature": ns.temperature, "max_new_tokens": ns.max_new_tokens,
                         "max_running": ns.max_running, "live_rule": ns.live_rule, "in_flight": ns.in_flight, "dataset": ns.dataset,
                         "leads": [_lead_key(x) for x in ns.leads]},
            "command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": []}
    for algorithm in ns.algorithms.split(","):
        env = {**ROWS[algorithm][1], "CONSENSUS_LOG_INTERVAL": "0"} if ROWS[algorithm][0] == "CONSENSUS" else {}
        with environment(env):
            engine = start_engine(**demo_engine_kwargs(ns.model, algorithm, 8, ns.max_running))
        try:
            engine.run(engine.async_generate(workload.prompts[0], {"temperature": 0.0, "max_new_tokens": 16}))
            flush(engine)
            full, full_wall = _live(engine, workload.prompts, params, ns.n, _never(ns.n), workload.extract)
            problems = _record(full, workload.answers)
            interval = bootstrap_interval(problems, ns.n)
            replays = [{"rule": _spec(r), **replay_rule(r, problems, n, w)}
                       for n in ns.replay_n for w in sorted({min(ns.in_flight, n), n}) for r in rules]
            live_spec = ns.live_rule if ns.live_rule != "auto" else _pick(replays, ns.n, ns.in_flight, interval)
            stops = []
            for lead in ns.leads:
                flush(engine)
                stopped, stop_wall = _live(engine, workload.prompts, params, ns.n, parse_rule(live_spec),
                                           workload.extract, ns.in_flight, lead)
                stops.append(_early_stop_row(_record(stopped, workload.answers), stop_wall, live_spec, lead, ns))
            state = engine.get_server_info()["internal_states"][0].get("consensus")
        finally:
            engine.shutdown()
        full_tokens = sum(sum(p["tokens"]) for p in problems)
        for row in stops:
            row["tokens_saved_live"] = 1 - row["tokens"] / max(full_tokens, 1)
            row["wall_speedup_live"] = full_wall / max(row["wall_s"], 1e-9)
        run = {
            "algorithm": algorithm,
            "full": {"wall_s": full_wall, "wall_s_per_problem": full_wall / ns.problems, "tokens": full_tokens,
                     "accuracy": sum(p["vote"] == p["truth"] for p in problems) / ns.problems},
            "early_stops": [{k: v for k, v in row.items() if k != "problems"} for row in stops],
            "full_vote_interval": {str(n): bootstrap_interval(problems, n) for n in ns.replay_n},
            "replay": replays,
            "worker_state_after": {k: state[k] for k in ("tracked_requests", "live_prefix_clusters")}
            if state else None,
            "problems_full": problems,
            "problems_early_stop": {_lead_key(row["lead"]): row["problems"] for row in stops},
        }
        data["runs"].append(run)
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps(data, indent=1))
    return data


def _lead_key(lead: float) -> str:
    from sgl_consensus.lead_lag import format_lead

    return format_lead(lead)


def _early_stop_row(live: list[dict], wall: float, rule: str, lead: float, ns) -> dict:
    return {"rule": rule, "lead": _lead_key(lead), "in_flight": ns.in_flight, "wall_s": wall,
            "wall_s_per_problem": wall / ns.problems, "tokens": sum(sum(p["tokens"]) for p in live),
            "accuracy": sum(p["vote"] == p["truth"] for p in live) / ns.problems,
            "mean_votes": sum(p["stopped_after"] for p in live) / ns.problems,
            "paths_never_launched": sum(p["never_launched"] for p in live), "problems": live}


def report(data: dict, out: Path) -> None:
    s = data["settings"]
    lines = [f"# Early-stopping self-consistency ({s['problems']} problems, N = {s['n']}, T = {s['temperature']})", "",
             f"Command: `{data['command']}` ({data['started_utc']}); machine: {os.cpu_count()}-core CPU VM.", "",
             "## Live (same run): full vote vs early stop", "",
             "| algorithm | rule (in flight) | lead | tokens full | tokens early | saved | wall/problem full s | early s | "
             "speed-up | acc full | acc early | mean votes |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        f = r["full"]
        for e in early_stop_runs(r):
            lines.append(f"| {r['algorithm']} | {e['rule']} ({e['in_flight']}) | {e['lead']} | {f['tokens']} | {e['tokens']} | "
                         f"{e['tokens_saved_live']:.0%} | {f['wall_s_per_problem']:.2f} | {e['wall_s_per_problem']:.2f} | "
                         f"{e['wall_speedup_live']:.2f}x | {f['accuracy']:.3f} | {e['accuracy']:.3f} | {e['mean_votes']:.1f} |")
    lines += ["", "## Replay of every rule over the recorded full votes", "",
              "| algorithm | N | in flight | rule | tokens saved | acc (full vote) | full-vote 95 % interval | acc early | "
              "agrees with full | mean votes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        for x in r["replay"]:
            lo, hi = r["full_vote_interval"][str(x["n"])]
            lines.append(f"| {r['algorithm']} | {x['n']} | {x['in_flight']} | {x['rule']} | {x['tokens_saved']:.0%} | {x['full_accuracy']:.3f} | "
                         f"{lo:.3f}-{hi:.3f} | {x['accuracy']:.3f} | {x['agreement']:.0%} | {x['mean_votes']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in data["runs"]:
        for n, w in sorted({(x["n"], x["in_flight"]) for x in r["replay"]}):
            xs = [x for x in r["replay"] if x["n"] == n and x["in_flight"] == w]
            ax.scatter([100 * x["tokens_saved"] for x in xs], [100 * (x["accuracy"] - x["full_accuracy"]) for x in xs],
                       label=f"{r['algorithm']} N={n}, {w} in flight (replay)")
            for x in xs:
                ax.annotate(x["rule"], (100 * x["tokens_saved"], 100 * (x["accuracy"] - x["full_accuracy"])), fontsize=7)
        for e in early_stop_runs(r):
            lead = f", lead {e['lead']}" if str(e["lead"]) != "0" else ""
            ax.scatter([100 * e["tokens_saved_live"]], [100 * (e["accuracy"] - r["full"]["accuracy"])],
                       marker="*", s=150, label=f"{r['algorithm']} N={data['settings']['n']} live {e['rule']}{lead}")
    for r in data["runs"][:1]:  # the full vote's own sampling noise at N (bootstrap 95 %)
        lo, hi = r["full_vote_interval"][str(data["settings"]["n"])]
        full = r["full"]["accuracy"]
        ax.axhspan(100 * (lo - full), 100 * (hi - full), color="grey", alpha=0.15,
                   label=f"full vote N={data['settings']['n']}: 95 % bootstrap interval")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("generated tokens saved vs the full vote (%)")
    ax.set_ylabel("majority accuracy change (points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--seed-start", type=int, default=1_000_000_000)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--replay-n", default="8,16")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-running", type=int, default=64)
    parser.add_argument("--algorithms", default="consensus")
    parser.add_argument("--rules", default=DEFAULT_RULES)
    parser.add_argument("--live-rule", default="auto",
                        help="the rule run live; auto: the replayed rule that saves the most tokens with accuracy "
                             "inside the full vote's bootstrap interval (chosen on the full run, run on fresh samples)")
    parser.add_argument("--in-flight", type=int, default=4, help="paths of one problem running at a time (early stop)")
    parser.add_argument("--leads", default="0",
                        help="comma-separated leads (tokens or inf) for the live early-stop runs: the first path of "
                             "each vote runs this far ahead of the others (sgl_consensus.lead_lag)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/early_stop.json")
    parser.add_argument("--report-only", action="store_true")
    ns = parser.parse_args(argv)
    from sgl_consensus.early_stop import EarlyStopError, parse_rule
    from sgl_consensus.models import resolve_model

    try:
        for spec in ([] if ns.live_rule == "auto" else [ns.live_rule]) + ns.rules.split(","):
            parse_rule(spec)
    except EarlyStopError as exc:
        parser.error(str(exc))
    from sgl_consensus.lead_lag import parse_lead

    try:
        ns.leads = [parse_lead(x, "--leads") for x in ns.leads.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    ns.replay_n = [int(x) for x in ns.replay_n.split(",")]
    if any(n > ns.n or n < 1 for n in ns.replay_n):
        parser.error(f"--replay-n values must be in [1, --n={ns.n}], got {ns.replay_n}")
    if ns.report_only:
        report(json.loads(ns.out.read_text()), ns.out)
        return 0
    ns.model = resolve_model(ns.model)
    report(measure(ns), ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

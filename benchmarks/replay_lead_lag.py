#!/usr/bin/env python
"""Offline lead-lag replay: how much verify work does a bounded lead save, and what does it cost in time?

Replays recorded sibling streams (the project's tiny reasoner, 8 paths per problem, T = 0.7 and 1.0)
through `ConsensusDrafter` step by step, as `bench_draft_latency.py` does, under a start schedule:

- `lockstep`: every path starts at step 0;
- `lead H` (`--leads`): path 0 (the leader) starts alone; the followers start at the first step
  after the leader has committed H tokens (or finished). H = `inf` is the naive scout: the leader
  runs to completion first.

Per schedule it reports, summed over problems: group completion steps (the step at which the last
path of a group finishes, i.e. time-to-group on an idle machine), request-steps (total verify work:
each running path costs one verify row per step), target tokens processed (request-steps x draft
tokens: SGLang verifies a fixed-width tree per row, padding included), and tau. No SGLang, no
timing: pure acceptance arithmetic, so it isolates the scheduling effect from the machine.

Also: paced followers, two leaders, per-step draft budget splits, and finished groups not kept.

Usage: .venv/bin/python benchmarks/replay_lead_lag.py [--problems 100] [--n 4,8] [--leads 8,16,32,64,inf]
Writes benchmarks/results/lead_lag_replay.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_draft_latency import accepted_lengths, join_real, load_real  # noqa: E402

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig  # noqa: E402
from sgl_consensus.lead_lag import format_lead as _label  # noqa: E402
from sgl_consensus.lead_lag import parse_lead  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def replay_group(drafter: ConsensusDrafter, group: str, prompt: list[int], samples: list[list[int]],
                 lead: float, draft_tokens: int, leaders: int = 1, pace: float = 0,
                 split: tuple[int, int] | None = None, margin: int = 8) -> dict:
    """One problem's paths under a schedule. Returns step counts.

    The first `leaders` paths start at step 0; the others start once a leader has committed `lead`
    tokens (0 = lock-step) or every leader has finished. With `pace` > 0 a started follower also
    sits out every step in which it is fewer than `pace` tokens behind the furthest live leader
    (it would outrun the drafts it rides), which a scheduler could do by leaving it out of a batch.
    `split` = (low, high) draft budgets per step instead of `draft_tokens` for all: `high` for a path
    with a sibling (live or finished) at least `margin` tokens further on, `low` for the others.
    """
    n = len(samples)
    leaders = min(leaders, n)
    pos: dict[int, int] = {}
    pending: dict[int, list[int]] = {}
    finish_step = [0] * n
    started: set[int] = set()
    request_steps = 0
    target_tokens = 0
    step = 0

    def start(j: int) -> None:
        drafter.add(f"{group}.{j}", group, prompt)
        started.add(j)
        pos[j] = 1  # the prefill commits the first token
        pending[j] = samples[j][:1]

    for j in range(leaders):
        start(j)
    while pos or len(started) < n:
        live_leaders = [pos[j] for j in range(leaders) if j in pos]
        front = max(live_leaders, default=None)
        if len(started) < n and (front is None or front >= lead):
            for j in range(leaders, n):
                if j not in started:
                    start(j)
        running = sorted(
            j for j in pos if j < leaders or front is None or pace <= 0 or front - pos[j] >= pace
        )
        rids = [f"{group}.{j}" for j in running]
        for j, rid in zip(running, rids):
            drafter.extend(rid, pending[j])
            pending[j] = []
        if rids:
            if split is None:
                budgets = None
                target_tokens += draft_tokens * len(rids)
            else:
                furthest = max([pos[j] for j in pos] + [len(samples[j]) for j in started if j not in pos])
                budgets = [split[1] if furthest - pos[j] >= margin else split[0] for j in running]
                target_tokens += sum(budgets)
            tokens, masks = drafter.propose(rids, budgets)
            drafter.maintain()
            conts = [samples[j][pos[j]: pos[j] + 64] for j in running]  # longer than any tree path
            for j, acc in zip(running, accepted_lengths(tokens, masks, conts)):
                advance = min(acc + 1, len(samples[j]) - pos[j])
                pending[j] = samples[j][pos[j]: pos[j] + advance]
                pos[j] += advance
                request_steps += 1
                if pos[j] >= len(samples[j]):
                    drafter.extend(f"{group}.{j}", pending[j])
                    drafter.remove(f"{group}.{j}")
                    del pos[j]
                    finish_step[j] = step + 1
        step += 1
    return {
        "group_steps": max(finish_step),
        "leader_steps": max(finish_step[:leaders]),
        "request_steps": request_steps,
        "target_tokens": target_tokens,
        "output_tokens": sum(len(s) - 1 for s in samples),
    }


def run_schedule(problems, n: int, draft_tokens: int, linger_groups: int = 16, **schedule) -> dict:
    width = max(schedule["split"]) if schedule.get("split") else draft_tokens
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width, linger_groups=linger_groups))
    totals = {"group_steps": 0, "leader_steps": 0, "request_steps": 0, "target_tokens": 0, "output_tokens": 0}
    for i, problem in enumerate(problems):
        row = replay_group(drafter, f"p{i}", problem.prompt, problem.samples[:n], draft_tokens=draft_tokens,
                           **schedule)
        for key in totals:
            totals[key] += row[key]
    totals["tau"] = totals["output_tokens"] / totals["request_steps"]
    return totals


def schedules(leads: list[float]) -> list[tuple[str, dict]]:
    """The schedules compared: bounded leads, the naive scout, paced followers, two leaders, budget splits."""
    named = [(f"lead {_label(h)}", {"lead": h}) for h in leads]
    named += [
        ("lead 16, paced 16", {"lead": 16, "pace": 16}),
        ("lead 32, paced 32", {"lead": 32, "pace": 32}),
        ("2 leaders, lead 16", {"leaders": 2, "lead": 16}),
        ("2 leaders, lead 16, paced 8", {"leaders": 2, "lead": 16, "pace": 8}),
        ("lock-step, budgets 4/12", {"lead": 0, "split": (4, 12)}),
        ("lead 16, budgets 4/12", {"lead": 16, "split": (4, 12)}),
        ("lock-step, no lingering", {"lead": 0, "linger_groups": 0}),
        ("lead inf, no lingering", {"lead": math.inf, "linger_groups": 0}),
    ]
    return named


def _streams(workload: str):
    parts = [load_real(name, prefix="reasoner_streams") for name in workload.split("+")]
    return parts[0] if len(parts) == 1 else join_real(*parts)


def _leads(text: str) -> list[float]:
    try:
        return [parse_lead(x.strip(), f"lead {x.strip()!r}") for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    parser.add_argument("--leads", type=_leads, default=[8, 16, 32, 64, math.inf], help="comma-separated; inf allowed")
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--workloads", default="T07,T10,T07+T10",
                        help="stream sets; T07+T10 joins both temperatures' 8 samples into 16 paths per problem")
    parser.add_argument("--out", type=Path, default=RESULTS / "lead_lag_replay.json")
    args = parser.parse_args()
    rows = []
    named = schedules(args.leads)
    from tqdm import tqdm

    workloads = args.workloads.split(",")
    with tqdm(total=len(workloads) * len(args.n) * (len(named) + 1), desc="schedules", file=sys.stderr) as bar:
        for workload in workloads:
            problems = _streams(workload)[: args.problems]
            available = min(len(p.samples) for p in problems)
            for n in args.n:
                if n > available or (n <= 8 and "+" in workload):  # joined sets only for N beyond one set
                    bar.update(len(named) + 1)
                    continue
                base = run_schedule(problems, n, args.draft_tokens, lead=0)
                rows.append({"workload": workload, "n": n, "schedule": "lock-step", **base})
                bar.update()
                for name, schedule in named:
                    row = run_schedule(problems, n, args.draft_tokens, **schedule)
                    row["work_vs_lockstep"] = row["request_steps"] / base["request_steps"]
                    row["target_tokens_vs_lockstep"] = row["target_tokens"] / base["target_tokens"]
                    row["time_vs_lockstep"] = row["group_steps"] / base["group_steps"]
                    rows.append({"workload": workload, "n": n, "schedule": name, **row})
                    bar.update()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    report = {"command": command, "draft_tokens": args.draft_tokens, "problems": args.problems, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    write_markdown(report, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Lead-lag, offline replay (tiny reasoner streams)",
        "",
        f"Command: `{report['command']}` ({report['problems']} problems per stream set, {report['draft_tokens']} "
        "draft tokens unless a budget split is named).",
        "",
        "work = request-steps (verify rows); target tokens = tree nodes verified (what a per-request verify width",
        "would cost); time = summed group completion steps (an idle machine). All relative to lock-step of the",
        "same streams and N. H = tokens the leader (path 0) commits before its siblings start (inf = it finishes",
        "first); paced P = a started follower sits out steps in which it is fewer than P tokens behind the",
        "leader; budgets lo/hi = per step, hi draft tokens for a path with a sibling at least 8 tokens further on,",
        "lo for the others. Finished groups linger for late siblings unless 'no lingering'.",
        "",
        "| streams | N | schedule | tau | work | target tokens | group time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['workload']} | {r['n']} | {r['schedule']} | {r['tau']:.2f} | {r.get('work_vs_lockstep', 1.0):.3f} | "
            f"{r.get('target_tokens_vs_lockstep', 1.0):.3f} | {r.get('time_vs_lockstep', 1.0):.3f} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

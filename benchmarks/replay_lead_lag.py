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

Usage: .venv/bin/python benchmarks/replay_lead_lag.py [--problems 100] [--n 8] [--leads 8,16,32,64,inf]
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

from bench_draft_latency import accepted_lengths, load_real  # noqa: E402

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def replay_group(drafter: ConsensusDrafter, group: str, prompt: list[int], samples: list[list[int]],
                 lead: float, draft_tokens: int, leaders: int = 1, pace: float = 0) -> dict:
    """One problem's paths under a schedule. Returns step counts.

    The first `leaders` paths start at step 0; the others start once a leader has committed `lead`
    tokens (0 = lock-step) or every leader has finished. With `pace` > 0 a started follower also
    sits out every step in which it is fewer than `pace` tokens behind the furthest live leader
    (it would outrun the drafts it rides), which a scheduler could do by leaving it out of a batch.
    """
    n = len(samples)
    leaders = min(leaders, n)
    pos: dict[int, int] = {}
    pending: dict[int, list[int]] = {}
    finish_step = [0] * n
    started: set[int] = set()
    request_steps = 0
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
            tokens, masks = drafter.propose(rids)
            conts = [samples[j][pos[j]: pos[j] + draft_tokens] for j in running]
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
        "output_tokens": sum(len(s) - 1 for s in samples),
    }


def run_schedule(problems, n: int, draft_tokens: int, linger_groups: int = 16, **schedule) -> dict:
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=draft_tokens, linger_groups=linger_groups))
    totals = {"group_steps": 0, "leader_steps": 0, "request_steps": 0, "output_tokens": 0}
    for i, problem in enumerate(problems):
        row = replay_group(drafter, f"p{i}", problem.prompt, problem.samples[:n], draft_tokens=draft_tokens,
                           **schedule)
        for key in totals:
            totals[key] += row[key]
    totals["tau"] = totals["output_tokens"] / totals["request_steps"]
    totals["target_tokens"] = totals["request_steps"] * draft_tokens
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    parser.add_argument("--leads", type=lambda s: [float(x) for x in s.split(",")], default=[8, 16, 32, 64, math.inf])
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--workloads", default="T07,T10")
    parser.add_argument("--out", type=Path, default=RESULTS / "lead_lag_replay.json")
    args = parser.parse_args()
    rows = []
    for workload in args.workloads.split(","):
        problems = load_real(workload, prefix="reasoner_streams")[: args.problems]
        for n in args.n:
            base = run_schedule(problems, n, 0, args.draft_tokens)
            rows.append({"workload": workload, "n": n, "lead": 0, **base})
            for lead in args.leads:
                row = run_schedule(problems, n, lead, args.draft_tokens)
                row["work_vs_lockstep"] = row["request_steps"] / base["request_steps"]
                row["time_vs_lockstep"] = row["group_steps"] / base["group_steps"]
                rows.append({"workload": workload, "n": n, "lead": lead, **row})
                print(f"{workload} N={n} H={lead}: work x{row['work_vs_lockstep']:.3f}, "
                      f"group time x{row['time_vs_lockstep']:.3f}, tau {row['tau']:.2f} (lock-step {base['tau']:.2f})",
                      flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    report = {"command": command, "draft_tokens": args.draft_tokens, "problems": args.problems,
              "rows": [{**r, "lead": "inf" if r["lead"] == math.inf else r["lead"]} for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    write_markdown(report, args.out.with_suffix(".md"))


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Lead-lag, offline replay (tiny reasoner streams)",
        "",
        f"Command: `{report['command']}` ({report['problems']} problems, {report['draft_tokens']} draft tokens).",
        "work = request-steps (verify rows) relative to lock-step; time = summed group completion steps relative",
        "to lock-step; H = leader's lead in tokens before the followers start (inf = leader finishes first).",
        "",
        "| streams | N | H | tau | request-steps | work vs lock-step | group steps | time vs lock-step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['workload']} | {r['n']} | {r['lead'] if r['lead'] else 'lock-step'} | {r['tau']:.2f} | "
            f"{r['request_steps']} | {r.get('work_vs_lockstep', 1.0):.3f} | {r['group_steps']} | "
            f"{r.get('time_vs_lockstep', 1.0):.3f} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

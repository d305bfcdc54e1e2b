"""CPU engine starts: SGLang's ``spawn`` against the preloaded forkserver (``cpu/preloaded_start.py``).

Part 1 starts the tiny Llama engine (no speculation) ``--rounds`` times with each start method, taking
turns in one process (spawn, preloaded, spawn, ...), and records per start the seconds until the
engine answered a first 4-token greedy request and the CPU seconds its scheduler and detokenizer
spent until then. The first preloaded start includes the forkserver's own imports (once per
process); later ones fork it.

Part 2 (``--demo-rounds``) runs the README's main job (``sgl-consensus demo --algorithms
none,consensus``) with each start method in turn, to show that serving speed does not depend on how
the children started (forked children share the forkserver's memory until they write it).

    .venv/bin/python benchmarks/bench_engine_start.py --rounds 3 --demo-rounds 5 \\
        --out benchmarks/results/engine_start.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPAWN_ENV = "CONSENSUS_CPU_SPAWN"
METHODS = {"spawn": "1", "preloaded": "0"}


def _children_cpu_s(pids_before: set[int]) -> float:
    """CPU seconds of this process's descendants that were not there before (the engine's)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid in pids_before:
            continue
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def time_engine_starts(rounds: int) -> list[dict]:
    import psutil

    from sgl_consensus import cpu

    cpu.activate()
    from sgl_consensus.cpu import preloaded_start
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.testing.engines import engine_kwargs
    from sgl_consensus.testing.tiny_models import build_tiny_model, device_spec

    model = build_tiny_model(device_spec(arch="llama"))
    import sglang.srt.entrypoints.engine  # noqa: F401  (the launcher's own import is not timed)

    starts = []
    for round_index in range(rounds):
        for method, flag in METHODS.items():
            with environment({SPAWN_ENV: flag}):
                before = {c.pid for c in psutil.Process().children(recursive=True)}
                began = time.perf_counter()
                engine = start_engine(**engine_kwargs(model, None))
                engine.generate("the answer is", {"temperature": 0, "max_new_tokens": 4})
                ready_s = time.perf_counter() - began
                # The forkserver (started by the first preloaded start) is not the engine's.
                if method == "preloaded":
                    before.add(preloaded_start.ensure_forkserver())
                children_cpu_s = _children_cpu_s(before)
                engine.shutdown()
            starts.append({"round": round_index, "method": method, "ready_s": round(ready_s, 2),
                           "children_cpu_s": round(children_cpu_s, 2)})
            print(json.dumps(starts[-1]), flush=True)
    return starts


def run_demo(method: str) -> dict:
    env = {**os.environ, SPAWN_ENV: METHODS[method]}
    command = [sys.executable, "-m", "sgl_consensus", "demo", "--algorithms", "none,consensus", "--json"]
    began = time.perf_counter()
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall_s = time.perf_counter() - began
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"bench_engine_start: the demo failed under {method} (exit {run.returncode}): {last}")
    runs = {r["algorithm"]: r for r in json.loads(run.stdout)["runs"]}
    consensus = runs["consensus"]
    return {"method": method, "wall_s": round(wall_s, 1), "none_tokens_per_s": round(runs["none"]["tokens_per_s"], 1),
            "consensus_tokens_per_s": round(consensus["tokens_per_s"], 1),
            "speedup_vs_none": round(consensus["speedup_vs_none"], 3),
            "accept_length": round(consensus["accept_length"], 3),
            "draft_ms_per_step": round(consensus["draft_ms_per_step"], 3)}


def time_demos(rounds: int) -> list[dict]:
    demos = []
    for round_index in range(rounds):
        for method in METHODS:
            demos.append({"round": round_index, **run_demo(method)})
            print(json.dumps(demos[-1]), flush=True)
    return demos


def _median(rows: list[dict], method: str, key: str, skip_first: bool = False) -> float | None:
    values = [r[key] for r in rows if r["method"] == method]
    values = values[1:] if skip_first else values
    return round(statistics.median(values), 3) if values else None


def summary_markdown(result: dict) -> str:
    starts, demos = result["engine_starts"], result["demos"]
    lines = [f"# CPU engine starts: spawn vs the preloaded forkserver ({result['date']})", "",
             f"`{result['command']}` on {result['machine']}.", "",
             "| start | ready (s) | children's CPU until ready (s) |", "|---|---|---|"]
    for r in starts:
        lines.append(f"| {r['method']} (round {r['round']}) | {r['ready_s']} | {r['children_cpu_s']} |")
    lines += ["", f"Medians: spawn {_median(starts, 'spawn', 'ready_s')} s ready, "
              f"{_median(starts, 'spawn', 'children_cpu_s')} s children's CPU; preloaded after the first "
              f"{_median(starts, 'preloaded', 'ready_s', True)} s ready, "
              f"{_median(starts, 'preloaded', 'children_cpu_s', True)} s children's CPU."]
    if demos:
        lines += ["", "README main job (`sgl-consensus demo --algorithms none,consensus`), alternating:", "",
                  "| run | wall (s) | none tok/s | consensus tok/s | x none | tau | draft ms/step |",
                  "|---|---|---|---|---|---|---|"]
        for r in demos:
            lines.append(f"| {r['method']} (round {r['round']}) | {r['wall_s']} | {r['none_tokens_per_s']} | "
                         f"{r['consensus_tokens_per_s']} | {r['speedup_vs_none']} | {r['accept_length']} | "
                         f"{r['draft_ms_per_step']} |")
        lines += ["", "Medians: " + "; ".join(
            f"{m}: wall {_median(demos, m, 'wall_s')} s, x none {_median(demos, m, 'speedup_vs_none')}, "
            f"draft {_median(demos, m, 'draft_ms_per_step')} ms/step" for m in METHODS)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="engine starts per method")
    parser.add_argument("--demo-rounds", type=int, default=0, help="README main jobs per method")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/engine_start.json")
    args = parser.parse_args()
    if args.rounds < 1 or args.demo_rounds < 0:
        parser.error(f"--rounds must be >= 1 and --demo-rounds >= 0, got {args.rounds} and {args.demo_rounds}")
    import platform

    result = {"date": dt.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
              "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
              "engine_starts": time_engine_starts(args.rounds), "demos": time_demos(args.demo_rounds)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(summary_markdown(result))
    print(summary_markdown(result))


if __name__ == "__main__":
    main()

"""The worker's drafting step, old code against new, alternating on one machine.

Runs ``bench_step_phases.py --cores native`` from a checkout of the old code (``--old``, e.g. a git
worktree of the commit before a change) and from this checkout, taking turns (old, new, old, ...)
``--rounds`` times, so that the host's drift between runs (large on shared VMs) falls on both
alike. Writes every run's per-phase milliseconds at the full batch, and the medians, to ``--out``
(JSON and a Markdown table).

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/ab_step_phases.py --old /tmp/old --rounds 3 \\
        --out benchmarks/results/step_phases_ab.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(tree: Path, waves: int) -> dict:
    """One native-core run of the step benchmark from the checkout at ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, str(tree / "benchmarks/bench_step_phases.py"), "--cores", "native",
                   "--waves", str(waves), "--out", str(out)]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise SystemExit(f"ab_step_phases: the step benchmark of {tree} failed (exit {run.returncode}): {last}")
        return json.loads(out.read_text())["runs"][0]


def summary(runs: list[dict], code: str) -> dict:
    """Medians over the runs of ``code``: the step, each phase the verify waits for, and the
    after-launch work (absent in code from before it existed)."""
    mine = [r for r in runs if r["code"] == code]
    phases = {p for r in mine for p in r["phase_ms_per_step_full_batch"]}
    after = {p for r in mine for p in r.get("after_launch_ms_per_step_full_batch", {})}
    return {"ms_per_step_full_batch": statistics.median(r["ms_per_step_full_batch"] for r in mine),
            "phases": {p: statistics.median(r["phase_ms_per_step_full_batch"].get(p, 0.0) for r in mine)
                       for p in sorted(phases)},
            "after_launch": {p: statistics.median(r["after_launch_ms_per_step_full_batch"][p] for r in mine)
                             for p in sorted(after)}}


def report(data: dict, out: Path) -> None:
    lines = ["# Drafting step at the full batch: old code against new, alternating", "",
             f"Command: `{data['command']}` ({data['started_utc']}, {data['cpu_count']}-core machine). Old: "
             f"`{data['old']}`; new: this checkout. ms per step over the steps at the full batch; the "
             "verify waits for the step, the after-launch work runs while the device computes.", "",
             "| code | round | ms / step | phases the verify waits for | after launch (total) |", "|---|---|---|---|---|"]
    for r in data["runs"]:
        phases = ", ".join(f"{p} {v:.3f}" for p, v in r["phase_ms_per_step_full_batch"].items())
        after = r.get("after_launch_ms_per_step_full_batch")
        total = f"{sum(after.values()):.3f}" if after else "-"
        lines.append(f"| {r['code']} | {r['round']} | {r['ms_per_step_full_batch']:.3f} | {phases} | {total} |")
    old, new = data["median"]["old"], data["median"]["new"]
    lines += ["", f"Median step: old {old['ms_per_step_full_batch']:.3f} ms, new {new['ms_per_step_full_batch']:.3f} ms "
              f"({new['ms_per_step_full_batch'] / old['ms_per_step_full_batch']:.2f}x)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waves", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_phases_ab.json")
    ns = parser.parse_args(argv)
    if not (ns.old / "benchmarks/bench_step_phases.py").is_file():
        parser.error(f"--old: {ns.old} has no benchmarks/bench_step_phases.py")
    if ns.rounds < 1 or ns.waves < 1:
        parser.error(f"--rounds and --waves must be >= 1, got {ns.rounds} and {ns.waves}")
    data = {"command": shlex.join([".venv/bin/python", "benchmarks/ab_step_phases.py"] + sys.argv[1:]),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "old": str(ns.old), "runs": []}
    for round_ in range(1, ns.rounds + 1):
        order = (("old", ns.old), ("new", ROOT)) if round_ % 2 else (("new", ROOT), ("old", ns.old))
        for code, tree in order:
            data["runs"].append({"code": code, "round": round_, **run_once(tree, ns.waves)})
            print(code, round_, round(data["runs"][-1]["ms_per_step_full_batch"], 3), flush=True)
    data["median"] = {code: summary(data["runs"], code) for code in ("old", "new")}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(data, indent=1))
    report(data, ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

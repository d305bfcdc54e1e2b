"""The worker's per-step drafting, phase by phase, at a full batch, outside SGLang.

``sgl_consensus.adapter.draft_step.DraftStep`` is the code the consensus worker runs before every
verify launch (``plan``: sync the committed tokens, propose, choose the width, lay out the trees) and
after it (``after_launch``: the last step's outcomes and cost to the width policy, departures,
merges). This drives it with stand-in requests (the fields the tracker reads from
SGLang's ``Req``) that replay recorded sibling streams of the tiny reasoner: ``--groups`` groups of
``--paths`` paths in lock-step, so the batch starts at groups x paths; each step commits, per
request, the draft nodes its real continuation walks through plus one bonus token (what an exact
verify commits when the draft matches the sampled path), with the tokens' recorded logprobs as the
verify's record. Waves of groups run one after another until ``--waves`` are done.

Reports, per drafter core (native C++ and the Python reference, same streams, one after the other):
milliseconds per step over the steps at the full batch, split into the phases the verify waits for
(``adapter.metrics.DRAFT_PHASES``) and the after-launch work (``AFTER_LAUNCH_PHASES``), and per
request-step (the verify's wait). Isolation removes the scheduler, the
tokenizer and detokenizer processes that share this machine's cores in the server, so in-server
phases run slower (compare ``draft_phase_ms_per_step`` in ``/server_info``).

    .venv/bin/python benchmarks/bench_step_phases.py --out benchmarks/results/step_phases.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shlex
import sys
import time
from array import array
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sgl_consensus.adapter.draft_step import DraftStep, VerifyRecord  # noqa: E402
from sgl_consensus.adapter.metrics import AFTER_LAUNCH_PHASES, DRAFT_PHASES, DraftMetrics  # noqa: E402
from sgl_consensus.adapter.request_tracker import RequestTracker  # noqa: E402
from sgl_consensus.adaptive import TenantWidthPolicies, width_set  # noqa: E402
from sgl_consensus.drafting import ConsensusDrafter  # noqa: E402
from sgl_consensus.drafting.core import CORE_WORK  # noqa: E402
from sgl_consensus.grouping import SiblingGrouper  # noqa: E402
from sgl_consensus.settings import WorkerSettings  # noqa: E402

import scipy.optimize  # noqa: E402,F401  (the cost model's solver: imported once, as in the server)

STREAMS = ROOT / "benchmarks/data/reasoner_streams_T07.json.gz"


class StandInRequest:
    """The fields of SGLang's ``Req`` the tracker reads, over one recorded sample."""

    def __init__(self, rid: str, prompt: list[int], sample: list[int], logprobs: list[float], group: str) -> None:
        self.rid = rid
        self.origin_input_ids = self.origin_input_ids_unpadded = array("q", prompt)
        self.output_ids = array("q")
        self.sampling_params = SimpleNamespace(n=1, max_new_tokens=len(sample),
                                               custom_params={"consensus_group": group})
        self.sample, self.logprobs = sample, logprobs

    def finished(self) -> bool:
        return len(self.output_ids) >= len(self.sample)


def _wave(problems: list[dict], wave: int, groups: int, paths: int) -> list[StandInRequest]:
    reqs = []
    for g in range(groups):
        p = problems[(wave * groups + g) % len(problems)]
        for i in range(paths):
            reqs.append(StandInRequest(f"w{wave}g{g}p{i}", p["prompt_ids"], p["samples"][i % len(p["samples"])],
                                       p["logprobs"][i % len(p["samples"])], f"w{wave}g{g}"))
    return reqs


def _commit(step: DraftStep, reqs: list[StandInRequest], plan) -> VerifyRecord:
    """What an exact verify commits: the draft nodes each real continuation walks, plus a bonus token."""
    proposal = step.proposal
    width = plan.width
    sizes = np.minimum(proposal.candidates.lengths, width)
    futures = [r.sample[len(r.output_ids): len(r.output_ids) + width] for r in reqs]
    accepted = step.tracker.drafter.accepted(proposal.candidates, width, futures)
    counts = accepted.sum(axis=1) + 1
    logprobs = np.zeros((len(reqs), width + 1), dtype=np.float32)
    committed = np.zeros((len(reqs), width + 1), dtype=np.int64)
    lens = np.zeros(len(reqs), dtype=np.int64)
    for b, r in enumerate(reqs):
        start = len(r.output_ids)
        take = r.sample[start: start + int(counts[b])]
        r.output_ids.extend(take)
        lens[b] = len(take)
        committed[b, : len(take)] = take
        logprobs[b, : len(take)] = r.logprobs[start: start + len(take)]
    return VerifyRecord(plan.rids, logprobs, lens, None, plan.tokens, sizes.tolist(), committed)


def run_core(core: str, problems: list[dict], ns: argparse.Namespace, drafter: ConsensusDrafter | None = None) -> dict:
    """One run over ``core`` (or over ``drafter``, made with the worker's settings)."""
    settings = WorkerSettings()
    if drafter is None:
        drafter = ConsensusDrafter(settings.draft_config(ns.draft_tokens), core=core)
    tracker = RequestTracker(drafter, SiblingGrouper(settings.grouping))
    metrics = DraftMetrics(log_interval_s=0)
    step = DraftStep(tracker, TenantWidthPolicies(width_set(ns.draft_tokens)), metrics)
    full = ns.groups * ns.paths
    per_phase = np.zeros(len(DRAFT_PHASES))
    per_after = np.zeros(len(AFTER_LAUNCH_PHASES))
    per_work = np.zeros(len(CORE_WORK))  # seconds inside the data plane (`DraftCore.busy`)
    full_steps = full_seconds = request_steps = all_seconds = steps = tokens = 0
    for wave in range(ns.waves):
        reqs = _wave(problems, wave, ns.groups, ns.paths)
        for r in reqs:
            r.output_ids.append(r.sample[0])  # the prefill's token
        tracker.admit(reqs)
        verified = None
        while reqs:
            before = np.array(metrics.phase_seconds)
            before_after = np.array(metrics.after_launch_seconds)
            before_work = _busy_seconds(drafter)
            seq_lens = np.array([len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs])  # SGLang's, as the worker reads them
            plan = step.plan(reqs, seq_lens, None, verified)
            step.after_launch(reqs)  # where the worker runs it: the verify is launched
            steps += 1
            request_steps += len(reqs)
            all_seconds += plan.seconds
            if len(reqs) == full:
                full_steps += 1
                full_seconds += plan.seconds
                per_phase += np.array(metrics.phase_seconds) - before
                per_after += np.array(metrics.after_launch_seconds) - before_after
                per_work += _busy_seconds(drafter) - before_work
            verified = _commit(step, reqs, plan)
            tokens += int(verified.accept_lens.sum())
            keep = [not r.finished() for r in reqs]
            reqs = [r for r, k in zip(reqs, keep) if k]
            verified = _keep_rows(verified, keep)
    return {"core": drafter.core.name, "steps": steps, "full_batch_steps": full_steps,
            "ms_per_step_full_batch": 1000 * full_seconds / max(full_steps, 1),
            "phase_ms_per_step_full_batch": {name: round(1000 * s / max(full_steps, 1), 4)
                                             for name, s in zip(DRAFT_PHASES, per_phase)},
            "after_launch_ms_per_step_full_batch": {name: round(1000 * s / max(full_steps, 1), 4)
                                                    for name, s in zip(AFTER_LAUNCH_PHASES, per_after)},
            "core_ms_per_step_full_batch": {work: round(1000 * s / max(full_steps, 1), 4)
                                            for work, s in zip(CORE_WORK, per_work)},
            "us_per_request_step": 1e6 * all_seconds / max(request_steps, 1),
            "tokens_per_step_per_request": tokens / max(request_steps, 1),
            "mean_width": metrics.snapshot()["mean_width"]}


def _busy_seconds(drafter: ConsensusDrafter) -> np.ndarray:
    """Seconds the drafter's data plane has spent on each kind of work so far (`CORE_WORK` order)."""
    busy = drafter.core.busy()
    return np.array([busy[work][0] for work in CORE_WORK])


def _keep_rows(verified: VerifyRecord, keep: list[bool]) -> VerifyRecord:
    """The record of the requests still running (as SGLang's next batch would hold them)."""
    rows = np.flatnonzero(keep)
    return VerifyRecord([verified.rids[i] for i in rows], verified.logprobs[rows], verified.accept_lens[rows],
                        None, verified.node_tokens[rows], [verified.node_counts[i] for i in rows],
                        verified.tokens[rows])


def report(data: dict, out: Path) -> None:
    lines = ["# Worker drafting step, phase by phase, outside SGLang", "",
             f"Command: `{data['command']}` ({data['started_utc']}); machine: {data['cpu_count']}-core CPU VM. "
             f"{data['settings']['groups']} groups x {data['settings']['paths']} paths of the tiny reasoner's "
             f"recorded streams (T = 0.7) in lock-step, {data['settings']['waves']} waves; ms per step over the "
             f"steps at the full batch of {data['settings']['groups'] * data['settings']['paths']}.", "",
             "The verify waits for the step (`plan`); the after-launch work runs while the device computes.", "",
             "| core | ms / step (full batch) | " + " | ".join(DRAFT_PHASES) + " | after launch: "
             + " | ".join(AFTER_LAUNCH_PHASES) + " | inside the core: " + " | ".join(CORE_WORK)
             + " | us / request-step | tokens / step | mean width |",
             "|---" * (len(DRAFT_PHASES) + len(AFTER_LAUNCH_PHASES) + len(CORE_WORK) + 5) + "|"]
    for r in data["runs"]:
        phases = " | ".join(f"{r['phase_ms_per_step_full_batch'][p]:.3f}" for p in DRAFT_PHASES)
        after = " | ".join(f"{r.get('after_launch_ms_per_step_full_batch', {}).get(p, float('nan')):.3f}"
                           for p in AFTER_LAUNCH_PHASES)
        inside = " | ".join(f"{r.get('core_ms_per_step_full_batch', {}).get(w, float('nan')):.3f}" for w in CORE_WORK)
        lines.append(f"| {r['core']} | {r['ms_per_step_full_batch']:.3f} | {phases} | {after} | {inside} | "
                     f"{r['us_per_request_step']:.1f} | {r['tokens_per_step_per_request']:.2f} | {r['mean_width']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--cores", default="native,python")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_phases.json")
    ns = parser.parse_args(argv)
    for name, value in (("--groups", ns.groups), ("--paths", ns.paths), ("--waves", ns.waves)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    unknown = sorted(set(ns.cores.split(",")) - {"native", "python", "auto"})
    if unknown:
        parser.error(f"--cores: unknown core(s) {unknown}; choose from native, python, auto")
    with gzip.open(STREAMS, "rt") as f:
        problems = json.load(f)["problems"]
    data = {"command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "settings": {k: getattr(ns, k) for k in ("groups", "paths", "waves", "draft_tokens")},
            "runs": []}
    for core in ns.cores.split(","):
        start = time.perf_counter()
        data["runs"].append({**run_core(core, problems, ns), "wall_s": time.perf_counter() - start})
        print(json.dumps(data["runs"][-1]), flush=True)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(data, indent=1))
    report(data, ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

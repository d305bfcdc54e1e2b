"""The compiled draft core, old source against new, on one recorded sequence of core calls.

Records every call the drafter makes into its native core while ``bench_step_phases`` runs (the
worker's per-step drafting over the tiny reasoner's recorded sibling streams: ``--groups`` x
``--paths`` lock-step paths, ``--waves`` waves), then replays that sequence against two builds of
``core.cpp`` (``--old``: a source file, e.g. from ``git show <commit>:sgl_consensus/drafting/native/core.cpp``;
new: this checkout's), taking turns ``--rounds`` times, and times the C calls alone: the trie writes
(``extend_rows``), the proposals (``propose``, with any writes the general sync path queued) and
the global-corpus merges (``merge_step``), in ms per step. Both builds must reproduce the recorded
drafts exactly; a build that does not is named, not timed.

``--evict-mb`` touches that many MB before each write and each proposal, as the interpreter's
work between the core's calls does in the worker (0: the core's data stays in the caches between
calls, which flatters it).

    git show HEAD~1:sgl_consensus/drafting/native/core.cpp > /tmp/core_old.cpp
    .venv/bin/python benchmarks/ab_core_replay.py --old /tmp/core_old.cpp --rounds 6 \\
        --out benchmarks/results/core_replay_ab.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import gzip
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench_step_phases  # noqa: E402
from sgl_consensus.drafting import ConsensusDrafter  # noqa: E402
from sgl_consensus.drafting.core import CORE_WORK  # noqa: E402
from sgl_consensus.drafting.native import binding, build  # noqa: E402
from sgl_consensus.settings import WorkerSettings  # noqa: E402

TIMED = ("extend_rows", "propose", "merge_step")
# The same work timed by the core itself (`NativeCore.busy`): the C code alone, without the binding.
INSIDE = tuple(f"core_{work}" for work in CORE_WORK)
COLUMNS = TIMED + INSIDE
RECORDED = ("new_trie", "set_members", "write", "new_corpus", "set_generations", "new_request", "free_request",
            "extend_many", "extend_rows", "merge_start", "merge_step", "propose", "request_batch")
MADE = ("new_trie", "new_corpus", "merge_start")  # calls whose result is a handle later calls pass back


def _recording(name: str):
    method = getattr(binding.NativeCore, name)

    def call(self, *args):
        result = method(self, *args)
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        self.log.append((name, copies, (result.block.copy(), result.scores.copy()) if name == "propose" else result))
        return result
    return call


class RecordingCore(binding.NativeCore):
    """A native core that logs every call of ``RECORDED`` (arguments copied, proposals kept)."""

    def __init__(self, config, log: list) -> None:
        super().__init__(config)
        self.log = log


for _name in RECORDED:
    setattr(RecordingCore, _name, _recording(_name))


def record(ns: argparse.Namespace) -> tuple[object, list]:
    """The drafting run's core calls, and the draft config they ran under."""
    with gzip.open(bench_step_phases.STREAMS, "rt") as f:
        problems = json.load(f)["problems"]
    config = WorkerSettings().draft_config(ns.draft_tokens)
    log: list = []
    drafter = ConsensusDrafter(config, core=RecordingCore(config, log))
    bench_step_phases.run_core("native", problems, ns, drafter=drafter)
    return config, log


def replay(library, config, log: list, evict: np.ndarray) -> dict[str, float]:
    """ms per step of each timed call over the log, against ``library``; raises if a draft differs."""
    core = binding.NativeCore(config, library)
    made: dict[int, object] = {}  # id of a recorded handle -> this replay's

    def mine(value):
        return made.get(id(value), value) if isinstance(value, binding._Handle) else value

    seconds = dict.fromkeys(TIMED, 0.0)
    steps = 0
    gc.disable()
    try:
        for name, args, result in log:
            call = getattr(core, name)
            args = [mine(a) for a in args]
            if name in MADE:
                made[id(result)] = call(*args)
                continue
            if name == "new_request":  # request ids are plain integers, the same in every replay
                if call(*args) != result:
                    raise DraftsDiffer(f"request id {result} came out otherwise")
                continue
            if evict.size and name in ("extend_rows", "propose"):
                evict += 1.0  # the interpreter's work between calls, as far as the caches see it
            start = time.perf_counter()
            out = call(*args)
            elapsed = time.perf_counter() - start
            if name in seconds:
                seconds[name] += elapsed
            if name == "propose":
                steps += 1
                if not (np.array_equal(out.block, result[0]) and np.array_equal(out.scores, result[1])):
                    raise DraftsDiffer(f"step {steps}: the drafts differ from the recorded ones")
    finally:
        gc.enable()
    inside = {f"core_{work}": busy for work, (busy, _) in core.busy().items()}
    return {name: 1000 * s / max(steps, 1) for name, s in {**seconds, **inside}.items()}


class DraftsDiffer(RuntimeError):
    pass


def report(data: dict, out: Path) -> None:
    lines = ["# Compiled draft core: old source against new on one recorded call sequence", "",
             f"Command: `{data['command']}` ({data['started_utc']}, {data['cpu_count']}-core machine). "
             f"Old: `{data['old']}`; new: this checkout's `core.cpp`. {data['calls']} recorded calls over "
             f"{data['steps']} drafting steps ({data['settings']['groups']} groups x {data['settings']['paths']} "
             f"paths, {data['settings']['waves']} waves); {data['settings']['evict_mb']} MB touched before each "
             "write and proposal. ms per step (mean over all steps, batch sizes as the run had them); the "
             "`core_*` columns time the same work inside the C core (`NativeCore.busy`: without the binding's "
             "Python).", "",
             "| code | round | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for run in data["runs"]:
        lines.append(f"| {run['code']} | {run['round']} | " + " | ".join(f"{run[t]:.4f}" for t in COLUMNS) + " |")
    lines += ["", "Medians: " + "; ".join(
        f"{code}: " + ", ".join(f"{t} {data['medians'][code][t]:.4f}" for t in COLUMNS) for code in ("old", "new"))]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the old version of core.cpp")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--waves", type=int, default=12)
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--evict-mb", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/core_replay_ab.json")
    ns = parser.parse_args(argv)
    for name, value in (("--rounds", ns.rounds), ("--groups", ns.groups), ("--paths", ns.paths),
                        ("--waves", ns.waves)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if ns.evict_mb < 0:
        parser.error(f"--evict-mb must be >= 0, got {ns.evict_mb}")
    if not ns.old.is_file():
        parser.error(f"--old: no such file {str(ns.old)!r}")
    with tempfile.TemporaryDirectory() as tmp:
        libraries = {}
        for code in ("old", "new"):
            try:  # new: this checkout's build (cached by source digest), old: compiled here
                path = build.build() if code == "new" else build.compile_library(ns.old, Path(tmp) / "old.so")
                libraries[code] = binding.load_library(path)
            except build.NativeCoreUnavailable as exc:
                raise SystemExit(f"ab_core_replay: the {code} core: {exc}") from None
        config, log = record(ns)
        evict = np.ones(int(ns.evict_mb * (1 << 20)) // 8)
        runs = []
        for turn in range(ns.rounds):
            for code in (("old", "new") if turn % 2 == 0 else ("new", "old")):
                try:
                    times = replay(libraries[code], config, log, evict)
                except DraftsDiffer as exc:
                    raise SystemExit(f"ab_core_replay: the {code} core: {exc}") from None
                runs.append({"code": code, "round": turn + 1, **{t: round(v, 5) for t, v in times.items()}})
                print(json.dumps(runs[-1]), flush=True)
    medians = {code: {t: statistics.median(r[t] for r in runs if r["code"] == code) for t in COLUMNS}
               for code in ("old", "new")}
    data = {"command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "old": str(ns.old), "calls": len(log),
            "steps": sum(1 for name, _, _ in log if name == "propose"),
            "settings": {k: getattr(ns, k) for k in ("groups", "paths", "waves", "draft_tokens", "evict_mb")},
            "runs": runs, "medians": medians}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(data, indent=1))
    report(data, ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each verify width cost in a benchmark run, from the width policy's recorded cost window.

``bench_multisample.py`` keeps, per consensus run, the policy's last cost observations (batch,
width, attended keys, step seconds, whether the step followed the one before it). This prints, per
run: the median step seconds of each width at the run's most common batch size, each width's cost
relative to width 1, and what the cost model predicts from the same window, fitted two ways: from
the levels alone (the model before neighbouring-step differences) and as the policy fits it now.
Run with ``CONSENSUS_ADAPTIVE=cycle`` (every width in turn) the medians are the ground truth the fits
should match: neighbouring steps of every width, under the same load.

    python benchmarks/width_costs.py benchmarks/results/smollm2_width_cost_cycle.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgl_consensus.adaptive import CostModel  # noqa: E402


def fitted(rows: list[list[float]], neighbours: bool) -> CostModel:
    """The cost model refitted over ``rows``; ``neighbours=False`` hides which steps were
    neighbours, so the width terms come from the levels alone."""
    model = CostModel(window=max(len(rows), 1))
    for batch, width, keys, seconds, follows in rows:
        model.record(int(batch), int(width), int(keys), float(seconds), bool(follows) and neighbours)
    model.refit()
    return model


def summarise(rows: list[list[float]]) -> dict:
    """Per-width medians at the most common batch size, and both fits' predictions there."""
    table = np.asarray(rows, dtype=np.float64)
    batch = int(Counter(table[:, 0].astype(int).tolist()).most_common(1)[0][0])
    at_batch = table[table[:, 0] == batch]
    keys = int(np.median(at_batch[:, 2]))
    widths = sorted({int(w) for w in table[:, 1]})
    medians = {w: float(np.median(at_batch[at_batch[:, 1] == w, 3])) for w in widths
               if (at_batch[:, 1] == w).any()}
    steps = {w: int((at_batch[:, 1] == w).sum()) for w in medians}
    out = {"batch": batch, "keys": keys, "steps": steps, "median_seconds": medians}
    for name, neighbours in (("levels_fit", False), ("policy_fit", True)):
        model = fitted(rows, neighbours)
        predicted = model.predict_widths(batch, np.asarray(widths, dtype=np.float64), keys)
        out[name] = {w: round(float(p), 4) for w, p in zip(widths, predicted)}
    base = medians.get(1)
    if base:
        out["median_vs_width_1"] = {w: round(m / base, 3) for w, m in medians.items()}
    for name in ("levels_fit", "policy_fit"):
        if 1 in out[name] and out[name][1] > 0:
            out[name + "_vs_width_1"] = {w: round(p / out[name][1], 3) for w, p in out[name].items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="bench_multisample.py JSON files")
    args = p.parse_args()
    for path in args.results:
        if not path.is_file():
            print(f"error: no such results file: {path}", file=sys.stderr)
            return 2
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            print(f"error: {path} is not a bench_multisample.py JSON file ({exc})", file=sys.stderr)
            return 2
        runs = [r for r in (data.get("runs", []) if isinstance(data, dict) else [])
                if (r.get("width_policy") or {}).get("cost_window")]
        if not runs:
            print(f"{path}: no run with a recorded cost window (recorded since the paired cost model)")
        for run in runs:
            label = f"{run.get('regime')} {run.get('algorithm')} N={run.get('n')}"
            print(f"{path.name}: {label}: {json.dumps(summarise(run['width_policy']['cost_window']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

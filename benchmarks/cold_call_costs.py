"""What one Python-level operation of the drafting step costs when the caches are cold.

In the CPU server the model's forward pass runs on the same cores between two drafting steps and
leaves the caches holding its weights and activations, so every operation of the next step first
reloads the interpreter's and the library's code and data it needs. This times the building blocks
of the worker's step (a ctypes call into the native core, an array's address, a small NumPy
allocation, a list comparison of a batch's request ids, ...) one at a time, each after touching
``--evict-mb`` MB (as the forward does) and, for comparison, with nothing touched in between
(warm). Medians over ``--reps`` repetitions, in microseconds.

    .venv/bin/python benchmarks/cold_call_costs.py --out benchmarks/results/cold_call_costs.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sgl_consensus.drafting.config import DraftConfig  # noqa: E402
from sgl_consensus.drafting.native import binding  # noqa: E402


def operations(core: binding.NativeCore, batch: int) -> dict[str, Callable[[], object]]:
    """The step's building blocks, each a closure over data made once."""
    lib = core.lib
    arrays = [np.zeros(batch, dtype=np.int64) for _ in range(6)]
    rids = [f"req-{i}" for i in range(batch)]
    same_rids = list(rids)
    # sgc_extend_rows over no rows: what its arguments cost, through ctypes and through fastcall.c
    requests, tokens, lens, last = (np.zeros(0, dtype=np.int32), np.zeros((0, 4), dtype=np.int64),
                                    np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    out, info = np.zeros(1), np.zeros(3, dtype=np.int64)
    out_address, info_address = binding._address(out), binding._address(info)  # the binding keeps these
    address = binding._address
    fast = binding.load_fastcall()
    operations = {
        "nothing (the timer and a call)": lambda: None,
        "ctypes call, no arguments (sgc_abi_version)": lambda: lib.sgc_abi_version(),
        "an array's address (binding._address)": lambda: binding._address(arrays[0]),
        "six arrays' addresses": lambda: [binding._address(a) for a in arrays],
        f"np.empty({batch}, int64)": lambda: np.empty(batch, dtype=np.int64),
        f"list == list ({batch} request ids)": lambda: rids == same_rids,
        f"ndarray.tolist ({batch} ints)": lambda: arrays[0].tolist(),
        "NativeCore.busy (a ctypes call with 4 arguments, 2 arrays made)": core.busy,
        "sgc_extend_rows through ctypes, no rows (12 arguments, 4 addresses taken, as the binding does)":
            lambda: lib.sgc_extend_rows(core._pointer, address(arrays[0]), 0, address(arrays[1]), 4, address(arrays[2]),
                                        None, 0, None, out_address, info_address, address(arrays[3])),
    }
    if fast is not None:
        operations["sgc_extend_rows through fastcall.c, no rows (10 arguments, 7 arrays checked)"] = \
            lambda: fast.extend_rows(core._extend_rows_function, core._pointer, requests, tokens, lens, None, None,
                                     out, info, last)
    return operations


def time_one(operation: Callable[[], object], evict: np.ndarray | None, reps: int) -> float:
    samples = []
    for _ in range(reps):
        if evict is not None:
            np.add(evict, 1.0, out=evict)  # the forward's footprint, as far as the caches see it
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return 1e6 * statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evict-mb", type=float, default=32.0)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cold_call_costs.json")
    ns = parser.parse_args(argv)
    core = binding.NativeCore(DraftConfig())
    evict = np.zeros(max(int(ns.evict_mb * 2**20) // 8, 1))
    rows = []
    gc.disable()
    try:
        for name, operation in operations(core, ns.batch).items():
            rows.append({"operation": name, "cold_us": time_one(operation, evict, ns.reps),
                         "warm_us": time_one(operation, None, ns.reps)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        gc.enable()
    data = {"command": shlex.join([".venv/bin/python", *sys.argv]),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "settings": vars(ns) | {"out": str(ns.out)}, "rows": rows}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# One operation of the drafting step, cold and warm", "",
             f"Command: `{data['command']}` ({data['started_utc']}, {data['cpu_count']}-core machine). Cold: "
             f"{ns.evict_mb:g} MB touched before each repetition (the forward pass between two steps in the CPU "
             f"server); warm: nothing in between. Medians of {ns.reps} repetitions, microseconds.", "",
             "| operation | cold (us) | warm (us) |", "|---|---|---|"]
    lines += [f"| {r['operation']} | {r['cold_us']:.1f} | {r['warm_us']:.2f} |" for r in rows]
    ns.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``sgl-consensus gpu-check``: one command that shows whether the consensus worker is right and fast on a GPU.

Phases, each in its own process with its own time limit (8 minutes in all on one H100/H200); each
phase's result is added to ``OUT/gpu_check.json`` as soon as it ends, and a table is printed last:

- ``preflight``: versions, the plugin's entry point, and SGLang's CUDA tree kernels against this
  project's pure-torch reference (``testing.cuda_tree_reference``): tree links rebuilt from masks,
  and tree speculative sampling replayed with the kernel's own coins, on the drafter's real trees;
- ``engine:<variant>``, one engine at a time (``none``, SGLang's ``ngram``, ``consensus`` (width
  chosen every step), ``consensus_no_overlap``, ``consensus_eager`` = without CUDA graphs,
  ``consensus_fixed`` = the full width every step and ``consensus_plain`` = width-1 steps as plain
  decode forwards, both on request: ``--phases``; FlashInfer attention), each with a warm-up
  request first: greedy outputs of fixed prompts; for none / ngram / consensus / fixed / plain also
  samples for the distribution checks (T = 1; T = 0.7 with top-p 0.9; a logit bias on token 0 with
  short prompts, the padding case) and tokens/s on the demo workload, lock-step and staggered;
- ``report``: greedy outputs against ``none`` (the first divergence with none's top-2 logprob
  margin there), distribution p-values against ``none``, tau, draft ms per step (and the compiled
  core's part of it), speed ratios.

Without CUDA it exits 2 with one line. ``--device cpu`` rehearses every phase on this machine's CPU
(SGLang under ``sgl_consensus.cpu``), small, for the project's own tests. Runs from the source tree
too: ``python -m sgl_consensus gpu-check --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"algorithm": None},
    "ngram": {"algorithm": "NGRAM"},
    "consensus": {"algorithm": "CONSENSUS"},
    "consensus_no_overlap": {"algorithm": "CONSENSUS", "engine": {"disable_overlap_schedule": True}},
    "consensus_eager": {"algorithm": "CONSENSUS", "engine": {"disable_cuda_graph": True}},
    # the full width every step (the adaptive width's baseline; full-width CUDA graphs every step)
    "consensus_fixed": {"algorithm": "CONSENSUS", "env": {"CONSENSUS_ADAPTIVE": "off"}},
    # width-1 steps as plain decode forwards (CPU's default; on CUDA they run without graphs)
    "consensus_plain": {"algorithm": "CONSENSUS", "env": {"CONSENSUS_PLAIN_DECODE": "on"}},
}
SAMPLED_VARIANTS = ("none", "ngram", "consensus", "consensus_fixed", "consensus_plain")  # distributions, speed
# name -> seconds allowed (the default phases stay within 8 minutes; the last two are extra, on request)
PHASE_LIMITS = {"preflight": 60, "engine:none": 90, "engine:ngram": 80, "engine:consensus": 90,
                "engine:consensus_no_overlap": 70, "engine:consensus_eager": 70, "engine:consensus_fixed": 90,
                "engine:consensus_plain": 90}
DEFAULT_PHASES = [name for name in PHASE_LIMITS if name not in ("engine:consensus_fixed", "engine:consensus_plain")]
DRAFT_TOKENS = 8
SETTINGS = {"T1.0": {"temperature": 1.0}, "T0.7_top_p0.9": {"temperature": 0.7, "top_p": 0.9},
            "bias0_short": {"temperature": 1.0, "logit_bias": {"0": 2.0}}}


# ------------------------------------------------------------------------------------ sizes
def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"greedy_tokens": 12, "samples": 40, "sample_tokens": 3, "problems": 2, "paths": 2, "new_tokens": 16}
    return {"greedy_tokens": 48, "samples": 300, "sample_tokens": 8, "problems": 8, "paths": 8, "new_tokens": 128}


# ------------------------------------------------------------------------------------ phases
def phase_preflight(ns: argparse.Namespace) -> dict:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "device": ns.device}
    if ns.device == "cuda":
        out.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name())
    for dist in ("sglang", "flashinfer-python", "sglang-kernel", "sgl-kernel"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    plugins = {ep.name: ep.value for ep in md.entry_points(group="sglang.srt.plugins")}
    out["plugin_entry_point"] = plugins.get("consensus")
    out["draft_core"], out["draft_core_calls"] = _draft_core()
    out["kernels"] = _kernel_checks(ns.device)
    out["ok"] = out["plugin_entry_point"] is not None and all(
        check.get("mismatches", 0) == 0 for check in out["kernels"].values())
    return out


def _draft_core() -> tuple[str, str | None]:
    """Which data plane the drafter gets on this machine (``native`` needs a C++ compiler), and how
    the native one's per-step calls are made (``fastcall`` needs Python's and NumPy's headers)."""
    from sgl_consensus.drafting import ConsensusDrafter

    core = ConsensusDrafter().core
    return core.name, getattr(core, "calls", None)


def _drafter_trees(batch: int, width: int, seed: int = 0):
    """Real trees of the consensus drafter on random sibling streams (padding included)."""
    import random

    from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

    rng = random.Random(seed)
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width))
    rids = [(i // 4, i % 4) for i in range(batch)]
    for rid in rids:
        drafter.add(rid, rid[0], [rng.randrange(12) for _ in range(6)])
    for _ in range(8):
        for rid in rids:
            drafter.extend(rid, [rng.randrange(12) for _ in range(rng.randint(1, 3))])
    return drafter.propose(rids)


def _kernel_checks(device: str) -> dict:
    import torch

    from sgl_consensus.testing.cuda_tree_reference import tree_links, verify_tree

    n, batch, vocab = DRAFT_TOKENS, 16, 12
    tokens, masks = _drafter_trees(batch, n)
    checks: dict[str, Any] = {}
    from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_func

    dev = torch.device(device)
    mask_t = torch.from_numpy(masks.reshape(-1)).to(dev)
    seq_lens = torch.full((batch,), 10, dtype=torch.int64, device=dev)
    positions = torch.empty(batch * n, dtype=torch.int64, device=dev)
    r_index, r_next, r_sib = (torch.empty((batch, n), dtype=torch.int64, device=dev) for _ in range(3))
    reconstruct_indices_from_tree_mask_func(mask_t, seq_lens, positions, r_index, r_next, r_sib, batch, n)
    mismatches = 0
    for b in range(batch):
        _, first_child, next_sibling = tree_links(torch.from_numpy(masks[b]))
        mismatches += int(r_next[b].tolist() != first_child) + int(r_sib[b].tolist() != next_sibling)
    checks["reconstruct_tree"] = {"trees": batch, "mismatches": mismatches}
    if device != "cuda":
        checks["tree_sampling"] = {"skipped": "SGLang has no tree-sampling kernel off CUDA"}
        return checks
    from sglang.kernels.ops.speculative.sampling import tree_speculative_sampling_target_only

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(batch, n, vocab, generator=g), -1)
    cand = torch.from_numpy(tokens % vocab)
    coins = torch.rand(batch, n, generator=g)
    final = torch.rand(batch, generator=g)
    predicts = torch.full((batch * n,), -1, dtype=torch.int32, device=dev)
    accept_index = torch.full((batch, n), -1, dtype=torch.int32, device=dev)
    accept_num = torch.zeros(batch, dtype=torch.int32, device=dev)
    tree_speculative_sampling_target_only(
        predicts, accept_index, accept_num, cand.to(dev), r_index, r_next, r_sib, coins.to(dev), final.to(dev),
        probs.to(dev), torch.zeros_like(probs).to(dev))
    mismatches = 0
    for b in range(batch):
        path, bonus = verify_tree(cand[b].tolist(), torch.from_numpy(masks[b]), probs[b], max_depth=n - 1,
                                  coins=coins[b].tolist(), final_coin=float(final[b]))
        kernel_path = [int(i) - b * n for i in accept_index[b, : int(accept_num[b]) + 1].tolist()]
        kernel_bonus = int(predicts[b * n + kernel_path[-1]])
        mismatches += int(kernel_path != path or kernel_bonus != bonus)
    checks["tree_sampling"] = {"trees": batch, "mismatches": mismatches}
    return checks


def _engine_kwargs(ns: argparse.Namespace, variant: str) -> dict:
    from sgl_consensus.models import BUNDLED_MODEL
    from sgl_consensus.testing.devices import engine_defaults

    spec = VARIANTS[variant]
    size = sizes(ns.quick)
    kwargs = dict(engine_defaults(), model_path=str(BUNDLED_MODEL), random_seed=0, log_level="error",
                  max_running_requests=size["problems"] * size["paths"], **spec.get("engine", {}))
    if ns.device == "cuda":
        kwargs["dtype"] = "bfloat16"
    if spec["algorithm"] is not None:
        kwargs.update(speculative_algorithm=spec["algorithm"], speculative_num_draft_tokens=DRAFT_TOKENS)
    return kwargs


GREEDY_PROMPTS = ["Q: Tom has 17 apples and buys 25 more. How many apples?\nA:", "Q: 3 + 4 =", "The answer is",
                  "Q: A box holds 12 pens. How many pens are in 5 boxes?\nA:", "one two three", "Q: 100 - 37 ="]


def phase_engine(ns: argparse.Namespace, variant: str) -> dict:
    from sgl_consensus.engine import start_engine

    size = sizes(ns.quick)
    start = time.perf_counter()
    os.environ.update(VARIANTS[variant].get("env", {}))  # this phase's own process: read by the worker
    engine = start_engine(**_engine_kwargs(ns, variant))
    out: dict[str, Any] = {"engine_start_s": round(time.perf_counter() - start, 1)}
    try:
        engine.generate(GREEDY_PROMPTS[0], {"temperature": 0.0, "max_new_tokens": 8})  # warm-up
        greedy = {"temperature": 0.0, "max_new_tokens": size["greedy_tokens"], "ignore_eos": True}
        want_margins = variant == "none"
        outs = engine.generate(GREEDY_PROMPTS, greedy, return_logprob=want_margins, top_logprobs_num=2)
        out["greedy"] = [o["output_ids"] for o in outs]
        if want_margins:
            out["greedy_top2"] = [[[lp[0] for lp in pos[:2]] for pos in o["meta_info"]["output_top_logprobs"]]
                                  for o in outs]
        if variant in SAMPLED_VARIANTS:
            out["samples"] = _samples(engine, size)
            out["throughput"] = _throughput(engine, variant, size)
    finally:
        engine.shutdown()
    return out


def _samples(engine, size: dict) -> dict[str, list[list[int]]]:
    samples = {}
    for name, setting in SETTINGS.items():
        prompt = "Q:" if name.startswith("bias0") else GREEDY_PROMPTS[1]
        params = {**setting, "max_new_tokens": size["sample_tokens"], "ignore_eos": True}
        samples[name] = [o["output_ids"] for o in engine.generate([prompt] * size["samples"], params)]
    return samples


def _throughput(engine, variant: str, size: dict) -> dict:
    from sgl_consensus.demo import EVAL_SEED_START
    from sgl_consensus.runs import run_paths
    from sgl_consensus.workload.problems import format_prompt, generate_problem

    prompts = [format_prompt(generate_problem(EVAL_SEED_START + i).question) for i in range(size["problems"])]
    params = {"temperature": 0.7, "max_new_tokens": size["new_tokens"]}
    result = {}
    for regime in ("lockstep", "staggered"):
        before = _draft_state(engine)
        if regime == "lockstep":
            _, summary = run_paths(engine, variant, prompts, size["paths"], params)
        else:  # twice the paths (twice the running slots), the second half queued behind the first
            _, summary = run_paths(engine, variant, prompts, 2 * size["paths"], params, second_wave_delay_s=0.25)
        after = _draft_state(engine)
        row = {"tokens_per_s": summary.tokens_per_s, "tau": summary.accept_length, "wall_s": summary.wall_s}
        if before is not None and after is not None and after["steps"] > before["steps"]:
            row.update(_drafting_between(before, after))
        result[regime] = row
        engine.flush_cache()
    return result


def _drafting_between(before: dict, after: dict) -> dict:
    """Drafting per decode step between two worker states: the whole step, the part inside the
    compiled core (writes and proposals; issue 14's split) and the mean batch."""
    steps = after["steps"] - before["steps"]

    def per_step(total) -> float:
        return (total(after) * after["steps"] - total(before) * before["steps"]) / steps

    row = {"draft_ms_per_step": per_step(lambda state: state["draft_ms_per_step"]),
           "batch_per_step": (after["request_steps"] - before["request_steps"]) / steps}
    if "core_ms_per_step" in after and "core_ms_per_step" in before:
        row["core_ms_per_step"] = per_step(lambda state: state["core_ms_per_step"]["writes"]
                                           + state["core_ms_per_step"]["proposals"])
    return row


def _draft_state(engine) -> dict | None:
    states = engine.get_server_info().get("internal_states") or [{}]
    return states[0].get("consensus")


# ------------------------------------------------------------------------------------ report
def _distribution_pvalue(a: list[list[int]], b: list[list[int]]) -> float:
    from collections import Counter

    import numpy as np
    from scipy import stats

    pvalues = []
    for pos in range(min(len(a[0]), len(b[0]))):
        ca, cb = Counter(s[pos] for s in a), Counter(s[pos] for s in b)
        keys = [t for t, c in (ca + cb).items() if c >= 10]
        table = np.array([[ca[t] for t in keys] + [len(a) - sum(ca[t] for t in keys)],
                          [cb[t] for t in keys] + [len(b) - sum(cb[t] for t in keys)]])
        table = table[:, table.sum(0) > 0]
        pvalues.append(stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0)
    return min(1.0, min(pvalues) * len(pvalues)) if pvalues else 1.0


def _first_divergence(got: list[int], want: list[int], top2: list[list[float]]) -> dict | None:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            margin = top2[i][0] - top2[i][1] if i < len(top2) and len(top2[i]) == 2 else None
            return {"position": i, "top2_logprob_margin": margin}
    return None if len(got) == len(want) else {"position": min(len(got), len(want)), "top2_logprob_margin": None}


def report(results: dict) -> dict:
    none = results.get("engine:none", {}).get("result") or {}
    rows = {}
    for variant in VARIANTS:
        res = results.get(f"engine:{variant}", {}).get("result")
        if res is None:
            continue
        row: dict[str, Any] = {}
        if none.get("greedy"):
            divergences = [_first_divergence(g, w, t) for g, w, t in
                           zip(res["greedy"], none["greedy"], none.get("greedy_top2", [[]] * len(none["greedy"])))]
            row["greedy_identical"] = all(d is None for d in divergences)
            row["greedy_divergences"] = [d for d in divergences if d is not None]
        if "samples" in res and none.get("samples") and variant != "none":
            row["distribution_pvalues"] = {k: _distribution_pvalue(res["samples"][k], none["samples"][k])
                                           for k in res["samples"]}
        for regime, tp in (res.get("throughput") or {}).items():
            base = (none.get("throughput") or {}).get(regime, {}).get("tokens_per_s")
            row[regime] = {**tp, "vs_none": tp["tokens_per_s"] / base if base else None}
        rows[variant] = row
    return rows


def format_table(results: dict, rows: dict) -> str:
    lines = ["phase | status | seconds"]
    for name, rec in results.items():
        lines.append(f"{name} | {rec['status']} | {rec['seconds']:.0f}")
    lines.append("")
    lines.append("variant | greedy = none | p(T1.0) | p(T0.7,top-p) | p(bias 0) | tau lock/stag | vs none lock/stag"
                 " | draft ms/step (in the core) | batch")
    for variant, row in rows.items():
        p = row.get("distribution_pvalues", {})
        lock, stag = row.get("lockstep", {}), row.get("staggered", {})

        def num(value, fmt):
            return "-" if value is None else format(value, fmt)
        lines.append(" | ".join([
            variant, {True: "yes", False: "NO", None: "-"}[row.get("greedy_identical")],
            num(p.get("T1.0"), ".2g"), num(p.get("T0.7_top_p0.9"), ".2g"), num(p.get("bias0_short"), ".2g"),
            f"{num(lock.get('tau'), '.2f')}/{num(stag.get('tau'), '.2f')}",
            f"{num(lock.get('vs_none'), '.2f')}/{num(stag.get('vs_none'), '.2f')}",
            f"{num(lock.get('draft_ms_per_step'), '.2f')} ({num(lock.get('core_ms_per_step'), '.2f')})",
            num(lock.get("batch_per_step"), ".1f")]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ driver
def _run_phase(ns: argparse.Namespace, name: str) -> dict:
    """One phase in a child process (its own time limit; a hung CUDA call cannot stall the rest)."""
    result_file = ns.out / f"phase-{name.replace(':', '-')}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "sgl_consensus.gpu_check", "--run-phase", name, "--out", str(ns.out),
           "--device", ns.device] + (["--quick"] if ns.quick else [])
    limit = PHASE_LIMITS[name] * (4 if ns.device == "cpu" else 1)  # CPU rehearsals are slower
    start = time.perf_counter()
    with open(ns.out / f"phase-{name.replace(':', '-')}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            status = "ok" if code == 0 and result_file.exists() else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"timeout ({limit} s)"
    record = {"status": status, "seconds": time.perf_counter() - start, "limit_s": limit}
    if result_file.exists():
        record["result"] = json.loads(result_file.read_text())
    return record


def _phase_function(name: str) -> Callable[[argparse.Namespace], dict]:
    if name == "preflight":
        return phase_preflight
    variant = name.split(":", 1)[1]
    return lambda ns: phase_engine(ns, variant)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"), help="folder for the JSON and logs")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: CUDA, else exit 2; cpu: a small rehearsal on this CPU (for tests)")
    parser.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                        help=f"comma-separated subset of {list(PHASE_LIMITS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (default with --device cpu)")
    parser.add_argument("--run-phase", help=argparse.SUPPRESS)


def run(ns: argparse.Namespace) -> int:
    from sgl_consensus.testing.devices import cuda_available

    if ns.device == "auto":
        if not cuda_available():
            print("sgl-consensus gpu-check: no CUDA device here (torch.cuda.is_available() is False); "
                  "run it on a GPU machine, or rehearse with --device cpu", file=sys.stderr)
            return 2
        ns.device = "cuda"
    if ns.device == "cpu":
        ns.quick = True
        from sgl_consensus import cpu

        cpu.activate()
    ns.out.mkdir(parents=True, exist_ok=True)
    if ns.run_phase:
        result = _phase_function(ns.run_phase)(ns)
        (ns.out / f"phase-{ns.run_phase.replace(':', '-')}.json").write_text(json.dumps(result))
        return 0
    phases = [p.strip() for p in ns.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASE_LIMITS))
    if unknown:
        print(f"sgl-consensus gpu-check: unknown phase(s) {unknown}; choose from {list(PHASE_LIMITS)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    summary_file = ns.out / "gpu_check.json"
    for name in phases:
        print(f"[gpu-check] {name} ...", file=sys.stderr, flush=True)
        results[name] = _run_phase(ns, name)
        print(f"[gpu-check] {name}: {results[name]['status']} in {results[name]['seconds']:.0f} s",
              file=sys.stderr, flush=True)
        summary_file.write_text(json.dumps({"device": ns.device, "phases": results}, indent=1))
    rows = report(results)
    summary_file.write_text(json.dumps({"device": ns.device, "phases": results, "report": rows}, indent=1))
    print(format_table(results, rows))
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgl-consensus gpu-check", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

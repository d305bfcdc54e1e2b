"""Scale-out benchmark: do the siblings of a group still meet in one drafter?

One workload (P held-out problems of the tiny reasoner x N sampled paths, each problem's paths one
tagged group, all submitted at once, a fixed verify width so that tau measures the drafts alone) run
through each configuration, in one invocation:

- ``dp``: one Engine per configuration. ``dp1`` (``--dp-size 1``), ``dp2`` (``--dp-size 2``, every
  group on one rank: ``adapter/dp_dispatch.py``), ``dp2_sglang`` (``--dp-size 2`` with SGLang's own
  round robin, ``CONSENSUS_DP_DISPATCH=sglang``: what the hook avoids). The rank that served each
  path comes from its ``meta_info["dp_rank"]``. ``tp2`` (``--tp-size 2``, adaptive width): every
  rank drafts; the width broadcast's latency per step against the drafting time per step says
  whether drafting once and broadcasting the trees could pay.
- ``router``: two ``sgl-consensus serve`` workers behind ``sglang-router``, one router per policy
  (``manual`` with the group tag as ``X-SMG-Routing-Key``; ``cache_aware``; ``round_robin``), against
  ``one_server`` (the same workload sent to one worker). The worker that served each path comes
  from its ``meta_info["weight_version"]`` (each worker starts with its own ``--weight-version``).

Per configuration: ``group_share`` (per group, the largest fraction of its paths served by one rank
or worker, averaged over groups), tau (tokens per verify step, bonus included), the share of draft
nodes that came from siblings, and tokens/s. On a 2-core machine two ranks or servers share the
cores: tokens/s there says little about a real deployment; tau and the group share do.

    .venv/bin/python benchmarks/bench_scale_out.py            # both parts, results/scale_out.*
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale_out.json"
DP_CONFIGS = ("dp1", "dp2", "dp2_sglang", "tp2")
ROUTER_CONFIGS = ("one_server", "manual", "cache_aware", "round_robin")
FIXED_WIDTH = {"CONSENSUS_ADAPTIVE": "off", "CONSENSUS_LOG_INTERVAL": "0"}
DP_BIND = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}  # SGLang on CPU wants one core per DP rank


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from sgl_consensus.demo import EVAL_SEED_START

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=8)
    p.add_argument("--n", type=int, default=8, help="paths per problem (one group)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--draft-tokens", type=int, default=8)
    p.add_argument("--seed-start", type=int, default=EVAL_SEED_START)
    p.add_argument("--parts", default="dp,router", help="dp, router or both")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report-only", action="store_true", help="rebuild the Markdown and PNG from --out")
    ns = p.parse_args(argv)
    ns.parts = [x.strip() for x in ns.parts.split(",") if x.strip()]
    if bad := sorted(set(ns.parts) - {"dp", "router"}):
        p.error(f"unknown parts {bad}")
    if min(ns.problems, ns.n, ns.max_new_tokens) < 1:
        p.error("--problems, --n and --max-new-tokens must be >= 1")
    return ns


# ---------------------------------------------------------------------------------------------
# Summaries


def group_share(servers_by_group: dict[int, list[Any]]) -> float:
    """Mean over groups of the largest fraction of a group's paths that one rank/worker served."""
    shares = [Counter(s).most_common(1)[0][1] / len(s) for s in servers_by_group.values() if s]
    return statistics.mean(shares) if shares else float("nan")


def summarise(metas: list[tuple[int, dict]], wall_s: float, server_of: Callable[[dict], Any]) -> dict[str, Any]:
    tokens = sum(int(m.get("completion_tokens", 0)) for _, m in metas)
    steps = sum(int(m.get("spec_verify_ct") or m.get("completion_tokens", 0)) for _, m in metas)
    by_group: dict[int, list[Any]] = defaultdict(list)
    for group, meta in metas:
        by_group[group].append(server_of(meta))
    nodes = [0, 0, 0]  # from siblings, global corpus, own history
    for _, meta in metas:
        for row in meta.get("consensus_draft_nodes") or []:
            nodes = [a + b for a, b in zip(nodes, row)]
    return {
        "paths": len(metas), "output_tokens": tokens, "verify_steps": steps, "wall_s": round(wall_s, 2),
        "tau": tokens / max(steps, 1), "tokens_per_s": tokens / max(wall_s, 1e-9),
        "group_share": group_share(by_group),
        "servers_used": sorted({str(s) for s in (server_of(m) for _, m in metas)}),
        "sibling_node_fraction": nodes[0] / max(sum(nodes), 1), "draft_nodes": nodes,
    }


def _requests(ns, prompts: list[str]) -> list[tuple[int, str, dict]]:
    params = {"temperature": ns.temperature, "max_new_tokens": ns.max_new_tokens}
    return [(g, prompt, {**params, "custom_params": {"consensus_group": f"p{g}"}})
            for g, prompt in enumerate(prompts) for _ in range(ns.n)]


# ---------------------------------------------------------------------------------------------
# Data parallel (Engine)


def run_dp(ns, model: Path, prompts: list[str], record: Callable[[dict], None]) -> None:
    import asyncio

    from sgl_consensus.demo import _engine_kwargs
    from sgl_consensus.engine import environment, start_engine
    from sgl_consensus.testing.engines import flush

    requests = _requests(ns, prompts)
    for config in DP_CONFIGS:
        env = {**FIXED_WIDTH, **(DP_BIND if config != "dp1" else {}),
               **({"CONSENSUS_DP_DISPATCH": "sglang"} if config == "dp2_sglang" else {}),
               **({"CONSENSUS_ADAPTIVE": "on"} if config == "tp2" else {})}
        kwargs = _engine_kwargs(model, "consensus", ns.draft_tokens, len(requests))
        if config.startswith("dp2"):
            kwargs["dp_size"] = 2
        elif config == "tp2":
            kwargs["tp_size"] = 2
        print(f"[dp] {config}: starting the engine", file=sys.stderr, flush=True)
        with environment(env):
            engine = start_engine(**kwargs)
        try:
            engine.generate(prompts[0], {"temperature": 0.0, "max_new_tokens": 16})  # warm-up
            flush(engine)

            async def one(group: int, prompt: str, params: dict):
                out = await engine.async_generate(prompt, params)
                return group, dict(out["meta_info"])

            async def all_paths():
                return await asyncio.gather(*(one(*r) for r in requests))

            start = time.perf_counter()
            metas = engine.run(all_paths())
            wall = time.perf_counter() - start
            states = [s["consensus"] for s in engine.get_server_info()["internal_states"]]
        finally:
            engine.shutdown()
        row = {"part": "dp", "config": config, **summarise(metas, wall, lambda m: m.get("dp_rank")),
               "draft_ms_per_step": [round(s["draft_ms_per_step"], 3) for s in states],
               "tp_broadcast_ms_per_step": [round(s["tp_broadcast_ms_per_step"], 3) for s in states
                                            if "tp_broadcast_ms_per_step" in s]}
        print(f"[dp] {config}: tau {row['tau']:.3f}, group share {row['group_share']:.3f}, "
              f"{row['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
        record(row)


# ---------------------------------------------------------------------------------------------
# Many servers behind sglang-router (HTTP)


def _post(url: str, body: dict, headers: dict[str, str]) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())


def _flush_server(url: str) -> None:
    for _ in range(50):
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/flush_cache", method="POST"), timeout=30) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} refused to flush its cache")


def _http_run(url: str, requests: list[tuple[int, str, dict]], keyed: bool) -> tuple[list, float]:
    from sgl_consensus.router import group_headers

    def one(request):
        group, prompt, params = request
        headers = group_headers(params["custom_params"]["consensus_group"]) if keyed else {}
        return group, _post(url + "/generate", {"text": prompt, "sampling_params": params}, headers)["meta_info"]

    start = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        metas = list(pool.map(one, requests))
    return metas, time.perf_counter() - start


def run_router(ns, model: Path, prompts: list[str], record: Callable[[dict], None]) -> None:
    from sgl_consensus.router import launch_router
    from sgl_consensus.server import launch_server

    requests = _requests(ns, prompts)
    env = {**os.environ, **FIXED_WIDTH}
    args = ["--speculative-algorithm", "consensus", "--speculative-num-draft-tokens", str(ns.draft_tokens),
            "--max-running-requests", str(len(requests)), "--log-level", "warning", "--random-seed", "0"]
    print("[router] starting two workers", file=sys.stderr, flush=True)
    with launch_server(model, [*args, "--weight-version", "w0"], env=env) as w0, \
            launch_server(model, [*args, "--weight-version", "w1"], env=env) as w1:
        for worker in (w0, w1):
            _post(worker.url + "/generate", {"text": prompts[0], "sampling_params": {"max_new_tokens": 16}}, {})
        for config in ROUTER_CONFIGS:
            for worker in (w0, w1):
                _flush_server(worker.url)
            if config == "one_server":
                metas, wall = _http_run(w0.url, requests, keyed=False)
            else:
                with launch_router([w0.url, w1.url], config) as router:
                    metas, wall = _http_run(router.url, requests, keyed=config == "manual")
            row = {"part": "router", "config": config, "routing_key": config == "manual",
                   **summarise(metas, wall, lambda m: m.get("weight_version"))}
            print(f"[router] {config}: tau {row['tau']:.3f}, group share {row['group_share']:.3f}, "
                  f"{row['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
            record(row)


# ---------------------------------------------------------------------------------------------
# Report


def report(data: dict, out: Path) -> str:
    rows = data["rows"]
    lines = [f"# Scale-out: do sibling groups meet in one drafter? ({data['machine']})", "",
             f"Command: `{data['command']}`", "",
             f"{data['settings']['problems']} problems x {data['settings']['n']} paths (one tagged group each), "
             f"T = {data['settings']['temperature']}, {data['settings']['max_new_tokens']} new tokens at most, "
             f"fixed verify width {data['settings']['draft_tokens']}; all paths submitted at once.", "",
             "| part | configuration | group share on one rank/worker | tau | tau vs baseline | sibling draft nodes "
             "| tokens/s |", "|---|---|---|---|---|---|---|"]
    baselines = {"dp": "dp1", "router": "one_server"}
    for row in rows:
        base = next((r for r in rows if r["part"] == row["part"] and r["config"] == baselines[row["part"]]), None)
        ratio = f"{row['tau'] / base['tau']:.3f}" if base else "-"
        share = "-" if row["config"] == "tp2" else f"{row['group_share']:.3f}"  # one rank serves everything
        lines.append(f"| {row['part']} | {row['config']} | {share} | {row['tau']:.3f} | {ratio} | "
                     f"{row['sibling_node_fraction']:.2f} | {row['tokens_per_s']:.0f} |")
    lines += ["", "Tokens/s: two ranks or two servers share this machine's 2 cores; compare tau and group share. "
              "tp2 runs the adaptive width (its width broadcast is what it measures), the others a fixed width.",
              "", "Drafting time per step (ms, per rank) and, under TP, the width broadcast's latency per step:", ""]
    for row in rows:
        if row["part"] == "dp":
            lines.append(f"- {row['config']}: draft {row['draft_ms_per_step']} ms/step"
                         + (f", TP broadcast {row['tp_broadcast_ms_per_step']} ms/step"
                            if row.get("tp_broadcast_ms_per_step") else ""))
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    _plot(rows, out.with_suffix(".png"))
    return text


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [f"{r['part']}:{r['config']}" for r in rows]
    axes[0].barh(labels, [0 if r["config"] == "tp2" else r["group_share"] for r in rows], color="tab:blue")
    axes[0].set_xlabel("group share on one rank / worker")
    axes[0].axvline(0.95, color="gray", linestyle="--", linewidth=1)
    axes[1].barh(labels, [r["tau"] for r in rows], color="tab:green")
    axes[1].set_xlabel("tau (tokens per verify step)")
    axes[1].set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.report_only:
        print(report(json.loads(ns.out.read_text()), ns.out))
        return 0
    from sgl_consensus import cpu

    cpu.activate()
    from sgl_consensus.models import resolve_model
    from sgl_consensus.workload.datasets import build_workload

    model = resolve_model("tiny")
    prompts = build_workload(model, ns.problems, None, ns.seed_start).prompts
    data: dict[str, Any] = {
        "command": shlex.join([".venv/bin/python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": f"{os.cpu_count()}-core CPU VM",
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"problems": ns.problems, "n": ns.n, "temperature": ns.temperature,
                     "max_new_tokens": ns.max_new_tokens, "draft_tokens": ns.draft_tokens, "seed_start": ns.seed_start},
        "rows": [],
    }
    ns.out.parent.mkdir(parents=True, exist_ok=True)

    def record(row: dict) -> None:
        data["rows"].append(row)
        ns.out.write_text(json.dumps(data, indent=1) + "\n")

    if "dp" in ns.parts:
        run_dp(ns, model, prompts, record)
    if "router" in ns.parts:
        run_router(ns, model, prompts, record)
    data["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ns.out.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data, ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

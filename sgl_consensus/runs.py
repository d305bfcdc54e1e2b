"""Run multi-sample workloads through an SGLang engine and measure what speculation did.

One job: submit every path of every problem concurrently (as a server would see them), collect the
outputs and SGLang's speculative counters, and summarise them. Used by the demo and the benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class PathResult:
    group: int
    text: str
    output_ids: list[int]
    verify_steps: int  # target forward passes spent on this path (decode steps without speculation)

    @property
    def tokens(self) -> int:
        return len(self.output_ids)


@dataclass
class RunSummary:
    algorithm: str
    paths: int
    output_tokens: int
    verify_steps: int
    wall_s: float
    accept_length: float  # tokens advanced per verify step, bonus token included (tau)
    verify_steps_per_token: float
    tokens_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def _verify_steps(meta: dict[str, Any], tokens: int) -> int:
    # Without speculation SGLang reports no spec counters: one forward pass per output token.
    ct = meta.get("spec_verify_ct")
    return int(ct) if ct is not None else tokens


async def _run_paths(engine, requests: Sequence[tuple[int, str, dict, float]], on_done: Callable[[], None]):
    async def one(group: int, prompt: str, params: dict, delay_s: float) -> PathResult:
        if delay_s:
            await asyncio.sleep(delay_s)
        out = await engine.async_generate(prompt, params)
        ids = list(out.get("output_ids") or [])
        meta = out["meta_info"]
        tokens = int(meta.get("completion_tokens", len(ids)))
        on_done()
        return PathResult(group, out["text"], ids, _verify_steps(meta, tokens))

    return await asyncio.gather(*(one(*r) for r in requests))


def run_paths(
    engine,
    algorithm: str,
    prompts: Sequence[str],
    paths_per_prompt: int,
    sampling_params: dict,
    progress: Callable[[], None] = lambda: None,
    tenant_per_prompt: bool = False,
    second_wave_delay_s: float = 0.0,
) -> tuple[list[PathResult], RunSummary]:
    """Run ``paths_per_prompt`` sampled paths for each prompt, all at once; tag siblings as a group.

    ``tenant_per_prompt``: each prompt's paths belong to a tenant of their own (multi-tenant
    traffic: nothing drafts across prompts). ``second_wave_delay_s``: the second half of every
    prompt's paths is submitted that much later (with fewer running slots than paths, they start
    when earlier siblings finish: the staggered regime)."""
    requests = []
    for group, prompt in enumerate(prompts):
        params = dict(sampling_params)
        params["custom_params"] = {"consensus_group": f"p{group}"}
        if tenant_per_prompt:
            params["custom_params"]["consensus_tenant"] = f"tenant-{group}"
        first_wave = (paths_per_prompt + 1) // 2 if second_wave_delay_s else paths_per_prompt
        requests += [(group, prompt, params, 0.0 if i < first_wave else second_wave_delay_s)
                     for i in range(paths_per_prompt)]
    start = time.perf_counter()
    results = engine.run(_run_paths(engine, requests, progress))
    wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    steps = sum(r.verify_steps for r in results)
    summary = RunSummary(
        algorithm=algorithm,
        paths=len(results),
        output_tokens=tokens,
        verify_steps=steps,
        wall_s=wall,
        accept_length=tokens / max(steps, 1),
        verify_steps_per_token=steps / max(tokens, 1),
        tokens_per_s=tokens / max(wall, 1e-9),
    )

    return results, summary

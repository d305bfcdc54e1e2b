"""Engine helpers for tests: CPU engine settings and a pool that keeps one engine alive at a time."""

from __future__ import annotations

from pathlib import Path

from sgl_consensus.engine import environment, start_engine
from sgl_consensus.testing.devices import engine_defaults

NUM_DRAFT_TOKENS = 4
# A small KV pool: tiny models need little, and several SGLang processes share 24 GiB with others.
MAX_TOTAL_TOKENS = 16384


def engine_kwargs(model_path: Path, algorithm: str | None, **extra) -> dict:
    kwargs = dict(
        engine_defaults(),
        model_path=str(model_path),
        max_total_tokens=MAX_TOTAL_TOKENS,
        max_running_requests=16,
        random_seed=0,
        log_level="error",
    )
    if algorithm is not None:
        kwargs.update(speculative_algorithm=algorithm, speculative_num_draft_tokens=NUM_DRAFT_TOKENS)
    kwargs.update(extra)
    return kwargs


class EnginePool:
    """One engine alive at a time (2 cores): switching key shuts the previous one down."""

    def __init__(self) -> None:
        self._key = None
        self._engine = None
        self._references: dict[tuple, dict] = {}  # plain greedy outputs already computed

    def plain_reference(self, model_path: Path, prompt: str, params: dict) -> dict:
        """The plain engine's (no speculation) output for a greedy ``params`` request, computed once
        per pool: tests comparing against the same reference then start no second plain engine."""
        if params.get("temperature", 1.0) != 0:
            raise ValueError(f"a cached reference must be greedy (temperature 0), got {params!r}")
        key = (str(model_path), prompt, repr(sorted(params.items())))
        if key not in self._references:
            self._references[key] = self.get(model_path, None).generate(prompt, params)
        return self._references[key]

    def get(self, model_path: Path, algorithm: str | None, env: dict[str, str] | None = None, **extra):
        """The engine for these settings; ``env`` holds worker knobs (CONSENSUS_*), read at start."""
        key = (str(model_path), algorithm, tuple(sorted((env or {}).items())), tuple(sorted(extra.items())))
        if key != self._key:
            self.close()
            with environment(env or {}):
                self._engine = start_engine(**engine_kwargs(model_path, algorithm, **extra))
            self._key = key
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
        self._engine, self._key = None, None


def flush(engine, attempts: int = 50, pause_s: float = 0.2) -> None:
    """Empty SGLang's radix cache and the worker's draft state. The scheduler refuses a flush while
    it is not fully idle (e.g. a finished request's last step still in flight): retry until it takes."""
    import time

    for _ in range(attempts):
        if engine.flush_cache().success:
            return
        time.sleep(pause_s)
    raise RuntimeError(f"SGLang refused to flush its cache {attempts} times")

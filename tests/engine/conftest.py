from __future__ import annotations

from pathlib import Path

import pytest

from sgl_consensus.engine import start_engine
from sgl_consensus.testing.tiny_models import TinyModelSpec, build_tiny_model

NUM_DRAFT_TOKENS = 4


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    return build_tiny_model(TinyModelSpec(arch="llama"))


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    return build_tiny_model(TinyModelSpec(arch="qwen2", seed=1))


def engine_kwargs(model_path: Path, algorithm: str | None, **extra) -> dict:
    kwargs = dict(
        model_path=str(model_path),
        device="cpu",
        attention_backend="torch_native",
        mem_fraction_static=0.2,
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

    def get(self, model_path: Path, algorithm: str | None):
        key = (str(model_path), algorithm)
        if key != self._key:
            self.close()
            self._engine = start_engine(**engine_kwargs(model_path, algorithm))
            self._key = key
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
        self._engine, self._key = None, None


@pytest.fixture(scope="session")
def engines():
    pool = EnginePool()
    yield pool
    pool.close()

from __future__ import annotations

from pathlib import Path

import pytest

from sgl_consensus.testing.engines import EnginePool
from sgl_consensus.testing.tiny_models import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    return build_tiny_model(TinyModelSpec(arch="llama"))


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    return build_tiny_model(TinyModelSpec(arch="qwen2", seed=1))


@pytest.fixture(scope="session")
def engines():
    pool = EnginePool()
    yield pool
    pool.close()

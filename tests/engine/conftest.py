from __future__ import annotations

from pathlib import Path

import pytest

from sgl_consensus.testing.engines import EnginePool
from sgl_consensus.testing.devices import device
from sgl_consensus.testing.tiny_models import build_tiny_model, device_spec


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    return build_tiny_model(device_spec(arch="llama"))


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    return build_tiny_model(device_spec(arch="qwen2", seed=1))


@pytest.fixture(scope="session")
def peaky_model() -> Path:
    """Peakier next-token distributions than the default init: sampling tests need structure."""
    return build_tiny_model(device_spec(arch="llama", initializer_range=1.0, seed=5))


@pytest.fixture(scope="session")
def engines():
    pool = EnginePool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def consensus_server(engines, tiny_llama):
    """One `sgl-consensus serve --device cpu` server with the consensus worker, shared by HTTP tests."""
    from sgl_consensus.server import launch_server

    engines.close()  # 2 cores: avoid two SGLang instances at once where we can
    args = ["--speculative-algorithm", "consensus", "--speculative-num-draft-tokens", "4",
            "--max-running-requests", "16", "--log-level", "warning"]
    with launch_server(tiny_llama, args, device=device()) as server:
        yield server.url

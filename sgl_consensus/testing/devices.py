"""Test and check settings picked by device: the suite runs on CPU here and on CUDA when CUDA is there.

On CPU, SGLang runs under ``sgl_consensus.cpu.activate()`` (torch-native attention, the CPU stand-ins).
On CUDA it runs as users run it: FlashInfer attention, CUDA graphs, overlap scheduling; tiny models
there need FlashInfer-friendly shapes (bf16, head_dim 64).
"""

from __future__ import annotations

from typing import Any


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def device() -> str:
    return "cuda" if cuda_available() else "cpu"


def engine_defaults() -> dict[str, Any]:
    """SGLang Engine settings for this device (CPU: the project's CPU recipe)."""
    if device() == "cpu":
        from sgl_consensus.cpu import ENGINE_DEFAULTS

        return dict(ENGINE_DEFAULTS)
    return {"attention_backend": "flashinfer", "mem_fraction_static": 0.5, "cuda_graph_max_bs": 32}


def tiny_model_overrides() -> dict[str, Any]:
    """TinyModelSpec fields for this device (CUDA: head_dim 64 in bf16, what FlashInfer serves)."""
    if device() == "cpu":
        return {}
    return {"hidden_size": 256, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512, "dtype": "bfloat16"}

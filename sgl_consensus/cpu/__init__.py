"""Run SGLang 0.5.23's real scheduler and model runner on an x86 CPU.

Nothing here is used unless :func:`activate` is called (or ``sgl-consensus serve --device cpu``
is used). Activation

* sets ``SGLANG_USE_CPU_ENGINE=1`` (SGLang's own switch for its CPU code paths),
* puts ``_boot/`` first on ``PYTHONPATH``: it holds a pure-torch stand-in for the unpublished CPU
  build of ``sgl_kernel`` and a ``sitecustomize`` that makes the CUDA build of torchvision
  importable; SGLang's scheduler and detokenizer start as new processes (spawned, or forked from the
  preloaded forkserver of ``preloaded_start.py`` with the launcher's environment), so only the
  environment reaches them,
* sets ``CONSENSUS_CPU=1``, which the plugin reads in every SGLang process to swap the
  ``torch_native`` attention backend for one that can verify draft trees (TARGET_VERIFY) and to
  verify sampled requests losslessly.

On a machine where CUDA is available it refuses: the stand-ins would shadow SGLang's real kernels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BOOT_DIR = Path(__file__).resolve().parent / "_boot"

# SGLang settings for CPU runs. On CPU, SGLang sizes the KV pool from the machine's *free* memory,
# and refuses to start when other processes hold more than (1 - mem_fraction_static) of it; a high
# fraction plus an explicit token cap keeps start-up robust on a shared machine and memory small.
ENGINE_DEFAULTS = {
    "device": "cpu",
    "attention_backend": "torch_native",
    # bf16 checkpoints (e.g. the converted SmolLM2) run several times slower on CPUs without bf16
    # units; float32 is what every CPU computes fastest.
    "dtype": "float32",
    "mem_fraction_static": 0.85,
    "max_total_tokens": 65536,
    # An idle scheduler otherwise polls its sockets in a busy loop, holding a core that serving on
    # a CPU needs (and other processes on the machine): block on them instead (woken by any request).
    "sleep_on_idle": True,
}


def server_flag_defaults() -> dict[str, str | None]:
    """ENGINE_DEFAULTS as ``sglang.launch_server`` flags (value None: a bare switch)."""
    return {"--" + k.replace("_", "-"): (None if v is True else str(v)) for k, v in ENGINE_DEFAULTS.items()}
ACTIVE_ENV = "CONSENSUS_CPU"


class CudaAvailableError(RuntimeError):
    """Raised when CPU mode is asked for on a machine that has CUDA."""


def is_active() -> bool:
    """True in any process started under :func:`activate` (the flag travels in the environment)."""
    return os.environ.get(ACTIVE_ENV) == "1"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _prepend_pythonpath(path: str) -> None:
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if path not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([path, *parts])
    if path not in sys.path:
        sys.path.insert(0, path)


def activate(*, allow_cuda: bool = False) -> None:
    """Prepare this process and every process it spawns to run SGLang on CPU.

    Call it before SGLang is imported. Idempotent.
    """
    if "sglang.srt.server_args" in sys.modules and not is_active():
        raise RuntimeError(
            "sgl_consensus.cpu.activate() must run before SGLang is imported "
            "(import sgl_consensus.cpu and activate first)."
        )
    if not allow_cuda and _cuda_available():
        raise CudaAvailableError(
            "CUDA is available on this machine: sgl-consensus' CPU mode would shadow SGLang's real "
            "kernels. Run SGLang normally (pip install 'sgl-consensus[gpu]'); the consensus worker "
            "needs no CPU activation on a GPU."
        )
    os.environ[ACTIVE_ENV] = "1"
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    # Small models do tiny per-op work: with more than one intra-op thread, synchronisation
    # dominates (measured: docs/cpu.md). Set OMP_NUM_THREADS yourself for larger models.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _prepend_pythonpath(str(BOOT_DIR))
    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()


__all__ = ["activate", "is_active", "CudaAvailableError", "BOOT_DIR", "ENGINE_DEFAULTS", "server_flag_defaults"]

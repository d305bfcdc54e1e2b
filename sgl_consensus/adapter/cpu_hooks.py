"""SGLang-side CPU hooks, installed by the plugin in processes started under ``cpu.activate()``."""

from __future__ import annotations

_installed = False


def install_cpu_hooks() -> None:
    global _installed
    if _installed:
        return
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

    from sgl_consensus.cpu.attention import create_backend

    # Same name, so `--attention-backend torch_native` keeps working: this backend is SGLang's
    # torch-native one plus a TARGET_VERIFY path (draft-tree verification).
    ATTENTION_BACKENDS["torch_native"] = create_backend
    _installed = True

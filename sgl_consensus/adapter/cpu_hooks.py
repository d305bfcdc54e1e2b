"""SGLang-side CPU hooks, installed by the plugin in processes started under ``cpu.activate()``."""

from __future__ import annotations

# SGLang sets multiprocessing's start method to ``spawn`` here, just before starting its children.
START_METHOD_TARGET = "sglang.srt.entrypoints.engine._set_envs_and_config"

_installed = False


def install_cpu_hooks() -> None:
    global _installed
    if _installed:
        return
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.cpu.attention import create_backend

    # Same name, so `--attention-backend torch_native` keeps working: this backend is SGLang's
    # torch-native one plus a TARGET_VERIFY path (draft-tree verification).
    ATTENTION_BACKENDS["torch_native"] = create_backend
    HookRegistry.register(START_METHOD_TARGET, start_children_preloaded, HookType.AFTER)
    _installed = True


def start_children_preloaded(result, *args, **kwargs):
    """AFTER SGLang chose ``spawn``: its scheduler and detokenizer start from the preloaded forkserver
    instead (``cpu/preloaded_start.py``), unless ``CONSENSUS_CPU_SPAWN=1`` asks for SGLang's own way."""
    from sgl_consensus.cpu import preloaded_start

    if preloaded_start.enabled():
        preloaded_start.use_for_children()
    return result

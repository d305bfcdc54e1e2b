"""SGLang plugin entry point (group ``sglang.srt.plugins``).

SGLang calls :func:`register` in every one of its processes (``load_plugins()``). It registers the
``consensus`` speculative algorithm (any letter case: SGLang upper-cases names) and, in processes
started under ``sgl_consensus.cpu.activate()``, the CPU pieces that SGLang itself lacks.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_registered = False


def register() -> None:
    """Idempotent: safe to call from every process and more than once."""
    global _registered
    if _registered:
        return
    from sgl_consensus import cpu

    if cpu.is_active():
        from sgl_consensus.adapter.cpu_hooks import install_cpu_hooks

        install_cpu_hooks()
    _register_algorithm()
    _register_internal_state_hook()
    _register_lead_lag_hook()
    _register_admission_hook()
    _register_dp_dispatch_hook()
    _register_early_stop_hook()
    _install_settings_excepthook()
    _registered = True


def _install_settings_excepthook() -> None:
    """A bad consensus knob that stops ``sglang.launch_server`` at start is one line, not a traceback
    through SGLang's argument resolution. Every other exception keeps the previous hook."""
    import sys

    from sgl_consensus.settings import SettingsError

    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if isinstance(value, SettingsError):
            print(f"sgl-consensus: {value}", file=sys.stderr)
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook


def _register_internal_state_hook() -> None:
    """AFTER hook on the scheduler's internal-state report: the worker's stats under "consensus"."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.adapter.internal_state import TARGET, add_consensus_state

    HookRegistry.register(TARGET, add_consensus_state, HookType.AFTER)


def _register_lead_lag_hook() -> None:
    """AROUND hook on the scheduler's admission: holds lead-lag followers (off unless asked for)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.adapter.lead_lag_hook import TARGET, hold_followers

    HookRegistry.register(TARGET, hold_followers, HookType.AROUND)


def _register_admission_hook() -> None:
    """AROUND hook on the tokenizer manager: bad requests are refused before the scheduler sees them."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.adapter.admission import TARGET, admit

    HookRegistry.register(TARGET, admit, HookType.AROUND)


def _register_dp_dispatch_hook() -> None:
    """AROUND hook on the data-parallel controller: a sibling group's requests go to one DP rank."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.adapter.dp_dispatch import TARGET, dispatch_groups_together

    HookRegistry.register(TARGET, dispatch_groups_together, HookType.AROUND)


def _register_early_stop_hook() -> None:
    """AROUND hook on the tokenizer manager's output handling: n > 1 children vote as they finish."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sgl_consensus.adapter.early_stop_hook import TARGET, vote_on_finished

    HookRegistry.register(TARGET, vote_on_finished, HookType.AROUND)


def _register_algorithm() -> None:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    from sgl_consensus.adapter import ALGORITHM_NAME
    from sgl_consensus.adapter.spec_algo import ConsensusSpecAlgo

    if get_spec(ALGORITHM_NAME) is not None:
        return  # registered earlier in this process (e.g. by a second plugin load)

    @SpeculativeAlgorithm.register(ALGORITHM_NAME, supports_overlap=True, spec_class=ConsensusSpecAlgo)
    def _consensus_worker_factory(server_args):
        from sgl_consensus.adapter.worker import ConsensusWorker

        return ConsensusWorker

    logger.debug("registered speculative algorithm %s", ALGORITHM_NAME)

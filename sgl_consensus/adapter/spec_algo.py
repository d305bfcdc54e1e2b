"""How SGLang's scheduler sees the ``consensus`` algorithm.

The consensus worker verifies exactly like NGRAM (a host-built draft tree, verified by the target in one
TARGET_VERIFY pass), so it answers ``is_ngram() -> True``: SGLang then reuses NGRAM's verify input,
relay payloads, CUDA-graph shapes and server-argument handling for it. SGLang 0.5.23's
``CustomSpecAlgo`` lacks a few methods its scheduler calls on every algorithm; they are defined here
with NGRAM's answers.
"""

from __future__ import annotations

import contextlib
import os

from sglang.srt.speculative.spec_registry import CustomSpecAlgo

CPU_OVERLAP_ENV = "CONSENSUS_CPU_OVERLAP"


def cpu_overlap_requested() -> bool:
    """SGLang turns overlap scheduling off for speculative decoding on CPU; the consensus worker
    runs it there too (it has no device streams to overlap, but it exercises the overlap path:
    results one step late, accepted tokens relayed through the FutureMap). Tests use it."""
    from sgl_consensus import cpu

    return cpu.is_active() and os.environ.get(CPU_OVERLAP_ENV) == "1"


@contextlib.contextmanager
def _cpu_overlap_kept(keep: bool):
    from sglang.srt.arg_groups import speculative_hook

    original = speculative_hook._disable_overlap_schedule_for_cpu
    if keep:
        speculative_hook._disable_overlap_schedule_for_cpu = lambda server_args: None
    try:
        yield
    finally:
        speculative_hook._disable_overlap_schedule_for_cpu = original


class ConsensusSpecAlgo(CustomSpecAlgo):
    def is_ngram(self) -> bool:
        return True

    def has_draft_kv(self) -> bool:
        return False  # the tree lives only in the verify mask, like NGRAM's

    def carries_draft_hidden_states(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def get_platform_worker_cls(self):
        return None

    def create_future_map(
        self, device, req_to_token_pool, needs_cpu_seq_lens: bool = True, needs_confidence_relay: bool = False
    ):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens, needs_confidence_relay)

    def handle_server_args(self, server_args) -> None:
        # Runs in the launching process during argument resolution: bad knobs and unsupported
        # set-ups fail here, with a clear message, instead of inside a spawned scheduler.
        from sglang.srt.arg_groups.overrides import resolving_view
        from sglang.srt.arg_groups.speculative_hook import _handle_ngram

        from sgl_consensus.settings import SettingsError, check_draft_width, load_settings

        settings = load_settings()
        cfg = resolving_view(server_args)
        if getattr(cfg, "pp_size", 1) > 1:
            raise SettingsError("--speculative-algorithm consensus does not support pipeline parallelism (--pp-size > 1)")
        for flag in ("enable_deterministic_inference", "enable_watermark"):
            if getattr(cfg, flag, False):
                raise SettingsError(f"--speculative-algorithm consensus does not support --{flag.replace('_', '-')} "
                                    "(its exact verification has no per-request seeds or watermarks)")
        if getattr(cfg, "enable_dp_attention", False):
            raise SettingsError("--speculative-algorithm consensus does not support --enable-dp-attention")
        # NGRAM's own resolution: draft width default, topk = BFS breadth, no mixed chunk,
        # overlap off on CPU (kept on with CONSENSUS_CPU_OVERLAP=1: tests of the overlap path).
        with _cpu_overlap_kept(cpu_overlap_requested()):
            _handle_ngram(server_args)
        width = check_draft_width(resolving_view(server_args).speculative_num_draft_tokens)
        settings.widths(width)  # the allowed widths fit the draft width



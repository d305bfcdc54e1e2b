"""Pure-torch stand-in for SGLang's CPU kernel library ``sgl_kernel``.

SGLang on CPU (``SGLANG_USE_CPU_ENGINE=1``) imports a CPU build of ``sgl_kernel`` that is not
published anywhere. This package provides, in plain torch, exactly the ops SGLang calls on the
CPU text-model path, with the semantics of SGLang's own CUDA/Triton kernels.

It is only ever used on CPU: ``sgl_consensus.cpu.activate()`` puts the ``_boot`` folder first on
PYTHONPATH of every SGLang process, so this package is what ``import sgl_kernel`` finds there.

It deliberately registers no ``torch.ops.sgl_kernel.convert_weight_packed``: SGLang takes that op
as the sign of the Intel AMX backend, and without it every layer uses its torch-native path.
"""

from sgl_kernel.allocation import assign_req_to_token_pool_cpu
from sgl_kernel.cache_locs import (
    assign_draft_cache_locs_contiguous_cpu,
    assign_extend_cache_locs_cpu,
)
from sgl_kernel.eagle import fill_accept_out_cache_loc_cpu, fill_bonus_tokens_cpu
from sgl_kernel.eagle_tree import build_tree_kernel_efficient_cpu, verify_tree_greedy_cpu
from sgl_kernel.kvcache import copy_all_layer_kv_cache_cpu
from sgl_kernel.multi_layer_eagle import rotate_input_ids_cpu
# Imported for their side effect / as submodules SGLang reaches into:
# sampling registers torch.ops.sgl_kernel.murmur_hash32_cpu; SGLang imports sgl_kernel.speculative.*
from sgl_kernel import sampling as _sampling  # noqa: F401
from sgl_kernel import speculative  # noqa: F401

__all__ = [
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "assign_req_to_token_pool_cpu",
    "build_tree_kernel_efficient_cpu",
    "copy_all_layer_kv_cache_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "rotate_input_ids_cpu",
    "verify_tree_greedy_cpu",
]

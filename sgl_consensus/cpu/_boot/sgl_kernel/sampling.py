"""``torch.ops.sgl_kernel.murmur_hash32_cpu``: the per-(request, vocab entry) hash behind
SGLang's seeded sampling (``multinomial_with_seed``), bit-identical to its Triton kernel.

Registered as a torch custom op because SGLang calls ``torch.ops.sgl_kernel.murmur_hash32_cpu``
(from a ``torch.compile``d function, hence the fake implementation).
"""

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(value: torch.Tensor, constant: int) -> torch.Tensor:
    """``value * constant mod 2**32`` for int64 tensors holding uint32 values, without int64
    overflow: multiply by the constant's 16-bit halves separately."""
    low = value * (constant & 0xFFFF)
    high = ((value * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _rotl32(value: torch.Tensor, bits: int) -> torch.Tensor:
    return ((value << bits) | (value >> (32 - bits))) & _MASK32


def _mix(state: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 32-bit block step."""
    key = _mul32(key, 0xCC9E2D51)
    key = _rotl32(key, 15)
    key = _mul32(key, 0x1B873593)
    state = _rotl32(state ^ key, 13)
    return (_mul32(state, 5) + 0xE6546B64) & _MASK32


def _finalize(state: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 32-bit finalizer."""
    state = state ^ (state >> 16)
    state = _mul32(state, 0x85EBCA6B)
    state = state ^ (state >> 13)
    state = _mul32(state, 0xC2B2AE35)
    return state ^ (state >> 16)


def murmur_hash32(
    seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor
) -> torch.Tensor:
    """``[n, m]`` uint32: the hash of (seed[i] low word, seed[i] high word, positions[i],
    col_indices[j]) as four 32-bit blocks, total length 16."""
    # Reinterpret the 64-bit seed's bits as int64; the shifts below then give its two words.
    seed_bits = seed.view(torch.int64) if seed.dtype == torch.uint64 else seed.long()
    seed_low = (seed_bits & _MASK32)[:, None]
    seed_high = ((seed_bits >> 32) & _MASK32)[:, None]
    position = (positions.long() & _MASK32)[:, None]
    column = (col_indices.long() & _MASK32)[None, :]
    state = torch.zeros_like(seed_low)
    state = _mix(state, seed_low)
    state = _mix(state, seed_high)
    state = _mix(state, position)
    state = _mix(state, column)
    return _finalize(state ^ 16).to(torch.uint32)


def _murmur_hash32_fake(
    seed: torch.Tensor, positions: torch.Tensor, col_indices: torch.Tensor
) -> torch.Tensor:
    return seed.new_empty((seed.shape[0], col_indices.shape[0]), dtype=torch.uint32)


def _register_op() -> None:
    """Register ``sgl_kernel::murmur_hash32_cpu`` once per process (this module may be loaded
    again, e.g. under another name, and a second registration would raise)."""
    if hasattr(torch.ops.sgl_kernel, "murmur_hash32_cpu"):
        return
    op = torch.library.custom_op("sgl_kernel::murmur_hash32_cpu", mutates_args=())(murmur_hash32)
    op.register_fake(_murmur_hash32_fake)


_register_op()

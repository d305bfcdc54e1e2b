"""``copy_all_layer_kv_cache_cpu``: move KV slot rows inside every layer's buffer, by raw address.

SGLang hands over each buffer as an address plus a row width in bytes (the buffers are
contiguous ``[num_slots, ...]`` tensors and a slot is one row), so the copy works on bytes.
"""

import ctypes

import torch


def _byte_rows(address: int, row_bytes: int, num_rows: int) -> torch.Tensor:
    """A ``[num_rows, row_bytes]`` uint8 tensor over the memory at ``address`` (no copy)."""
    raw = (ctypes.c_uint8 * (num_rows * row_bytes)).from_address(address)
    return torch.frombuffer(raw, dtype=torch.uint8).view(num_rows, row_bytes)


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """For every buffer ``i``: row ``tgt_loc[k]`` = row ``src_loc[k]`` (rows of ``strides[i]``
    bytes at address ``data_ptrs[i]``). All sources are read before any target is written, so
    overlapping source and target sets are safe."""
    if tgt_loc.numel() != src_loc.numel():
        raise ValueError(f"tgt_loc has {tgt_loc.numel()} entries but src_loc {src_loc.numel()}")
    if tgt_loc.numel() == 0:
        return
    targets = tgt_loc.reshape(-1).long()
    sources = src_loc.reshape(-1).long()
    lowest = min(int(targets.min()), int(sources.min()))
    if lowest < 0:
        raise ValueError(f"negative KV slot index {lowest} in copy_all_layer_kv_cache_cpu")
    # Only the rows up to the highest index touched need to be mapped.
    num_rows = max(int(targets.max()), int(sources.max())) + 1
    for address, row_bytes in zip(data_ptrs.tolist(), strides.tolist()):
        rows = _byte_rows(int(address), int(row_bytes), num_rows)
        # index_select copies the sources out first; index_copy_ then writes the targets.
        rows.index_copy_(0, targets, rows.index_select(0, sources))

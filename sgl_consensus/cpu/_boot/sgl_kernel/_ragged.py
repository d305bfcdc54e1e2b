"""Index helpers for per-request ranges laid end to end in one flat buffer."""

from typing import NamedTuple

import torch


class RaggedRanges(NamedTuple):
    """The positions covered by ranges ``[starts[i], ends[i])``, request after request."""

    request: torch.Tensor  # [total] which request each position belongs to
    column: torch.Tensor  # [total] ``starts[i] + j``
    packed: torch.Tensor  # [total] slot in the packed buffer


def ragged_ranges(starts: torch.Tensor, ends: torch.Tensor) -> RaggedRanges:
    """Flatten the ranges ``[starts[i], ends[i])``. Request i's packed block begins at
    ``sum(ends[:i] - starts[:i])``, as in SGLang's Triton kernels (so a reversed range covers
    nothing but still shifts the blocks after it)."""
    starts = starts.reshape(-1).long()
    lengths = ends.reshape(-1).long() - starts
    counts = lengths.clamp_min(0)
    block_starts = torch.cumsum(lengths, 0) - lengths
    covered_ends = torch.cumsum(counts, 0)
    first = covered_ends - counts
    position = torch.arange(int(covered_ends[-1]) if counts.numel() else 0, device=starts.device)
    # Not repeat_interleave: on a busy machine its thread-pool launch costs milliseconds even
    # for a handful of elements, which searchsorted/take avoid below their parallel grain size.
    request = torch.searchsorted(covered_ends, position, right=True)
    offset = position - first.take(request)
    return RaggedRanges(request, starts.take(request) + offset, block_starts.take(request) + offset)

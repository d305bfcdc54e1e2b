"""EAGLE verify bookkeeping: pick the bonus tokens and pack the accepted KV slots."""

import torch


def fill_bonus_tokens_cpu(
    accept_tokens: torch.Tensor,
    accept_lens: torch.Tensor,
    bonus_tokens: torch.Tensor,
    accept_stride: int,
) -> None:
    """``bonus_tokens[i] = accept_tokens.flat[i * accept_stride + accept_lens[i] - 1]``: the last
    accepted token of request i (``accept_lens`` counts the bonus token). In place."""
    batch_size = accept_lens.numel()
    if batch_size == 0:
        return
    rows = torch.arange(batch_size, device=accept_lens.device)
    flat_index = rows * accept_stride + accept_lens.reshape(-1).long() - 1
    bonus_tokens.put_(rows, accept_tokens.take(flat_index).to(bonus_tokens.dtype))


def fill_accept_out_cache_loc_cpu(
    accept_index: torch.Tensor,
    out_cache_loc: torch.Tensor,
    accept_out_cache_loc: torch.Tensor,
) -> None:
    """Pack ``out_cache_loc[a]`` for every accepted entry ``a`` of ``accept_index`` (flattened,
    ``-1`` = rejected) to the front of ``accept_out_cache_loc``, in order. In place."""
    flat_index = accept_index.reshape(-1).long()
    # As the Triton kernel: an entry's slot counts the entries before it that are not -1.
    counted = (flat_index != -1).long()
    destination = torch.cumsum(counted, 0) - counted
    accepted = flat_index > -1
    sources = flat_index.masked_select(accepted)
    accept_out_cache_loc.put_(
        destination.masked_select(accepted),
        out_cache_loc.take(sources).to(accept_out_cache_loc.dtype),
    )

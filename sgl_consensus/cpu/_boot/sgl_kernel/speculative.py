"""``reconstruct_indices_from_tree_mask``: n-gram verify metadata from an ancestor mask.

SGLang imports it as ``sgl_kernel.speculative.reconstruct_indices_from_tree_mask``.
"""

import torch


def _first_true_index(flags: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last dim, or -1 where there is none."""
    width = flags.shape[-1]
    index = torch.arange(width, device=flags.device).expand_as(flags)
    first = torch.where(flags, index, width).amin(-1)
    return torch.where(first == width, -1, first)


def reconstruct_indices_from_tree_mask(
    tree_mask: torch.Tensor,
    verified_seq_len: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    batch_size: int,
    draft_token_num: int,
) -> None:
    """In place, per request b and node t (``n = draft_token_num``), where
    ``tree_mask[b, i, j]`` (flat, row-major, nonzero = True) marks node j an ancestor of i and
    only ``j < i`` counts:

    - ``positions[b*n + t] = verified_seq_len[b] + number of ancestors of t``;
    - ``retrive_index[b, t] = b*n + t``;
    - ``retrive_next_token[b, t]`` = first node k > t having t as ancestor, else -1;
    - ``retrive_next_sibling[b, t]`` = first node k > t with the same parent (the highest
      ancestor) as t, else -1 (and -1 for a node without parent).
    """
    n = draft_token_num
    if batch_size == 0:
        return
    mask = tree_mask.reshape(-1)[: batch_size * n * n].view(batch_size, n, n) != 0
    node = torch.arange(n, device=mask.device)
    strictly_earlier = node[None, :] < node[:, None]  # [i, j]: j < i
    ancestors = mask & strictly_earlier

    depth = ancestors.sum(-1)
    positions.view(batch_size, n).copy_(depth + verified_seq_len.view(-1, 1).to(depth.dtype))
    retrive_index.copy_(torch.arange(batch_size * n, device=mask.device).view(batch_size, n))

    # ancestors[b, k, t] read along k: the first k having t as ancestor is t's first child.
    retrive_next_token.copy_(_first_true_index(ancestors.transpose(1, 2)))

    # Parent = the highest-numbered ancestor; -1 for a root.
    parent = torch.where(ancestors, node, -1).amax(-1)
    same_parent = parent[:, None, :] == parent[:, :, None]  # [b, t, k]
    later = node[None, :] > node[:, None]  # [t, k]: k > t
    next_sibling = _first_true_index(same_parent & later)
    retrive_next_sibling.copy_(torch.where(parent >= 0, next_sibling, -1))

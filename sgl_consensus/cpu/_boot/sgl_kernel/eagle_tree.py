"""EAGLE draft trees: build the tree (mask, positions, retrieval links) and verify it greedily."""

import logging
from typing import List, Optional

import torch

logger = logging.getLogger(__name__)

# TreeMaskMode values of sglang.kernels.ops.speculative.spec_tree.
FULL_MASK = 0
QLEN_ONLY = 1
QLEN_ONLY_BITPACKING = 2


def _find(values: List[int], wanted: int) -> Optional[int]:
    """Index of the first ``wanted`` in ``values``, or None."""
    for index, value in enumerate(values):
        if value == wanted:
            return index
    return None


def _ancestor_columns(
    node: int, parents: List[int], selected: List[int], topk: int, depth: int
) -> List[int]:
    """Mask columns of draft node ``node`` (>0): itself and its draft ancestors, each column
    being ``selected position + 1``. Stops at the root, at a parent that was not selected
    (invalid tree) or after ``depth`` steps, as the Triton kernel does."""
    columns = []
    position = node - 1
    for _ in range(depth):
        columns.append(position + 1)
        parent_slot = selected[position] // topk
        if parent_slot == 0:
            break
        found = _find(selected, parents[parent_slot])
        if found is None:
            break
        position = found
    return columns


def _link_children(
    batch: int,
    parents: List[int],
    selected: List[int],
    topk: int,
    next_token: List[int],
    next_sibling: List[int],
) -> None:
    """Fill one request's first-child / next-sibling links (lists of the request's row, in
    place). Nodes are visited from the last to the first, so each parent's first child ends up
    the lowest-numbered one and the siblings chain upwards."""
    num_nodes = len(selected) + 1
    for node in range(num_nodes - 1, 0, -1):
        parent_slot = selected[node - 1] // topk
        parent_node = 0
        if parent_slot > 0:
            found = _find(selected, parents[parent_slot])
            if found is None:
                logger.warning(
                    "invalid eagle tree: request %d node %d has no selected parent; ignored",
                    batch,
                    node,
                )
                continue
            parent_node = found + 1
        previous_first = next_token[parent_node]
        next_token[parent_node] = node
        if previous_first != -1:
            next_sibling[node] = previous_first


def _mask_row_starts(
    seq_lens: List[int], draft_token_num: int, tree_mask_mode: int
) -> torch.Tensor:
    """Flat offset of each (request, node) row's draft part in a bool tree mask."""
    n = draft_token_num
    starts = []
    prefix = 0
    for batch, seq_len in enumerate(seq_lens):
        for node in range(n):
            if tree_mask_mode == FULL_MASK:
                # Each row holds seq_len prefix columns, then the n draft columns.
                starts.append(prefix * n + batch * n * n + (seq_len + n) * node + seq_len)
            else:
                starts.append(batch * n * n + node * n)
        prefix += seq_len
    return torch.tensor(starts, dtype=torch.int64)


def _write_bool_mask(
    tree_mask: torch.Tensor, row_starts: torch.Tensor, draft_rows: torch.Tensor
) -> None:
    """Overwrite each row's n draft columns; prefix columns are left alone."""
    n = draft_rows.shape[-1]
    index = row_starts[:, None] + torch.arange(n)
    tree_mask.put_(index.reshape(-1), draft_rows.reshape(-1).to(tree_mask.dtype))


def _write_packed_mask(tree_mask: torch.Tensor, draft_rows: torch.Tensor) -> None:
    """Bit-packed rows (bit j = column j, little endian): byte 0 of each row is assigned and
    the later bytes are OR-ed into, exactly as the CUDA kernel does."""
    num_rows, n = draft_rows.shape
    if n > 32:
        raise ValueError(f"QLEN_ONLY_BITPACKING needs draft_token_num <= 32, got {n}")
    bytes_per_row = 4 if n > 16 else (2 if n > 8 else 1)
    weights = torch.tensor([1 << j for j in range(n)], dtype=torch.int64)
    bits = (draft_rows.long() * weights).sum(-1)
    new_bytes = torch.stack([(bits >> (8 * b)) & 0xFF for b in range(bytes_per_row)], -1)
    mask_bytes = tree_mask.view(torch.uint8).view(-1)[: num_rows * bytes_per_row]
    rows = mask_bytes.view(num_rows, bytes_per_row)
    rows[:, 0] = new_bytes[:, 0].to(torch.uint8)
    if bytes_per_row > 1:
        rows[:, 1:] |= new_bytes[:, 1:].to(torch.uint8)


def build_tree_kernel_efficient_cpu(
    parent_list: torch.Tensor,
    selected_index: torch.Tensor,
    verified_seq_len: torch.Tensor,
    tree_mask: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    topk: int,
    depth: int,
    draft_token_num: int,
    tree_mask_mode: int,
) -> None:
    """Build each request's draft tree from the top-k search (node i>0 is
    ``selected_index[b, i-1]``; its parent is ``parent_list[b, selected // topk]``), in place:

    - ``tree_mask``: node i's row sees node 0, itself and its ancestors (FULL_MASK rows also keep
      their ``verified_seq_len`` prefix columns untouched; QLEN_ONLY rows are n wide;
      QLEN_ONLY_BITPACKING rows are bit-packed);
    - ``positions[b*n + i] = verified_seq_len[b] + depth of node i``;
    - ``retrive_index[b, i] = b*n + i``; ``retrive_next_token`` = first child,
      ``retrive_next_sibling`` = next sibling (both expected pre-filled with -1).
    """
    n = draft_token_num
    if tree_mask_mode not in (FULL_MASK, QLEN_ONLY, QLEN_ONLY_BITPACKING):
        raise ValueError(f"unknown tree_mask_mode {tree_mask_mode}")
    batch_size = verified_seq_len.numel()
    if batch_size == 0:
        return
    seq_lens = verified_seq_len.tolist()
    parent_rows = parent_list.reshape(batch_size, parent_list.shape[-1]).tolist()
    selected_rows = selected_index.reshape(batch_size, n - 1).tolist()
    next_token_rows = retrive_next_token.tolist()
    next_sibling_rows = retrive_next_sibling.tolist()

    mask_rows: List[List[bool]] = []  # [batch * n][n]: the draft columns of every row
    depths: List[int] = []
    for batch in range(batch_size):
        parents, selected = parent_rows[batch], selected_rows[batch]
        for node in range(n):
            columns = _ancestor_columns(node, parents, selected, topk, depth) if node else []
            row = [False] * n
            for column in [0] + columns:  # every node sees the root (column 0)
                row[column] = True
            mask_rows.append(row)
            depths.append(len(columns))
        _link_children(
            batch, parents, selected, topk, next_token_rows[batch], next_sibling_rows[batch]
        )

    draft_rows = torch.tensor(mask_rows, dtype=torch.bool).view(batch_size * n, n)
    if tree_mask_mode == QLEN_ONLY_BITPACKING:
        _write_packed_mask(tree_mask, draft_rows)
    else:
        _write_bool_mask(tree_mask, _mask_row_starts(seq_lens, n, tree_mask_mode), draft_rows)
    depth_of_node = torch.tensor(depths, dtype=torch.int64).view(batch_size, n)
    positions.copy_((depth_of_node + verified_seq_len.view(-1, 1)).view(positions.shape))
    retrive_index.copy_(torch.arange(batch_size * n, dtype=torch.int64).view(batch_size, n))
    retrive_next_token.copy_(torch.tensor(next_token_rows, dtype=torch.int64))
    retrive_next_sibling.copy_(torch.tensor(next_sibling_rows, dtype=torch.int64))


def verify_tree_greedy_cpu(
    predicts: torch.Tensor,
    accept_index: torch.Tensor,
    accept_token_num: torch.Tensor,
    candidates: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    target_predict: torch.Tensor,
) -> None:
    """Greedy tree verification, per request, in place. From the root, step down the tree:
    among the children of the last accepted node (first child, then its siblings) accept the
    first whose candidate token equals the target's prediction at the last accepted node; stop
    when none does or ``accept_index`` is full.

    ``accept_index[b, 0]`` = root, ``accept_index[b, 1..k]`` = the k accepted nodes (as
    ``retrive_index`` values, i.e. flat indices into ``target_predict``);
    ``accept_token_num[b] = k``; ``predicts[i] = target_predict.flat[i]`` for every node on the
    accepted path, including the root. Other entries are left alone.
    """
    batch_size, num_draft = candidates.shape
    num_spec = accept_index.shape[1]
    if batch_size == 0:
        return
    # Flat (row-major) indices: take/put_ are much cheaper than 2-D advanced indexing.
    row_base = torch.arange(batch_size) * num_draft
    accept_row_base = torch.arange(batch_size) * num_spec
    targets = target_predict.reshape(-1)

    last_accepted = retrive_index.take(row_base)  # the roots
    accept_index.put_(accept_row_base, last_accepted.to(accept_index.dtype))
    num_accepted = torch.zeros(batch_size, dtype=torch.int64)
    node = torch.zeros(batch_size, dtype=torch.int64)
    walking = torch.ones(batch_size, dtype=torch.bool)

    for _ in range(1, num_spec):
        node = torch.where(walking, retrive_next_token.take(row_base + node.clamp_min(0)), node)
        wanted = targets.take(last_accepted)
        searching = walking & (node != -1)
        matched = torch.zeros(batch_size, dtype=torch.bool)
        # A sibling chain has fewer than num_draft nodes; the bound also guards against cycles.
        for _ in range(num_draft):
            if not bool(searching.any()):
                break
            flat_node = row_base + node.clamp_min(0)
            hit = searching & (candidates.take(flat_node) == wanted)
            if bool(hit.any()):
                predicts.put_(
                    last_accepted.masked_select(hit), wanted.masked_select(hit).to(predicts.dtype)
                )
                num_accepted += hit
                accepted_node = retrive_index.take(flat_node)
                accept_index.put_(
                    (accept_row_base + num_accepted).masked_select(hit),
                    accepted_node.masked_select(hit).to(accept_index.dtype),
                )
                last_accepted = torch.where(hit, accepted_node, last_accepted)
                matched |= hit
            missed = searching & ~hit
            node = torch.where(missed, retrive_next_sibling.take(flat_node), node)
            searching = missed & (node != -1)
        walking &= matched
        if not bool(walking.any()):
            break

    accept_token_num.copy_(num_accepted.view(accept_token_num.shape))
    predicts.put_(last_accepted, targets.take(last_accepted).to(predicts.dtype))

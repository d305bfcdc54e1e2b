"""The CPU stand-in ``sgl_kernel`` against plain-loop references written from SGLang's
CUDA/Triton kernels, on random inputs (several seeds and sizes) and edge cases."""

import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

import sgl_kernel
from sgl_kernel.speculative import reconstruct_indices_from_tree_mask

SEEDS = [0, 1, 2, 3]


def make_rng(seed: int) -> Tuple[random.Random, torch.Generator]:
    return random.Random(seed), torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- package surface


def test_exports_every_name_sglang_imports_on_cpu() -> None:
    for name in [
        "copy_all_layer_kv_cache_cpu",
        "assign_req_to_token_pool_cpu",
        "assign_extend_cache_locs_cpu",
        "assign_draft_cache_locs_contiguous_cpu",
        "fill_bonus_tokens_cpu",
        "fill_accept_out_cache_loc_cpu",
        "verify_tree_greedy_cpu",
        "build_tree_kernel_efficient_cpu",
        "rotate_input_ids_cpu",
    ]:
        assert callable(getattr(sgl_kernel, name)), name
    assert callable(sgl_kernel.speculative.reconstruct_indices_from_tree_mask)


def test_amx_backend_stays_off() -> None:
    # SGLang enables its Intel AMX kernels when this op exists; we provide none of them.
    assert not hasattr(torch.ops.sgl_kernel, "convert_weight_packed")


# ---------------------------------------------------------------------------- KV cache copy


def reference_copy_rows(buffers: List[torch.Tensor], tgt: List[int], src: List[int]) -> None:
    for buffer in buffers:
        before = buffer.clone()  # the Triton kernel loads every source before storing
        for t, s in zip(tgt, src):
            buffer[t] = before[s]


def make_kv_buffers(gen: torch.Generator, num_slots: int) -> List[torch.Tensor]:
    shapes_dtypes = [((num_slots, 2, 8), torch.bfloat16), ((num_slots, 3, 4), torch.float32)]
    buffers = []
    for shape, dtype in shapes_dtypes * 2:  # "k" and "v" of two layers
        buffers.append(torch.randn(shape, generator=gen).to(dtype))
    return buffers


def call_copy(buffers: List[torch.Tensor], tgt: torch.Tensor, src: torch.Tensor) -> None:
    data_ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.uint64)
    strides = torch.tensor([b.stride(0) * b.element_size() for b in buffers])
    sgl_kernel.copy_all_layer_kv_cache_cpu(data_ptrs, strides, tgt, src)


@pytest.mark.parametrize("seed", SEEDS)
def test_copy_all_layer_kv_cache_matches_reference(seed: int) -> None:
    rng, gen = make_rng(seed)
    num_slots = rng.randint(4, 40)
    num_locs = rng.randint(1, num_slots)
    tgt = rng.sample(range(num_slots), num_locs)
    src = [rng.randrange(num_slots) for _ in range(num_locs)]
    buffers = make_kv_buffers(gen, num_slots)
    expected = [b.clone() for b in buffers]
    reference_copy_rows(expected, tgt, src)
    call_copy(buffers, torch.tensor(tgt), torch.tensor(src))
    for got, want in zip(buffers, expected):
        assert torch.equal(got, want)


def test_copy_all_layer_kv_cache_permutation_in_place() -> None:
    # Targets and sources overlap: a rotation must see the old rows, not half-moved ones.
    _, gen = make_rng(7)
    buffers = make_kv_buffers(gen, 6)
    before = [b.clone() for b in buffers]
    call_copy(buffers, torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 0]))
    for got, old in zip(buffers, before):
        assert torch.equal(got[:4], old[[1, 2, 3, 0]])
        assert torch.equal(got[4:], old[4:])


def test_copy_all_layer_kv_cache_edges() -> None:
    _, gen = make_rng(8)
    buffers = make_kv_buffers(gen, 5)
    before = [b.clone() for b in buffers]
    call_copy(buffers, torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
    call_copy(buffers, torch.tensor([2]), torch.tensor([2]))  # SGLang's warm-up self-copy
    for got, old in zip(buffers, before):
        assert torch.equal(got, old)
    call_copy(buffers, torch.tensor([4]), torch.tensor([0]))  # last slot
    assert all(torch.equal(b[4], old[0]) for b, old in zip(buffers, before))
    with pytest.raises(ValueError):
        call_copy(buffers, torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError):
        call_copy(buffers, torch.tensor([-1]), torch.tensor([1]))


# ---------------------------------------------------------------------------- req_to_token writes


def random_ranges(
    rng: random.Random, batch_size: int, pool_len: int, pool_size: int
) -> Tuple[List[int], List[int], List[int]]:
    req_pool_indices = rng.sample(range(pool_size), batch_size)
    starts, ends = [], []
    for _ in range(batch_size):
        start = rng.randint(0, pool_len)
        starts.append(start)
        ends.append(rng.randint(start, pool_len))
    return req_pool_indices, starts, ends


def reference_assign_req_to_token_pool(
    req_pool_indices, req_to_token, starts, ends, out_cache_loc
) -> None:
    offset = 0
    for req, start, end in zip(req_pool_indices, starts, ends):
        for j in range(end - start):
            req_to_token[req, start + j] = int(out_cache_loc[offset + j])
        offset += end - start


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_size", [1, 3, 9])
def test_assign_req_to_token_pool_matches_reference(seed: int, batch_size: int) -> None:
    rng, gen = make_rng(seed)
    pool_len, pool_size = rng.randint(1, 40), batch_size + 3
    rpi, starts, ends = random_ranges(rng, batch_size, pool_len, pool_size)
    total = sum(e - s for s, e in zip(starts, ends))
    out_cache_loc = torch.randint(0, 10_000, (total + 5,), generator=gen)
    req_to_token = torch.randint(-5, 0, (pool_size, pool_len), generator=gen, dtype=torch.int32)
    expected = req_to_token.clone()
    reference_assign_req_to_token_pool(rpi, expected, starts, ends, out_cache_loc)
    sgl_kernel.assign_req_to_token_pool_cpu(
        torch.tensor(rpi), req_to_token, torch.tensor(starts), torch.tensor(ends),
        out_cache_loc, pool_len,
    )
    assert torch.equal(req_to_token, expected)


def test_assign_req_to_token_pool_edges() -> None:
    req_to_token = torch.zeros((3, 4), dtype=torch.int32)
    empty = torch.empty(0, dtype=torch.int64)
    sgl_kernel.assign_req_to_token_pool_cpu(empty, req_to_token, empty, empty, empty, 4)
    assert not req_to_token.any()
    # A full row: end == pool_len.
    sgl_kernel.assign_req_to_token_pool_cpu(
        torch.tensor([2]), req_to_token, torch.tensor([0]), torch.tensor([4]),
        torch.tensor([5, 6, 7, 8]), 4,
    )
    assert req_to_token[2].tolist() == [5, 6, 7, 8] and not req_to_token[:2].any()


# ---------------------------------------------------------------------------- cache loc reads


def reference_assign_extend_cache_locs(rpi, req_to_token, starts, ends, out) -> None:
    offset = 0
    for req, start, end in zip(rpi, starts, ends):
        for j in range(end - start):
            out[offset + j] = int(req_to_token[req, start + j])
        offset += end - start


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_size", [1, 4, 11])
def test_assign_extend_cache_locs_matches_reference(seed: int, batch_size: int) -> None:
    rng, gen = make_rng(seed)
    pool_len, pool_size = rng.randint(1, 30), batch_size + 2
    rpi, starts, ends = random_ranges(rng, batch_size, pool_len, pool_size)
    req_to_token = torch.randint(0, 5000, (pool_size, pool_len), generator=gen, dtype=torch.int32)
    out = torch.full((sum(e - s for s, e in zip(starts, ends)) + 3,), -7, dtype=torch.int64)
    expected = out.clone()
    reference_assign_extend_cache_locs(rpi, req_to_token, starts, ends, expected)
    sgl_kernel.assign_extend_cache_locs_cpu(
        torch.tensor(rpi), req_to_token, torch.tensor(starts), torch.tensor(ends), out, pool_len
    )
    assert torch.equal(out, expected)


def test_assign_extend_cache_locs_uniform_window_and_empty() -> None:
    # SGLang's fill_front_out_cache_loc_func: rows = arange, starts = 0, int32 window.
    window = torch.arange(12, dtype=torch.int32).view(3, 4) + 100
    out = torch.zeros(12, dtype=torch.int64)
    sgl_kernel.assign_extend_cache_locs_cpu(
        torch.arange(3), window, torch.zeros(3, dtype=torch.int64), torch.tensor([1, 4, 2]), out, 4
    )
    assert out.tolist() == [100, 104, 105, 106, 107, 108, 109] + [0] * 5
    empty = torch.empty(0, dtype=torch.int64)
    sgl_kernel.assign_extend_cache_locs_cpu(empty, window, empty, empty, out, 4)
    assert out.tolist()[:7] == [100, 104, 105, 106, 107, 108, 109]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_size", [0, 1, 5])
def test_assign_draft_cache_locs_contiguous_matches_reference(seed: int, batch_size: int) -> None:
    rng, gen = make_rng(seed)
    topk, steps = rng.randint(1, 4), rng.randint(1, 5)
    width = topk * steps
    pool_len, pool_size = width + rng.randint(0, 20), batch_size + 2
    rpi = rng.sample(range(pool_size), batch_size)
    seq_lens = [rng.randint(0, pool_len - width) for _ in range(batch_size)]
    req_to_token = torch.randint(0, 5000, (pool_size, pool_len), generator=gen, dtype=torch.int32)
    out = torch.full((batch_size * width + 2,), -3, dtype=torch.int64)
    expected = out.clone()
    for i, (req, seq_len) in enumerate(zip(rpi, seq_lens)):
        for j in range(width):
            expected[i * width + j] = int(req_to_token[req, seq_len + j])
    sgl_kernel.assign_draft_cache_locs_contiguous_cpu(
        torch.tensor(rpi, dtype=torch.int64), req_to_token,
        torch.tensor(seq_lens, dtype=torch.int64), out, pool_len, topk, steps,
    )
    assert torch.equal(out, expected)


# ---------------------------------------------------------------------------- EAGLE bookkeeping


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_size", [0, 1, 6])
def test_fill_bonus_tokens_matches_reference(seed: int, batch_size: int) -> None:
    rng, gen = make_rng(seed)
    stride = rng.randint(1, 6)
    accept_tokens = torch.randint(0, 1000, (batch_size, stride), generator=gen)
    accept_lens = torch.tensor([rng.randint(1, stride) for _ in range(batch_size)], dtype=torch.int32)
    bonus = torch.full((batch_size,), -1, dtype=torch.int32)
    flat = accept_tokens.reshape(-1).tolist()
    expected = [flat[i * stride + int(accept_lens[i]) - 1] for i in range(batch_size)]
    sgl_kernel.fill_bonus_tokens_cpu(accept_tokens, accept_lens, bonus, stride)
    assert bonus.tolist() == expected


def reference_fill_accept_out_cache_loc(accept_index: List[int], out_cache_loc, out) -> None:
    for pid, src in enumerate(accept_index):
        dst = sum(1 for a in accept_index[:pid] if a != -1)
        if src > -1:
            out[dst] = int(out_cache_loc[src])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_size", [0, 1, 7])
def test_fill_accept_out_cache_loc_matches_reference(seed: int, batch_size: int) -> None:
    rng, gen = make_rng(seed)
    width = rng.randint(1, 5)
    out_cache_loc = torch.randint(0, 9000, (batch_size * width + 4,), generator=gen)
    accept_index = torch.tensor(
        [[rng.randrange(out_cache_loc.numel()) if rng.random() < 0.6 else -1 for _ in range(width)]
         for _ in range(batch_size)],
        dtype=torch.int32,
    ).view(batch_size, width)
    out = torch.zeros(batch_size * width, dtype=torch.int64)
    expected = out.clone()
    reference_fill_accept_out_cache_loc(accept_index.view(-1).tolist(), out_cache_loc, expected)
    sgl_kernel.fill_accept_out_cache_loc_cpu(accept_index, out_cache_loc, out)
    assert torch.equal(out, expected)


def test_fill_accept_out_cache_loc_all_rejected_and_all_accepted() -> None:
    out_cache_loc = torch.tensor([10, 11, 12, 13])
    out = torch.zeros(4, dtype=torch.int64)
    sgl_kernel.fill_accept_out_cache_loc_cpu(torch.full((2, 2), -1), out_cache_loc, out)
    assert out.tolist() == [0, 0, 0, 0]
    sgl_kernel.fill_accept_out_cache_loc_cpu(torch.tensor([[3, 2], [1, 0]]), out_cache_loc, out)
    assert out.tolist() == [13, 12, 11, 10]


@pytest.mark.parametrize("seed", SEEDS)
def test_rotate_input_ids_matches_reference(seed: int) -> None:
    rng, gen = make_rng(seed)
    lengths = [rng.randint(0, 6) for _ in range(rng.randint(1, 5))]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    input_ids = torch.randint(0, 500, (sum(lengths) + 2,), generator=gen)
    topk_index = torch.randint(500, 600, (len(lengths), 1), generator=gen)
    for use_select in (False, True):
        select = [s + rng.randrange(max(n, 1)) for s, n in zip(starts, lengths)]
        expected = input_ids.clone().tolist()
        for i, (s, n) in enumerate(zip(starts, lengths)):
            expected[s : s + max(n - 1, 0)] = expected[s + 1 : s + n]
            if n > 0:
                expected[select[i] if use_select else s + n - 1] = int(topk_index[i, 0])
        got = input_ids.clone()
        sgl_kernel.rotate_input_ids_cpu(
            got, torch.tensor(starts), torch.tensor(lengths), topk_index,
            torch.tensor(select) if use_select else None,
        )
        assert got.tolist() == expected


# ---------------------------------------------------------------------------- trees


def random_parents(rng: random.Random, n: int) -> List[int]:
    """A random tree over nodes 0..n-1 with root 0 and parent[i] < i."""
    return [-1] + [rng.randrange(i) for i in range(1, n)]


def ancestor_mask(parents: List[int]) -> List[List[bool]]:
    n = len(parents)
    mask = [[False] * n for _ in range(n)]
    for i in range(n):
        mask[i][i] = True
        p = parents[i]
        while p >= 0:
            mask[i][p] = True
            p = parents[p]
    return mask


def reference_reconstruct(mask: List[bool], seq_lens: List[int], n: int):
    """The CUDA kernel reconstructIndicesFromTreeMask, one (bid, tid) at a time."""
    bs = len(seq_lens)
    positions, rindex, ntoken, nsibling = [0] * (bs * n), [0] * (bs * n), [0] * (bs * n), [0] * (bs * n)
    for bid in range(bs):
        base = bid * n * n
        for tid in range(n):
            depth, parent = 0, -1
            for i in range(tid - 1, -1, -1):
                if mask[base + tid * n + i]:
                    depth += 1
                    if parent == -1:
                        parent = i
            rindex[bid * n + tid] = bid * n + tid
            positions[bid * n + tid] = depth + seq_lens[bid]
            nxt = -1
            for i in range(tid + 1, n):
                if mask[base + i * n + tid]:
                    nxt = i
                    break
            ntoken[bid * n + tid] = nxt
            sib = -1
            if parent != -1:
                for i in range(tid + 1, n):
                    if mask[base + i * n + parent]:
                        if not any(mask[base + i * n + j] for j in range(parent + 1, i)):
                            sib = i
                            break
            nsibling[bid * n + tid] = sib
    return positions, rindex, ntoken, nsibling


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("random_bits", [False, True])
def test_reconstruct_indices_from_tree_mask_matches_reference(seed: int, random_bits: bool) -> None:
    rng, _ = make_rng(seed)
    for bs, n in [(1, 1), (1, 6), (3, 8), (5, 4)]:
        if random_bits:
            mask = [rng.random() < 0.5 for _ in range(bs * n * n)]
        else:
            mask = [bit for _ in range(bs) for row in ancestor_mask(random_parents(rng, n)) for bit in row]
        seq_lens = [rng.randint(0, 50) for _ in range(bs)]
        expected = reference_reconstruct(mask, seq_lens, n)
        tree_mask = torch.tensor(mask + [True] * 5, dtype=torch.uint8 if seed % 2 else torch.bool)
        positions = torch.full((bs * n,), -9, dtype=torch.int64)
        outs = [torch.full((bs, n), -9, dtype=torch.int64) for _ in range(3)]
        reconstruct_indices_from_tree_mask(
            tree_mask, torch.tensor(seq_lens), positions, *outs, bs, n
        )
        got = (positions.tolist(),) + tuple(t.view(-1).tolist() for t in outs)
        assert got == expected


def test_reconstruct_indices_from_tree_mask_empty_batch() -> None:
    positions = torch.empty(0, dtype=torch.int64)
    outs = [torch.empty((0, 4), dtype=torch.int64) for _ in range(3)]
    reconstruct_indices_from_tree_mask(
        torch.empty(0, dtype=torch.bool), torch.empty(0, dtype=torch.int64), positions, *outs, 0, 4
    )


def tree_links(parents: List[int]) -> Tuple[List[int], List[int]]:
    """First child and next sibling (children in increasing order)."""
    n = len(parents)
    first_child, next_sibling = [-1] * n, [-1] * n
    for i in range(n - 1, 0, -1):
        p = parents[i]
        next_sibling[i] = first_child[p]
        first_child[p] = i
    return first_child, next_sibling


def reference_verify_tree_greedy(
    predicts, accept_index, accept_num, candidates, rindex, ntoken, nsibling, target
) -> None:
    """The CUDA kernel VerifyTreeGreedy on Python lists (flat target/predicts)."""
    bs = len(candidates)
    spec = len(accept_index[0])
    for bx in range(bs):
        last = rindex[bx][0]
        accept_index[bx][0] = last
        num = 0
        cur = 0
        for _ in range(1, spec):
            cur = ntoken[bx][cur]
            while cur != -1:
                draft_index = rindex[bx][cur]
                if candidates[bx][cur] == target[last]:
                    predicts[last] = target[last]
                    num += 1
                    accept_index[bx][num] = draft_index
                    last = draft_index
                    break
                cur = nsibling[bx][cur]
            if cur == -1:
                break
        accept_num[bx] = num
        predicts[last] = target[last]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bs,n", [(1, 1), (1, 5), (4, 8), (7, 3)])
def test_verify_tree_greedy_matches_reference(seed: int, bs: int, n: int) -> None:
    rng, gen = make_rng(seed)
    spec = rng.randint(1, n + 1)
    vocab = 3  # small, so that drafts often match
    links = [tree_links(random_parents(rng, n)) for _ in range(bs)]
    ntoken = [l[0] for l in links]
    nsibling = [l[1] for l in links]
    rindex = [[b * n + i for i in range(n)] for b in range(bs)]
    candidates = torch.randint(0, vocab, (bs, n), generator=gen)
    target = torch.randint(0, vocab, (bs, n), generator=gen)

    predicts = [-1] * (bs * n)
    accept_index = [[-2] * spec for _ in range(bs)]
    accept_num = [-3] * bs
    reference_verify_tree_greedy(
        predicts, accept_index, accept_num, candidates.tolist(), rindex, ntoken, nsibling,
        target.view(-1).tolist(),
    )

    got_predicts = torch.full((bs * n,), -1, dtype=torch.int32)
    got_accept_index = torch.full((bs, spec), -2, dtype=torch.int32)
    got_accept_num = torch.full((bs,), -3, dtype=torch.int32)
    sgl_kernel.verify_tree_greedy_cpu(
        predicts=got_predicts, accept_index=got_accept_index, accept_token_num=got_accept_num,
        candidates=candidates, retrive_index=torch.tensor(rindex),
        retrive_next_token=torch.tensor(ntoken), retrive_next_sibling=torch.tensor(nsibling),
        target_predict=target,
    )
    assert got_predicts.tolist() == predicts
    assert got_accept_index.tolist() == accept_index
    assert got_accept_num.tolist() == accept_num


def test_verify_tree_greedy_accepts_a_full_chain() -> None:
    # Chain 0 -> 1 -> 2 -> 3 where every draft matches: everything is accepted.
    candidates = torch.tensor([[9, 5, 6, 7]])
    target = torch.tensor([[5, 6, 7, 8]])
    predicts = torch.zeros(4, dtype=torch.int32)
    accept_index = torch.full((1, 4), -1, dtype=torch.int32)
    accept_num = torch.zeros(1, dtype=torch.int32)
    sgl_kernel.verify_tree_greedy_cpu(
        predicts=predicts, accept_index=accept_index, accept_token_num=accept_num,
        candidates=candidates, retrive_index=torch.arange(4).view(1, 4),
        retrive_next_token=torch.tensor([[1, 2, 3, -1]]),
        retrive_next_sibling=torch.full((1, 4), -1), target_predict=target,
    )
    assert accept_index.tolist() == [[0, 1, 2, 3]]
    assert accept_num.tolist() == [3]
    assert predicts.tolist() == [5, 6, 7, 8]


def test_verify_tree_greedy_empty_batch() -> None:
    empty = torch.empty((0, 4), dtype=torch.int64)
    sgl_kernel.verify_tree_greedy_cpu(
        predicts=torch.empty(0, dtype=torch.int32),
        accept_index=torch.empty((0, 3), dtype=torch.int32),
        accept_token_num=torch.empty(0, dtype=torch.int32),
        candidates=empty, retrive_index=empty, retrive_next_token=empty,
        retrive_next_sibling=empty, target_predict=empty,
    )


def random_eagle_selection(
    rng: random.Random, topk: int, depth: int, want: int
) -> Tuple[List[int], List[int]]:
    """An EAGLE top-k search: parent_list (the token expanded into each slot) and a sorted,
    ancestor-closed selection of ``want`` draft token indices (fewer if the tree is small)."""
    parent_list = [-1]
    layer = list(range(topk))  # step-1 tokens: slot 0 (the root) children
    for _ in range(depth - 1):
        expanded = rng.sample(layer, topk) if len(layer) >= topk else layer + layer[: topk - len(layer)]
        first_slot = len(parent_list)
        parent_list.extend(expanded)
        layer = [slot * topk + c for slot in range(first_slot, first_slot + topk) for c in range(topk)]
    parent_of = {}
    for slot, token in enumerate(parent_list):
        for c in range(topk):
            parent_of[slot * topk + c] = None if slot == 0 else token
    selected: List[int] = []
    while len(selected) < want:
        frontier = [t for t, p in parent_of.items() if t not in selected and (p is None or p in selected)]
        if not frontier:
            break
        selected.append(rng.choice(frontier))
    return parent_list, sorted(selected)


def reference_build_tree(
    parent_list, selected, seq_lens, tree_mask, positions, rindex, ntoken, nsibling,
    topk, depth, n, mode,
) -> None:
    """The CUDA kernels build_tree_efficient / build_tree_efficient_partial_packed, one
    (bid, tid) at a time, on flat Python lists (tree_mask as bools, or bytes when packed)."""
    width = topk * (depth - 1) + 1
    nbytes = 4 if n > 16 else (2 if n > 8 else 1)
    for bid in range(len(seq_lens)):
        sel = selected[bid * (n - 1) : (bid + 1) * (n - 1)]
        for tid in range(n):
            seq_len = seq_lens[bid]
            if mode == 2:
                row = (bid * n + tid) * nbytes
                tree_mask[row] = 1
            else:
                if mode == 0:
                    idx = n * n * bid + sum(seq_lens[:bid]) * n + (seq_len + n) * tid + seq_len + 1
                else:
                    idx = n * n * bid + n * tid + 1
                tree_mask[idx - 1] = True
                for i in range(n - 1):
                    tree_mask[idx + i] = False
            if tid == 0:
                positions[bid * n] = seq_len
                for i in range(n - 1, 0, -1):
                    rindex[bid * n + i] = bid * n + i
                    parent_tb = sel[i - 1] // topk
                    pp = 0
                    if parent_tb > 0:
                        token = parent_list[bid * width + parent_tb]
                        pp = sel.index(token) + 1
                    if ntoken[bid * n + pp] == -1:
                        ntoken[bid * n + pp] = i
                    else:
                        nsibling[bid * n + i] = ntoken[bid * n + pp]
                        ntoken[bid * n + pp] = i
                rindex[bid * n] = bid * n
            else:
                cur, position = tid - 1, 0
                while True:
                    position += 1
                    if mode == 2:
                        tree_mask[row + (cur + 1) // 8] |= 1 << ((cur + 1) % 8)
                    else:
                        tree_mask[idx + cur] = True
                    parent_tb = sel[cur] // topk
                    if parent_tb == 0:
                        break
                    cur = sel.index(parent_list[bid * width + parent_tb])
                positions[bid * n + tid] = position + seq_len


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize(
    "bs,topk,depth,n", [(1, 1, 1, 1), (1, 1, 4, 5), (3, 2, 3, 6), (2, 4, 4, 10), (2, 3, 5, 20)]
)
def test_build_tree_kernel_efficient_matches_reference(
    seed: int, mode: int, bs: int, topk: int, depth: int, n: int
) -> None:
    rng, _ = make_rng(seed)
    parent_list, selected = [], []
    for _ in range(bs):
        plist, sel = random_eagle_selection(rng, topk, depth, n - 1)
        n = min(n, len(sel) + 1)
        parent_list.append(plist)
        selected.append(sel)
    selected = [s[: n - 1] for s in selected]  # keep a common n (a prefix stays closed)
    seq_lens = [rng.randint(0, 6) for _ in range(bs)]
    if mode == 0:
        mask_len, fill = sum(seq_lens) * n + bs * n * n, True
    elif mode == 1:
        mask_len, fill = bs * n * n, True
    else:
        mask_len, fill = bs * n * (4 if n > 16 else (2 if n > 8 else 1)), None
    flat_parents = [t for p in parent_list for t in p]
    flat_selected = [t for s in selected for t in s]

    # Packed rows start with stray bits: byte 0 is assigned, later bytes only OR-ed into.
    exp_mask = [rng.randrange(256) for _ in range(mask_len)] if mode == 2 else [fill] * mask_len
    initial_mask = list(exp_mask)
    exp_pos, exp_rindex = [-9] * (bs * n), [-1] * (bs * n)
    exp_ntoken, exp_nsib = [-1] * (bs * n), [-1] * (bs * n)
    reference_build_tree(flat_parents, flat_selected, seq_lens, exp_mask, exp_pos, exp_rindex,
                         exp_ntoken, exp_nsib, topk, depth, n, mode)

    if mode == 2:
        dtype = torch.int32 if n > 16 else (torch.int16 if n > 8 else torch.uint8)
        tree_mask = torch.tensor(initial_mask, dtype=torch.uint8).view(dtype)
    else:
        tree_mask = torch.full((mask_len,), True, dtype=torch.bool)
    positions = torch.full((bs * n,), -9, dtype=torch.int64)
    links = torch.full((3, bs, n), -1, dtype=torch.int64)
    sgl_kernel.build_tree_kernel_efficient_cpu(
        torch.tensor(parent_list, dtype=torch.int64).view(bs, -1),
        torch.tensor(selected, dtype=torch.int64).view(bs, n - 1),
        torch.tensor(seq_lens, dtype=torch.int64), tree_mask, positions,
        links[0], links[1], links[2], topk, depth, n, mode,
    )
    got_mask = tree_mask.view(torch.uint8).tolist() if mode == 2 else tree_mask.tolist()
    assert got_mask == exp_mask
    assert positions.tolist() == exp_pos
    assert links[0].view(-1).tolist() == exp_rindex
    assert links[1].view(-1).tolist() == exp_ntoken
    assert links[2].view(-1).tolist() == exp_nsib


def test_build_tree_full_mask_keeps_prefix_columns() -> None:
    # One request, seq_len 2, chain root -> a -> b (topk 1): rows are [prefix(2) | draft(3)].
    tree_mask = torch.full((3 * 5,), True)
    positions = torch.empty(3, dtype=torch.int64)
    links = torch.full((3, 1, 3), -1, dtype=torch.int64)
    sgl_kernel.build_tree_kernel_efficient_cpu(
        torch.tensor([[-1, 0]]), torch.tensor([[0, 1]]), torch.tensor([2]), tree_mask, positions,
        links[0], links[1], links[2], 1, 2, 3, 0,
    )
    assert tree_mask.view(3, 5).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert positions.tolist() == [2, 3, 4]
    assert links[1].tolist() == [[1, 2, -1]]


# ---------------------------------------------------------------------------- seeded-sampling hash


def reference_murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32, written from the published algorithm."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & mask  # noqa: E731
    h = seed
    blocks = len(data) // 4
    for i in range(blocks):
        (k,) = struct.unpack_from("<I", data, i * 4)
        k = rotl((k * c1) & mask, 15) * c2 & mask
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    tail = data[blocks * 4 :]
    k = 0
    for i, byte in enumerate(tail):
        k |= byte << (8 * i)
    if tail:
        k = rotl((k * c1) & mask, 15) * c2 & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def test_reference_murmur3_known_vectors() -> None:
    assert reference_murmur3_32(b"", 0) == 0
    assert reference_murmur3_32(b"", 1) == 0x514E28B7
    assert reference_murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747B28C) == 0x2FA826CD


@pytest.mark.parametrize("seed", SEEDS)
def test_murmur_hash32_cpu_matches_reference(seed: int) -> None:
    rng, _ = make_rng(seed)
    n, m = rng.randint(1, 4), rng.randint(1, 9)
    seeds = [rng.getrandbits(64) for _ in range(n - 1)] + [2**64 - 1]
    positions = [rng.randint(0, 2**33) for _ in range(n)]  # above 2**32: low word only
    cols = [rng.randint(0, 200_000) for _ in range(m)]
    got = torch.ops.sgl_kernel.murmur_hash32_cpu.default(
        torch.tensor(seeds, dtype=torch.uint64), torch.tensor(positions), torch.tensor(cols)
    )
    assert got.dtype == torch.uint32 and got.shape == (n, m)
    for i in range(n):
        for j in range(m):
            key = struct.pack("<IIII", seeds[i] & 0xFFFFFFFF, seeds[i] >> 32, positions[i] & 0xFFFFFFFF, cols[j])
            assert int(got[i, j]) == reference_murmur3_32(key), (i, j)


# ---------------------------------------------------------------------------- through SGLang itself

SGLANG_WRAPPERS_SCRIPT = r'''
import torch
from sglang.kernels.ops.kvcache.cache_move import copy_all_layer_kv_cache_func
from sglang.kernels.ops.speculative.cache_locs import (
    assign_draft_cache_locs_contiguous_func, assign_extend_cache_locs_func,
    assign_extend_cache_locs_uniform_func, fill_front_out_cache_loc_func)
from sglang.kernels.ops.speculative.eagle import (
    fill_accept_out_cache_loc_func, fill_bonus_tokens_func)
from sglang.kernels.ops.speculative.multi_layer_eagle import rotate_input_ids
from sglang.kernels.ops.speculative.reconstruct_tree import reconstruct_indices_from_tree_mask_func
from sglang.kernels.ops.speculative.spec_tree import TreeMaskMode, verify_tree_greedy_func
from sglang.srt.mem_cache.allocation import assign_req_to_token_pool_func
from sglang.srt.speculative.eagle_utils import build_tree_kernel_efficient

r2t = torch.zeros((4, 10), dtype=torch.int32)
assign_req_to_token_pool_func(torch.tensor([2, 0]), r2t, torch.tensor([0, 3]), torch.tensor([3, 5]),
                              torch.tensor([7, 8, 9, 10, 11]), 2)
assert r2t[2, :3].tolist() == [7, 8, 9] and r2t[0, 3:5].tolist() == [10, 11]
out = assign_extend_cache_locs_func(torch.tensor([2, 0]), r2t, torch.tensor([1, 3]),
                                    torch.tensor([3, 5]), 2, 2, "cpu")
assert out.tolist() == [8, 9, 10, 11]
out = assign_extend_cache_locs_uniform_func(torch.tensor([2, 0]), r2t, torch.tensor([1, 3]), 2, 2, "cpu")
assert out.tolist() == [8, 9, 10, 11]
loc = torch.full((4,), -1, dtype=torch.int64)
assign_draft_cache_locs_contiguous_func(torch.tensor([2, 0]), r2t, torch.tensor([0, 3]), loc, 1, 2)
assert loc.tolist() == [7, 8, 10, 11]
front = torch.zeros(4, dtype=torch.int64)
fill_front_out_cache_loc_func(torch.tensor([1, 2]), torch.tensor([5, 6, 7, 8]), front)
assert front.tolist()[:3] == [5, 7, 8]
bonus = torch.empty(2, dtype=torch.int32)
fill_bonus_tokens_func(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([2, 3]), bonus, 3, 2)
assert bonus.tolist() == [2, 6]
acc = torch.zeros(4, dtype=torch.int64)
fill_accept_out_cache_loc_func(torch.tensor([[0, -1], [2, 3]]), torch.tensor([40, 41, 42, 43]), acc, 4)
assert acc.tolist() == [40, 42, 43, 0]

# topk 2, 2 steps: draft tokens 0, 1 hang off the root, token 2 off token 0.
tree_mask, positions, ri, rnt, rns, draft = build_tree_kernel_efficient(
    torch.tensor([100]), torch.tensor([[-1, 0, 1]]), torch.tensor([[0, 1, 2]]),
    torch.tensor([[11, 12, 13]]), torch.tensor([5]), 5, 2, 2, 4, TreeMaskMode.FULL_MASK)
assert positions.tolist() == [5, 6, 6, 7]
assert rnt.tolist() == [[1, 3, -1, -1]] and rns.tolist() == [[-1, 2, -1, -1]]
predicts = torch.zeros(4, dtype=torch.int32)
accept_index = torch.full((1, 3), -1, dtype=torch.int32)
accept_num = torch.zeros(1, dtype=torch.int32)
verify_tree_greedy_func(predicts, accept_index, accept_num, draft.view(1, 4), ri, rnt, rns,
                        torch.tensor([[12, 0, 13, 0]]))
assert accept_index.tolist() == [[0, 2, -1]] and accept_num.tolist() == [1]

tm = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool).view(-1)
pos = torch.empty(3, dtype=torch.int64)
idx = torch.empty((3, 1, 3), dtype=torch.int64)
reconstruct_indices_from_tree_mask_func(tm, torch.tensor([4]), pos, idx[0], idx[1], idx[2], 1, 3)
assert pos.tolist() == [4, 5, 5] and idx[1].tolist() == [[1, -1, -1]] and idx[2].tolist() == [[-1, 2, -1]]

k = torch.arange(24, dtype=torch.float32).view(6, 4)
v = k + 100
copy_all_layer_kv_cache_func(torch.tensor([k.data_ptr(), v.data_ptr()], dtype=torch.uint64),
                             torch.tensor([16, 16]), torch.tensor([5, 0, 0]), torch.tensor([1, 2, 0]),
                             2, 2, {})
assert k[5].tolist() == [4, 5, 6, 7] and k[0].tolist() == [8, 9, 10, 11] and v[5, 0] == 104

ids = torch.tensor([1, 2, 3, 4, 5])
rotate_input_ids(ids, torch.tensor([0, 3]), torch.tensor([3, 2]), torch.tensor([9, 8]))
assert ids.tolist() == [2, 3, 9, 5, 8]
print("SGLANG WRAPPERS OK")
'''


def test_sglang_cpu_wrappers_reach_these_ops() -> None:
    """SGLang's own CPU-path wrappers call these ops with its argument order and keywords."""
    repo = Path(__file__).resolve().parents[2]
    boot = repo / "sgl_consensus" / "cpu" / "_boot"
    env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", CONSENSUS_CPU="1")
    env["PYTHONPATH"] = os.pathsep.join([str(boot), str(repo), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SGLANG_WRAPPERS_SCRIPT],
        env=env, cwd=repo, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "SGLANG WRAPPERS OK" in result.stdout, result.stderr[-3000:]

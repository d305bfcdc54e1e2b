"""A torch-native attention backend that can verify draft trees (TARGET_VERIFY) on CPU.

SGLang's ``TorchNativeAttnBackend`` handles prefill and decode but not TARGET_VERIFY: there the
batch carries, per request, ``n`` draft tokens laid out as a tree after ``seq_len`` committed tokens,
and each draft token may attend to the committed prefix and to its own ancestors only. The tree
comes in ``spec_info.custom_mask``: on CPU, NGRAM-style workers pass the bare ``n x n`` ancestor mask
per request (flattened, concatenated over the batch), on GPU the full ``n x (seq_len + n)`` mask.
This backend accepts both.
"""

from __future__ import annotations

import torch
from torch.nn.functional import scaled_dot_product_attention

from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.mem_cache.memory_pool import KVWriteLoc


def verify_attention_mask(
    custom_mask: torch.Tensor, seq_lens: list[int], num_draft: int, request: int, offset: int
) -> tuple[torch.Tensor, int]:
    """The boolean ``[n, seq_len + n]`` mask of one request, and the offset of the next one.

    ``custom_mask`` is either the concatenation of per-request ``n*n`` tree masks, or of per-request
    full masks ``n*(seq_len+n)``; its total length tells which.
    """
    seq_len = seq_lens[request]
    tree_only = custom_mask.numel() == len(seq_lens) * num_draft * num_draft
    if tree_only:
        tree = custom_mask[offset : offset + num_draft * num_draft].view(num_draft, num_draft)
        prefix = torch.ones((num_draft, seq_len), dtype=torch.bool, device=tree.device)
        return torch.cat([prefix, tree.to(torch.bool)], dim=1), offset + num_draft * num_draft
    width = seq_len + num_draft
    full = custom_mask[offset : offset + num_draft * width].view(num_draft, width)
    return full.to(torch.bool), offset + num_draft * width


class TreeVerifyTorchNativeAttnBackend(TorchNativeAttnBackend):
    """``TorchNativeAttnBackend`` plus TARGET_VERIFY under a draft-tree mask."""

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        if not forward_batch.forward_mode.is_target_verify():
            return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
        if layer.is_cross_attention or layer.sliding_window_size not in (None, -1):
            raise NotImplementedError(
                "sgl-consensus' CPU tree-verify attention supports full causal self-attention only"
            )
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        return self._verify_tree(q, layer, forward_batch)

    def _verify_plan(self, forward_batch) -> tuple[list[int], list[int], list[torch.Tensor | None]]:
        """Per forward batch (shared by all layers): pool rows, sequence lengths and per-request
        attention masks (None for a root-only tree, which attends to everything, like decode)."""
        spec_info = forward_batch.spec_info
        cached = getattr(forward_batch, "_consensus_verify_plan", None)
        if cached is not None and cached[0] is spec_info.custom_mask:
            return cached[1]
        num_draft = int(spec_info.draft_token_num)
        seq_lens = forward_batch.seq_lens_cpu.tolist() if forward_batch.seq_lens_cpu is not None \
            else forward_batch.seq_lens.tolist()
        masks: list[torch.Tensor | None] = []
        offset = 0
        for i in range(len(seq_lens)):
            mask, offset = verify_attention_mask(spec_info.custom_mask, seq_lens, num_draft, i, offset)
            masks.append(None if num_draft == 1 else mask.unsqueeze(0).unsqueeze(0))
        plan = (forward_batch.req_pool_indices.tolist(), seq_lens, masks)
        forward_batch._consensus_verify_plan = (spec_info.custom_mask, plan)
        return plan

    def _verify_tree(self, q, layer, forward_batch) -> torch.Tensor:
        num_draft = int(forward_batch.spec_info.draft_token_num)
        heads, head_dim, v_dim = layer.tp_q_head_num, layer.qk_head_dim, layer.v_head_dim
        query = q.view(-1, heads, head_dim)
        out = q.new_empty((query.shape[0], heads * v_dim)).view(-1, heads, v_dim)
        k_cache = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_cache = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        req_to_token = self.req_to_token_pool.req_to_token
        pool_rows, seq_lens, masks = self._verify_plan(forward_batch)
        for i, (row, seq_len, mask) in enumerate(zip(pool_rows, seq_lens, masks)):
            slots = req_to_token[row, : seq_len + num_draft]
            keys = k_cache[slots].movedim(0, 1).to(query.dtype)  # [kv_heads, len, dim]
            values = v_cache[slots].movedim(0, 1).to(query.dtype)
            q_i = query[i * num_draft : (i + 1) * num_draft].movedim(0, 1)  # [heads, n, dim]
            o_i = scaled_dot_product_attention(
                q_i.unsqueeze(0),
                keys.unsqueeze(0),
                values.unsqueeze(0),
                attn_mask=mask,
                scale=layer.scaling,
                enable_gqa=layer.tp_q_head_num != layer.tp_k_head_num,
            )
            out[i * num_draft : (i + 1) * num_draft] = o_i.squeeze(0).movedim(0, 1)
        return out.view(-1, heads * v_dim)


def create_backend(model_runner) -> TreeVerifyTorchNativeAttnBackend:
    return TreeVerifyTorchNativeAttnBackend(model_runner)

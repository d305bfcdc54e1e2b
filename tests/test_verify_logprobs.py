"""The committed-token logprobs the worker hands the drafter: a gather over the verify logits."""

from __future__ import annotations

import math

import pytest
import torch

from sgl_consensus.adapter.verify import committed_logprobs


@pytest.mark.parametrize("seed", [0, 1])
def test_committed_logprobs_match_log_softmax_at_the_request_temperature(seed):
    gen = torch.Generator().manual_seed(seed)
    bs, width, vocab = 3, 4, 11
    logits = torch.randn(bs * width, vocab, generator=gen) * 3
    predict = torch.randint(0, vocab, (bs * width,), generator=gen, dtype=torch.int32)
    accept_index = torch.tensor([[0, 2, -1, -1], [4, -1, -1, -1], [8, 9, 10, 11]], dtype=torch.int32)
    temperatures = torch.tensor([[0.7], [1.0], [1.3]])
    got = committed_logprobs(logits, predict, accept_index, temperatures)
    assert got.shape == accept_index.shape
    for b in range(bs):
        for j in range(width):
            node = int(accept_index[b, j])
            if node < 0:
                assert math.isnan(got[b, j]), (b, j)
                continue
            expected = torch.log_softmax(logits[node] / temperatures[b, 0], dim=-1)[int(predict[node])]
            assert got[b, j].item() == pytest.approx(expected.item(), abs=1e-5), (b, j)


def test_committed_logprobs_handle_bf16_logits_and_an_all_empty_batch():
    logits = torch.randn(4, 7).bfloat16()
    predict = torch.zeros(4, dtype=torch.int32)
    accept_index = torch.full((2, 2), -1, dtype=torch.int32)
    got = committed_logprobs(logits, predict, accept_index, torch.ones(2, 1))
    assert got.dtype == torch.float32 and bool(torch.isnan(got).all())

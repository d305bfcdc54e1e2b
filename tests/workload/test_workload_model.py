"""The committed tiny reasoner: tokenizer behaviour, config consistency, loads and answers in format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgl_consensus.workload.problems import format_prompt, generate_problem

MODEL_DIR = Path(__file__).resolve().parents[2] / "sgl_consensus" / "assets" / "tiny-reasoner"


@pytest.fixture(scope="module")
def tokenizer():
    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))


@pytest.fixture(scope="module")
def model():
    import torch

    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()
    from transformers import AutoModelForCausalLM

    # tiny matmuls: extra threads only add sync overhead, and are many times slower on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForCausalLM.from_pretrained(str(MODEL_DIR)).eval()
    torch.set_num_threads(threads)


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("He has 1234 apples and 56 pens.")
    assert [t for t in tokens if any(ch.isdigit() for ch in t)] == ["1", "2", "3", "4", "5", "6"]
    for token in tokenizer.get_vocab():
        assert not any(ch.isdigit() for ch in token) or len(token) == 1, token


def test_round_trip(tokenizer):
    for seed in range(50):
        p = generate_problem(seed)
        text = format_prompt(p.question) + p.solution
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    odd = "Ünïcode ✓ and tabs\tand 3.14 #### -7"
    assert tokenizer.decode(tokenizer(odd).input_ids) == odd


def test_config_matches_tokenizer(tokenizer):
    config = json.loads((MODEL_DIR / "config.json").read_text())
    generation = json.loads((MODEL_DIR / "generation_config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == len(tokenizer)
    assert config["eos_token_id"] == tokenizer.eos_token_id == generation["eos_token_id"]
    assert config["pad_token_id"] == tokenizer.pad_token_id
    assert tokenizer.eos_token_id not in tokenizer(format_prompt("Q?")).input_ids


def test_model_folder_is_small():
    total = sum(f.stat().st_size for f in MODEL_DIR.iterdir() if f.is_file())
    assert total <= 20 * 1024 * 1024


def test_model_loads_and_answers_in_format(model, tokenizer):
    import torch

    from sgl_consensus.workload.checker import extract_answer

    assert 3_000_000 <= sum(p.numel() for p in model.parameters()) <= 6_000_000
    prompts = [format_prompt(generate_problem(2_000_000_000 + i).question) for i in range(4)]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=320, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert sum(extract_answer(t) is not None for t in texts) >= 3

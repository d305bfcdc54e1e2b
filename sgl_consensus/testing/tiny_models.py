"""Build tiny random Llama / Qwen2 checkpoints with a locally trained tokenizer.

Tests need SGLang to load *real* Hugging Face checkpoints, but nothing may be downloaded here. These
builders train a small byte-level BPE tokenizer on generated text and save a randomly initialised
model in Hugging Face format. Outputs are deterministic for a given seed, and cached on disk by a key
of their settings so a test session builds each model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

_WORDS = (
    "the a one two three four five six seven eight nine ten apples books coins cats each "
    "has gives buys sells more less than total so then we add subtract multiply divide "
    "answer is step first next finally how many does have left after"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    arch: str = "llama"  # "llama" or "qwen2"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    dtype: str = "float32"
    seed: int = 0
    # Weight init scale: larger values give peakier next-token distributions (more structure for
    # sampling tests than the near-uniform default init).
    initializer_range: float = 0.02

    def cache_key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.arch}-{hashlib.sha256(blob).hexdigest()[:12]}"


def default_cache_dir() -> Path:
    root = os.environ.get("CONSENSUS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "sgl-consensus"
    )
    return Path(root) / "tiny-models"


def _training_corpus(seed: int, lines: int = 2000) -> list[str]:
    import random

    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        numbers = [str(rng.randint(0, 999)) for _ in range(rng.randint(0, 3))]
        corpus.append(" ".join(words + numbers) + ".")
    return corpus


def train_tokenizer(vocab_size: int, seed: int, out_dir: Path) -> "object":
    """Train a byte-level BPE tokenizer and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(out_dir)
    return fast


def _model_config(spec: TinyModelSpec, vocab_size: int, tokenizer) -> "object":
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=spec.initializer_range,
        dtype=spec.dtype,
    )
    if spec.arch == "llama":
        return LlamaConfig(**common)
    if spec.arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"TinyModelSpec.arch must be 'llama' or 'qwen2', got {spec.arch!r}")


def device_spec(**fields) -> TinyModelSpec:
    """A TinyModelSpec with the shapes this device's attention serves (see ``testing.devices``)."""
    from sgl_consensus.testing.devices import tiny_model_overrides

    return TinyModelSpec(**{**tiny_model_overrides(), **fields})


def build_tiny_model(spec: TinyModelSpec = TinyModelSpec(), cache_dir: Path | None = None) -> Path:
    """Return the folder of a tiny checkpoint for ``spec``, building it on first use."""
    out = (cache_dir or default_cache_dir()) / spec.cache_key()
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()
    import torch
    from transformers import AutoModelForCausalLM

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size, spec.seed, tmp)
    config = _model_config(spec, len(tokenizer), tokenizer)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, spec.dtype))
    model.save_pretrained(tmp, safe_serialization=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out

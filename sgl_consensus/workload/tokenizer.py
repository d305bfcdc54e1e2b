"""Byte-level BPE tokenizer for the workload, with every digit a token of its own.

Digits are split before BPE runs, so numbers are spelled digit by digit (a tiny model can then learn
column arithmetic instead of a separate embedding per number). The tokenizer is trained on generated
problems only and saved as a Hugging Face ``PreTrainedTokenizerFast`` (``tokenizer.json`` +
``tokenizer_config.json``) so that ``AutoTokenizer.from_pretrained`` and SGLang can load it.

Run ``python -m sgl_consensus.workload.tokenizer OUT_DIR`` to (re)build it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sgl_consensus.workload.problems import format_prompt, generate_problem

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]  # ids 0, 1, 2
DEFAULT_VOCAB_SIZE = 1024
TOKENIZER_TRAIN_SEEDS = range(10_000_000, 10_020_000)  # disjoint from training and evaluation seeds


def problem_texts(seeds: range) -> Iterator[str]:
    for seed in seeds:
        problem = generate_problem(seed)
        yield format_prompt(problem.question) + problem.solution


def build_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE, seeds: range = TOKENIZER_TRAIN_SEEDS) -> Tokenizer:
    """Train a byte-level BPE on generated problems; digits never merge."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(problem_texts(seeds), trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Save in the Hugging Face layout (loads with ``AutoTokenizer.from_pretrained``)."""
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        padding_side="left",  # generation pads on the left
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out_dir))
    portable_tokenizer_class(out_dir)


def portable_tokenizer_class(out_dir: Path) -> None:
    """Name the class every transformers version knows (v5 writes ``TokenizersBackend``, unknown to v4)."""
    import json

    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def load_tokenizer(path: Path | str):
    """The saved tokenizer as a transformers tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def main() -> None:
    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--model-max-length", type=int, default=512)
    args = parser.parse_args()
    save_tokenizer(build_tokenizer(args.vocab_size), args.out_dir, args.model_max_length)


if __name__ == "__main__":
    main()

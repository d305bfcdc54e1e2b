"""Train the tiny Llama reasoner on generated problems (CPU, one thread, resumable, seeded).

Each training example is ``format_prompt(question) + solution + <eos>``; the loss covers the solution
and the EOS only (the question's random numbers cannot be predicted). Problems are drawn from seeds
``train_seed_start, train_seed_start + 1, ...`` in order, so a resumed run sees the same data.

The learning rate follows a linear warm-up and a cosine decay over ``progress``, the larger of
(tokens seen / ``--max-tokens``) and (training seconds / ``--time-budget-min``): on a shared machine
the throughput is unknown in advance, and this ends the schedule on whichever budget runs out first.
A resumable state (weights, optimizer, data position, clock) goes to ``--state-path``, and the Hugging
Face model (safetensors) plus tokenizer to ``--out-dir``, every ``--checkpoint-every-min`` minutes.

Example::

    python -m sgl_consensus.workload.train --out-dir sgl_consensus/assets/tiny-reasoner --time-budget-min 50
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sgl_consensus.cpu import torchvision_fix

torchvision_fix.apply()

import torch  # noqa: E402

from sgl_consensus.workload.problems import format_prompt, generate_problem  # noqa: E402
from sgl_consensus.workload.tokenizer import (  # noqa: E402
    build_tokenizer, load_tokenizer, portable_tokenizer_class, save_tokenizer)

DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner"
TRAIN_SEED_START = 0  # evaluation uses seeds >= 1_000_000_000 (see evaluate.py)
IGNORE_INDEX = -100


@dataclass
class TrainState:
    """Everything needed to resume exactly where a run stopped."""

    step: int = 0
    next_seed: int = TRAIN_SEED_START
    tokens_seen: int = 0  # non-pad input tokens
    supervised_tokens: int = 0  # tokens that carried loss
    train_seconds: float = 0.0
    loss_log: list = field(default_factory=list)  # [step, tokens_seen, seconds, mean loss since last entry]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--state-path", type=Path, default=Path("/tmp/tiny-reasoner-train-state.pt"))
    parser.add_argument("--resume", action="store_true", help="continue from --state-path if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights init and batch order")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--max-tokens", type=int, default=12_000_000)
    parser.add_argument("--time-budget-min", type=float, default=50.0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    parser.add_argument("--checkpoint-every-min", type=float, default=10.0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for matmuls (weights stay fp32)")
    return parser.parse_args(argv)


def ensure_tokenizer(out_dir: Path, max_seq_len: int):
    """Build and save the tokenizer once; later runs reuse the saved one (ids must never change)."""
    if not (out_dir / "tokenizer.json").exists():
        save_tokenizer(build_tokenizer(), out_dir, max_seq_len)
    return load_tokenizer(out_dir)


def build_model(args: argparse.Namespace, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.max_seq_len,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,  # saves vocab x hidden parameters
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


def encode_example(tokenizer, seed: int, max_seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (prompt masked) for the problem with this seed."""
    problem = generate_problem(seed)
    prompt_ids = tokenizer(format_prompt(problem.question)).input_ids
    solution_ids = tokenizer(problem.solution).input_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + solution_ids)[:max_seq_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + solution_ids)[:max_seq_len]
    return ids, labels


def make_batches(tokenizer, state: TrainState, args: argparse.Namespace, n_batches: int) -> list[list]:
    """The next ``n_batches`` batches: examples sorted by length within the chunk to cut padding."""
    count = n_batches * args.batch_size
    examples = [encode_example(tokenizer, seed, args.max_seq_len)
                for seed in range(state.next_seed, state.next_seed + count)]
    state.next_seed += count
    examples.sort(key=lambda e: len(e[0]))
    batches = [examples[i:i + args.batch_size] for i in range(0, count, args.batch_size)]
    random.Random(args.seed * 1_000_003 + state.step).shuffle(batches)
    return batches


def collate(batch: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad: with causal attention the pads never influence real tokens, so no mask is needed."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
    return input_ids, labels


def progress(state: TrainState, args: argparse.Namespace) -> float:
    return max(state.tokens_seen / args.max_tokens, state.train_seconds / (60.0 * args.time_budget_min))


def learning_rate(state: TrainState, args: argparse.Namespace) -> float:
    if state.step < args.warmup_steps:
        return args.lr * (state.step + 1) / args.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress(state, args))))
    return args.lr * (args.min_lr_ratio + (1.0 - args.min_lr_ratio) * cosine)


def make_optimizer(model, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms (1-D parameters)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model, optimizer, input_ids: torch.Tensor, labels: torch.Tensor, lr: float, bf16: bool) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def save_state(path: Path, model, optimizer, state: TrainState) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": asdict(state)}, tmp)
    tmp.replace(path)  # atomic: a kill mid-save never corrupts the last good state


def load_state(path: Path, model, optimizer) -> TrainState:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return TrainState(**saved["state"])


def export_model(model, tokenizer, out_dir: Path, state: TrainState, args: argparse.Namespace) -> None:
    """Hugging Face layout (safetensors, fp32) plus a generation config and a training summary."""
    from transformers import GenerationConfig

    model.save_pretrained(str(out_dir), safe_serialization=True)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.7, top_p=1.0,
        max_new_tokens=320,
    ).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    portable_tokenizer_class(out_dir)
    summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "state": {k: v for k, v in asdict(state).items()}}
    (out_dir / "training_state.json").write_text(json.dumps(summary, indent=1))


def log_line(state: TrainState, loss: float, lr: float, window_tokens: int, window_seconds: float) -> str:
    return (f"step {state.step} tokens {state.tokens_seen / 1e6:.3f}M time {state.train_seconds / 60:.1f}m "
            f"loss {loss:.4f} lr {lr:.2e} tok/s {window_tokens / max(window_seconds, 1e-9):.0f}")


def train(args: argparse.Namespace) -> TrainState:
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = ensure_tokenizer(args.out_dir, args.max_seq_len)
    model = build_model(args, tokenizer)
    optimizer = make_optimizer(model, args)
    state = TrainState()
    if args.resume and args.state_path.exists():
        state = load_state(args.state_path, model, optimizer)
        print(f"resumed at step {state.step}, {state.tokens_seen} tokens", flush=True)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
    model.train()
    last_checkpoint = state.train_seconds
    window_loss, window_steps, window_tokens, window_seconds = 0.0, 0, 0, 0.0
    batches: list = []
    while progress(state, args) < 1.0 and not (args.max_steps and state.step >= args.max_steps):
        if not batches:
            batches = make_batches(tokenizer, state, args, n_batches=16)
        input_ids, labels = collate(batches.pop(), tokenizer.pad_token_id)
        started = time.perf_counter()
        lr = learning_rate(state, args)
        loss = train_step(model, optimizer, input_ids, labels, lr, args.bf16)
        elapsed = time.perf_counter() - started
        n_tokens = int((input_ids != tokenizer.pad_token_id).sum())
        state.step += 1
        state.tokens_seen += n_tokens
        state.supervised_tokens += int((labels != IGNORE_INDEX).sum())
        state.train_seconds += elapsed
        window_loss, window_steps = window_loss + loss, window_steps + 1
        window_tokens, window_seconds = window_tokens + n_tokens, window_seconds + elapsed
        if state.step % args.log_every == 0:
            mean_loss = window_loss / window_steps
            state.loss_log.append([state.step, state.tokens_seen, round(state.train_seconds, 1), round(mean_loss, 4)])
            print(log_line(state, mean_loss, lr, window_tokens, window_seconds), flush=True)
            window_loss, window_steps, window_tokens, window_seconds = 0.0, 0, 0, 0.0
        if state.train_seconds - last_checkpoint >= 60.0 * args.checkpoint_every_min:
            checkpoint(model, optimizer, tokenizer, state, args)
            last_checkpoint = state.train_seconds
    # batches drawn but not trained on are skipped on resume; next_seed already moved past them
    checkpoint(model, optimizer, tokenizer, state, args)
    return state


def checkpoint(model, optimizer, tokenizer, state: TrainState, args: argparse.Namespace) -> None:
    save_state(args.state_path, model, optimizer, state)
    export_model(model, tokenizer, args.out_dir, state, args)
    print(f"checkpoint at step {state.step}", flush=True)


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()

"""Evaluate the tiny reasoner on held-out problems with plain transformers (CPU, KV cache, batched).

Measures greedy accuracy, single-sample accuracy and 8-path majority-vote accuracy at T = 0.7, the
mean output length, and how much sibling samples of one prompt share: the fraction of a sample's
token 4-grams that also occur in at least one sibling (what sibling drafting can exploit), plus the
fraction of samples whose text is an exact duplicate of a sibling (too high means no diversity).

Held-out problems use seeds from ``EVAL_SEED_START`` up; training uses seeds from 0 and never gets
anywhere near it. With ``--report`` the numbers, together with the training summary saved next to
the model (``training_state.json``), are written to ``training_report.json``.

Example::

    python -m sgl_consensus.workload.evaluate --problems 200 --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from sgl_consensus.cpu import torchvision_fix

torchvision_fix.apply()

import torch  # noqa: E402

from sgl_consensus.workload.checker import extract_answer, majority_answer  # noqa: E402
from sgl_consensus.workload.problems import Problem, format_prompt, generate_problem  # noqa: E402

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner"
EVAL_SEED_START = 1_000_000_000
NGRAM = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--paths", type=int, default=8, help="samples per problem for the majority vote")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--batch-problems", type=int, default=8, help="problems per sampling batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="write training_report.json in --model-dir")
    parser.add_argument("--train-command", default="", help="the exact training command, for the report")
    parser.add_argument("--train-wall-minutes", type=float, default=None, help="wall clock of training, for the report")
    return parser.parse_args(argv)


def load(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model, tokenizer


def generate(model, tokenizer, prompts: list[str], n: int, temperature: float | None, max_new_tokens: int) -> list[list[int]]:
    """Output token ids (cut after EOS) for each prompt x n samples; greedy when temperature is None."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sampling)
    completions = out[:, batch["input_ids"].shape[1]:].tolist()
    return [cut_after_eos(ids, tokenizer.eos_token_id, tokenizer.pad_token_id) for ids in completions]


def cut_after_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Keep tokens up to and including the first EOS (what an engine would return)."""
    if eos_id in ids:
        return ids[:ids.index(eos_id) + 1]
    return [t for t in ids if t != pad_id]


def ngrams(ids: list[int], n: int = NGRAM) -> list[tuple[int, ...]]:
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def sibling_overlap(group: list[list[int]]) -> float:
    """Mean over samples of the fraction of their n-grams that occur in at least one sibling."""
    fractions = []
    for index, ids in enumerate(group):
        own = ngrams(ids)
        if not own:
            continue
        siblings = set().union(*(ngrams(other) for j, other in enumerate(group) if j != index))
        fractions.append(sum(g in siblings for g in own) / len(own))
    return statistics.mean(fractions) if fractions else 0.0


def duplicate_fraction(texts: list[str]) -> float:
    """Fraction of samples whose text equals some sibling's text."""
    counts = Counter(texts)
    return sum(counts[t] > 1 for t in texts) / len(texts)


def evaluate_greedy(model, tokenizer, problems: list[Problem], args: argparse.Namespace) -> dict:
    correct = 0
    for start in range(0, len(problems), 32):
        chunk = problems[start:start + 32]
        outputs = generate(model, tokenizer, [format_prompt(p.question) for p in chunk], 1, None, args.max_new_tokens)
        correct += sum(extract_answer(tokenizer.decode(ids, skip_special_tokens=True)) == p.answer
                       for ids, p in zip(outputs, chunk))
    return {"greedy_accuracy": correct / len(problems)}


def evaluate_sampled(model, tokenizer, problems: list[Problem], args: argparse.Namespace) -> dict:
    single, majority, lengths, overlaps, duplicates, agreement, no_answer = [], [], [], [], [], [], []
    by_steps: dict[int, list[tuple[float, bool]]] = {}
    by_family: dict[str, list[tuple[float, bool]]] = {}
    for start in range(0, len(problems), args.batch_problems):
        chunk = problems[start:start + args.batch_problems]
        outputs = generate(model, tokenizer, [format_prompt(p.question) for p in chunk], args.paths,
                           args.temperature, args.max_new_tokens)
        for k, problem in enumerate(chunk):
            group = outputs[k * args.paths:(k + 1) * args.paths]
            texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in group]
            answers = [extract_answer(t) for t in texts]
            voted = majority_answer(texts)
            single_acc = statistics.mean(a == problem.answer for a in answers)
            single.append(single_acc)
            majority.append(voted == problem.answer)
            by_steps.setdefault(problem.n_steps, []).append((single_acc, voted == problem.answer))
            by_family.setdefault(problem.family, []).append((single_acc, voted == problem.answer))
            agreement.append(statistics.mean(a == voted for a in answers) if voted is not None else 0.0)
            no_answer.append(statistics.mean(a is None for a in answers))
            lengths.extend(len(ids) for ids in group)
            overlaps.append(sibling_overlap(group))
            duplicates.append(duplicate_fraction(texts))
    return {
        "single_sample_accuracy": statistics.mean(single),
        f"majority_at_{args.paths}_accuracy": statistics.mean(majority),
        "mean_output_tokens": statistics.mean(lengths),
        "min_output_tokens": min(lengths),
        "max_output_tokens": max(lengths),
        f"sibling_{NGRAM}gram_overlap": statistics.mean(overlaps),
        "exact_duplicate_sample_fraction": statistics.mean(duplicates),
        "agreement_with_majority": statistics.mean(agreement),
        "no_answer_fraction": statistics.mean(no_answer),
        "by_n_steps": breakdown({str(k): v for k, v in sorted(by_steps.items())}),
        "by_family": breakdown(dict(sorted(by_family.items()))),
    }


def breakdown(groups: dict[str, list[tuple[float, bool]]]) -> dict:
    """Single-sample and majority accuracy per group."""
    return {key: {"problems": len(v), "single": round(statistics.mean(x[0] for x in v), 4),
                  "majority": round(statistics.mean(x[1] for x in v), 4)} for key, v in groups.items()}


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = load(args.model_dir)
    problems = [generate_problem(EVAL_SEED_START + i) for i in range(args.problems)]
    started = time.perf_counter()
    metrics = {"problems": args.problems, "eval_seed_start": EVAL_SEED_START, "temperature": args.temperature,
               "paths": args.paths}
    metrics.update(evaluate_greedy(model, tokenizer, problems, args))
    metrics.update(evaluate_sampled(model, tokenizer, problems, args))
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def loss_curve_summary(loss_log: list) -> list[dict]:
    """About ten evenly spaced points of [step, tokens, seconds, loss], always including the last."""
    if not loss_log:
        return []
    stride = max(1, len(loss_log) // 10)
    points = loss_log[::stride] + ([loss_log[-1]] if (len(loss_log) - 1) % stride else [])
    return [{"step": s, "tokens": t, "train_seconds": sec, "loss": loss} for s, t, sec, loss in points]


def build_report(metrics: dict, args: argparse.Namespace) -> dict:
    from transformers import AutoConfig

    training = json.loads((args.model_dir / "training_state.json").read_text())
    state = training["state"]
    config = AutoConfig.from_pretrained(str(args.model_dir))
    return {
        "model": {"architecture": "LlamaForCausalLM", "hidden_size": config.hidden_size,
                  "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
                  "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
                  "tie_word_embeddings": config.tie_word_embeddings},
        "training": {
            "command": args.train_command,
            "args": training["args"],
            "steps": state["step"],
            "tokens_seen": state["tokens_seen"],
            "supervised_tokens": state["supervised_tokens"],
            "problems_seen": state["next_seed"],
            "train_step_seconds": state["train_seconds"],
            "wall_minutes": args.train_wall_minutes,
            "final_loss": state["loss_log"][-1][3] if state["loss_log"] else None,
            "loss_curve": loss_curve_summary(state["loss_log"]),
        },
        "evaluation": metrics,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    metrics = evaluate(args)
    print(json.dumps(metrics, indent=1), flush=True)
    if args.report:
        report = build_report(metrics, args)
        (args.model_dir / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

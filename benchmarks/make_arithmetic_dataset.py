"""One-step arithmetic questions as a GSM8K-format dataset file (``--dataset`` of the demo and benchmarks).

The synthetic task's multi-step problems are beyond SmolLM2-135M (about 4 % single-path accuracy), so
its votes scatter and nothing can stop early; these one-step questions ("What is 47 + 38?") are within
its reach, so its votes can agree, which is what early stopping needs. Seeded, so the file is the same
on every machine.

    .venv/bin/python benchmarks/make_arithmetic_dataset.py /tmp/arithmetic.jsonl --problems 200
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sgl_consensus.workload.datasets import write_jsonl  # noqa: E402


def arithmetic_problems(count: int, seed: int) -> list[tuple[str, str, int]]:
    """(question, worked solution, answer) triples: one addition, subtraction or multiplication."""
    rng = random.Random(f"sgl-consensus-arithmetic-{seed}")
    problems = []
    for _ in range(count):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            answer = a * b
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if op == "-" and b > a:
                a, b = b, a
            answer = a + b if op == "+" else a - b
        symbol = {"+": "+", "-": "-", "*": "x"}[op]
        problems.append((f"What is {a} {symbol} {b}?", f"{a} {symbol} {b} = {answer}", answer))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    if ns.problems < 1:
        parser.error(f"--problems must be >= 1, got {ns.problems}")
    try:
        count = write_jsonl(ns.path, arithmetic_problems(ns.problems, ns.seed))
    except OSError as exc:
        parser.error(f"{ns.path}: {exc.strerror or exc}")
    print(f"wrote {count} arithmetic questions to {ns.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Best-of-N with s.fork(n): N sampled solutions, the best one chosen by a ranking rule.

Rules: ``logprob`` ranks by the model's own mean token log-probability of the solution (returned
by the server); ``shortest`` prefers the shortest solution that has a well-formed final answer.
All branches of the fork are tagged, so the consensus worker drafts them from each other.

    python programs/best_of_n.py --cpu --n 8 --rule logprob
"""

from __future__ import annotations

import argparse
import json

from _common import add_backend_arguments, add_workload_arguments, held_out_problems, parse_and_check, run_program


def program():
    """The SGLang program (imported here, after the arguments are checked: importing SGLang takes
    seconds, a usage error should not)."""
    import sglang as sgl

    @sgl.function
    def sample_candidates(s, prompt: str, n: int, max_tokens: int, temperature: float):
        s += prompt
        branches = s.fork(n)
        branches += sgl.gen("solution", max_tokens=max_tokens, temperature=temperature, return_logprob=True)
        branches.join()
        s.set_var("candidates", [(b["solution"], b.get_meta_info("solution")) for b in branches])

    return sample_candidates


def mean_logprob(meta: dict) -> float:
    logprobs = [entry[0] for entry in (meta.get("output_token_logprobs") or []) if entry[0] is not None]
    return sum(logprobs) / len(logprobs) if logprobs else float("-inf")


def rank(candidates: list[tuple[str, dict]], rule: str) -> int:
    from sgl_consensus.workload.checker import extract_answer

    if rule == "logprob":
        scores = [mean_logprob(meta) for _, meta in candidates]
    else:  # shortest well-formed
        scores = [(-len(text) if extract_answer(text) is not None else float("-inf")) for text, _ in candidates]
    return max(range(len(candidates)), key=scores.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser)
    add_workload_arguments(parser, temperature=1.0)
    parser.add_argument("--rule", choices=["logprob", "shortest"], default="logprob")
    ns = parse_and_check(parser)

    from sgl_consensus.workload.checker import extract_answer
    from sgl_consensus.workload.problems import format_prompt

    problems = held_out_problems(ns)
    arguments = [dict(prompt=format_prompt(p.question), n=ns.n, max_tokens=ns.max_tokens,
                      temperature=ns.temperature) for p in problems]
    states, wall = run_program(ns, program, arguments)
    rows = []
    for problem, state in zip(problems, states):
        candidates = state["candidates"]
        best = rank(candidates, ns.rule)
        answer = extract_answer(candidates[best][0])
        rows.append({"seed": problem.seed, "answer": problem.answer, "chosen": answer,
                     "correct": answer == problem.answer, "chosen_index": best,
                     "any_correct": any(extract_answer(t) == problem.answer for t, _ in candidates)})
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    oracle = sum(r["any_correct"] for r in rows) / len(rows)
    if ns.json:
        print(json.dumps({"rule": ns.rule, "accuracy": accuracy, "oracle": oracle, "wall_s": wall, "problems": rows}, indent=2))
        return
    for r in rows:
        print(f"problem {r['seed']}: truth {r['answer']}, best-of-{ns.n} answer {r['chosen']} "
              f"({'right' if r['correct'] else 'wrong'})")
    print(f"best-of-{ns.n} ({ns.rule}) accuracy {accuracy:.2f}; oracle (any path right) {oracle:.2f}; {wall:.1f} s")


if __name__ == "__main__":
    main()

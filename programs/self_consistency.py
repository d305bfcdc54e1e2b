#!/usr/bin/env python
"""Self-consistency with s.fork(n): N sampled solutions per problem, majority vote over their answers.

Every branch of one fork is tagged (ConsensusRuntimeEndpoint), so the consensus worker drafts each
branch's tokens from its siblings. Problems are held-out synthetic math word problems; answers are
read from the final "#### <answer>" line.

    python programs/self_consistency.py --cpu --problems 4 --n 8
    python programs/self_consistency.py --url http://127.0.0.1:30000 --n 16 --temperature 0.7
"""

from __future__ import annotations

import argparse
import json

from _common import add_backend_arguments, add_workload_arguments, held_out_problems, parse_and_check, run_program

import sglang as sgl  # noqa: E402  (after _common put the repo on sys.path)


@sgl.function
def solve_with_votes(s, prompt: str, n: int, max_tokens: int, temperature: float, top_p: float):
    s += prompt
    branches = s.fork(n)
    branches += sgl.gen("solution", max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    branches.join()
    s.set_var("solutions", [b["solution"] for b in branches])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser)
    add_workload_arguments(parser, temperature=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    ns = parse_and_check(parser)

    from sgl_consensus.workload.checker import extract_answer, majority_answer
    from sgl_consensus.workload.problems import format_prompt

    problems = held_out_problems(ns)
    arguments = [dict(prompt=format_prompt(p.question), n=ns.n, max_tokens=ns.max_tokens,
                      temperature=ns.temperature, top_p=ns.top_p) for p in problems]
    states, wall = run_program(ns, solve_with_votes, arguments)
    rows = []
    for problem, state in zip(problems, states):
        solutions = state["solutions"]
        answers = [extract_answer(t) for t in solutions]
        vote = majority_answer(solutions)
        rows.append({"seed": problem.seed, "answer": problem.answer, "vote": vote, "votes": answers,
                     "correct": vote == problem.answer,
                     "single_accuracy": sum(a == problem.answer for a in answers) / len(answers)})
    summary = {"problems": len(rows), "n": ns.n, "wall_s": wall,
               "majority_accuracy": sum(r["correct"] for r in rows) / len(rows),
               "single_accuracy": sum(r["single_accuracy"] for r in rows) / len(rows)}
    if ns.json:
        print(json.dumps({"summary": summary, "problems": rows}, indent=2))
        return
    for r in rows:
        print(f"problem {r['seed']}: truth {r['answer']}, vote {r['vote']} "
              f"({'right' if r['correct'] else 'wrong'}), votes {r['votes']}")
    print(f"majority accuracy {summary['majority_accuracy']:.2f}, single-path accuracy "
          f"{summary['single_accuracy']:.2f}, {wall:.1f} s")


if __name__ == "__main__":
    main()

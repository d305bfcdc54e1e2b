#!/usr/bin/env python
"""Self-consistency with s.fork(n): N sampled solutions per problem, majority vote over their answers.

Every branch of one fork is tagged (ConsensusRuntimeEndpoint), so the consensus worker drafts each
branch's tokens from its siblings. Problems are held-out synthetic math word problems; answers are
read from the final "#### <answer>" line.

With ``--early-stop RULE`` (``decided``, ``esc:W``, ``beta:LEVEL``: ``sgl_consensus.early_stop``)
each fork is a vote that ends once the rule fires: the fork's running branches are aborted on the
server, and the result lists only the branches that voted. ``--in-flight K`` sends each fork's
branches K at a time, so a decided vote never sends the rest (where the savings come from).

    python programs/self_consistency.py --cpu --problems 4 --n 8
    python programs/self_consistency.py --url http://127.0.0.1:30000 --n 16 --temperature 0.7
    python programs/self_consistency.py --cpu --n 16 --early-stop esc:2 --in-flight 2
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
    def solve_with_votes(s, prompt: str, n: int, max_tokens: int, temperature: float, top_p: float):
        s += prompt
        branches = s.fork(n)
        branches += sgl.gen("solution", max_tokens=max_tokens, temperature=temperature, top_p=top_p)
        branches.join()
        s.set_var("solutions", [b["solution"] for b in branches])
        s.set_var("voted", [b.get_meta_info("solution").get("consensus_vote", {"voted": True}).get("voted", True)
                            for b in branches])

    return solve_with_votes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_arguments(parser)
    add_workload_arguments(parser, temperature=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--early-stop", default=None, metavar="RULE",
                        help="end each vote early: decided, esc:W or beta:LEVEL (sgl_consensus.early_stop)")
    parser.add_argument("--in-flight", type=int, default=None, metavar="K",
                        help="with --early-stop: each fork's branches run K at a time (default: all at once)")
    ns = parse_and_check(parser)
    if ns.in_flight is not None and (ns.early_stop is None or ns.in_flight < 1):
        parser.error(f"--in-flight needs --early-stop and a value >= 1, got {ns.in_flight}")
    if ns.early_stop is not None:
        from sgl_consensus.early_stop import EarlyStopError, parse_rule

        try:
            parse_rule(ns.early_stop)
        except EarlyStopError as exc:
            parser.error(str(exc))
        if ns.plain_endpoint:
            parser.error("--early-stop needs the consensus endpoint (drop --plain-endpoint)")

    from sgl_consensus.workload.checker import extract_answer, majority_answer
    from sgl_consensus.workload.problems import format_prompt

    ns.extract = extract_answer  # the tiny reasoner's "#### N" line, also for the early-stop vote

    problems = held_out_problems(ns)
    arguments = [dict(prompt=format_prompt(p.question), n=ns.n, max_tokens=ns.max_tokens,
                      temperature=ns.temperature, top_p=ns.top_p) for p in problems]
    states, wall = run_program(ns, program, arguments)
    rows = []
    for problem, state in zip(problems, states):
        solutions = [t for t, voted in zip(state["solutions"], state["voted"]) if voted]
        answers = [extract_answer(t) for t in solutions]
        vote = majority_answer(solutions)
        rows.append({"seed": problem.seed, "answer": problem.answer, "vote": vote, "votes": answers,
                     "paths_voted": len(solutions),
                     "correct": vote == problem.answer,
                     "single_accuracy": sum(a == problem.answer for a in answers) / max(len(answers), 1)})
    summary = {"problems": len(rows), "n": ns.n, "wall_s": wall, "early_stop": ns.early_stop,
               "mean_paths_voted": sum(r["paths_voted"] for r in rows) / len(rows),
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

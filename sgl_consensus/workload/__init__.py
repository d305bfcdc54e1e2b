"""Synthetic GSM8K-style workload: seeded problem generator, answer checker, tokenizer and training."""

from sgl_consensus.workload.problems import PROMPT_SUFFIX, Problem, format_prompt, generate_problem

__all__ = ["PROMPT_SUFFIX", "Problem", "format_prompt", "generate_problem"]

#!/usr/bin/env python
"""Draft latency and offline acceptance: ConsensusDrafter against SGLang's C++ NgramCorpus.

Replays sibling token streams (N paths of one prompt) step by step, as speculative decoding would
consume them: every step each running path gets a draft tree of `--draft-tokens` nodes, accepts the
longest tree path matching its true continuation, and advances by that plus the bonus token.
tau = output tokens / verify steps (1.0 = plain decoding). Each drafter runs its own replay.

Drafters (same draft budget):
- `ours`: ConsensusDrafter, driven as the worker drives it: `extend` of the tokens each running
  path committed, then one `propose` for the batch.
- `ngram_global`: SGLang's NgramCorpus (C++, CPU) with one corpus over all requests, as deployed,
  driven as SGLang's NGRAM worker drives it: `batch_put` of each request's last `max_trie_depth`
  tokens after verify, `batch_get` with the same windows before the next verify.
- `ngram_group`: the same with one NgramCorpus per sibling group (per problem).
- `ours_own` (control): our drafter with own history only (no siblings, no global corpus).
- `ours_nolp` (streams with logprobs only): `ours` fed no logprobs (`extend(rid, tokens, None)`), so
  only the frequency half of the edge score acts; `ours` gets the recorded logprobs of the
  committed tokens, as the worker passes them, so the `alpha * p` half acts too.

Regimes: `lockstep` (all siblings start together), `staggered` (sibling i starts i * stagger steps
late), `ahead` (N - 1 siblings already finished; path 0 decodes alone, the finished ones still
feed its group). Streams: the bundled real 8-sample outputs of a small reasoner (T=0.7, 1.0; N=16
joins both temperatures; token ids only), synthetic streams with controlled overlap and recorded
logprobs (see `synthetic`), and `reasoner_T07` / `reasoner_T10`: 8 samples per problem from the
project's own tiny reasoner with the logprob of every sampled token
(`benchmarks/make_reasoner_streams.py`).

Cost per request-step = CPU time (process_time: all threads, so NgramCorpus's background insert
thread counts) of a step's drafting work / paths in that step (extend+propose for ours;
batch_put+synchronize+batch_get plus building the token windows for NgramCorpus); median over
steps, with the mean and the wall-clock median beside it. CPU time keeps the other jobs sharing
this machine out of the numbers. The replay, acceptance evaluation, adds and removes are not timed.

`ceiling` rows (ahead regime, real streams): an oracle that knows the true continuation and drafts
its longest prefix occurring anywhere in the finished siblings or the prompt (any context): no
drafter built from the siblings alone can beat it.

Usage: .venv/bin/python benchmarks/bench_draft_latency.py [--quick] [--workloads reasoner_T07,reasoner_T10
--update --seq-len-sweep ""] [--ignore-logprobs]
Writes benchmarks/results/draft_latency.json, .png and .md. `--workloads` runs only the named stream
sets; with `--update` their rows replace those of the same workloads in the existing JSON and every
other row (and the sequence-length sweep, unless it is re-run) is kept. `--ignore-logprobs` feeds no
logprobs to any drafter (then `ours` = `ours_nolp`, and no `ours_nolp` rows are made).
"""

from __future__ import annotations

import argparse
import hashlib
import gzip
import json
import math
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NGRAM_MAX_TRIE_DEPTH = 18  # SGLang's default --speculative-ngram-max-trie-depth


@dataclass
class Problem:
    prompt: list[int]
    samples: list[list[int]]
    logprobs: list[list[float]] | None = None
    # per sample, per position: [the target's top token ids, their probabilities] (make_reasoner_streams --successors)
    successors: list[list] | None = None


# ---------------------------------------------------------------------------- streams
def load_real(name: str, prefix: str = "sibling_streams") -> list[Problem]:
    """A bundled stream file; its per-token logprobs and top successors come along where it has them."""
    with gzip.open(DATA_DIR / f"{prefix}_{name}.json.gz", "rt") as f:
        data = json.load(f)
    return [Problem(p["prompt_ids"], p["samples"], p.get("logprobs"), p.get("successors")) for p in data["problems"]]


def join_real(a: list[Problem], b: list[Problem]) -> list[Problem]:
    """16 paths per problem: the T=0.7 and T=1.0 samples of the same prompt."""
    return [Problem(x.prompt, x.samples + y.samples) for x, y in zip(a, b) if x.prompt == y.prompt]


def synthetic(num_problems: int, num_paths: int, length: int, seed: int, edit_rate: float = 0.08) -> list[Problem]:
    """Paths that follow one reference solution per problem with random edits, and their logprobs.

    The reference strings together phrases from a bank shared by all problems (a reasoning
    template, which is what a global corpus can learn) with problem-specific tokens in between.
    Each path copies the reference token by token; with probability `edit_rate` per token it
    substitutes, inserts or deletes one (the overlap knob: siblings re-converge after an edit, like
    sampled reasoning paths that phrase one step differently). The recorded logprob of a copied
    token is log(1 - edit_rate), of an edited one log(edit_rate / 3). Vocabulary 32000.
    """
    bank_rng = random.Random(seed)
    bank = [[bank_rng.randrange(32000) for _ in range(bank_rng.randint(3, 10))] for _ in range(300)]
    copy_lp = math.log(1.0 - edit_rate)
    edit_lp = math.log(edit_rate / 3.0)
    problems = []
    for pi in range(num_problems):
        rng = random.Random(seed * 1_000_003 + pi)
        reference: list[int] = []
        while len(reference) < length + 64:
            reference += bank[rng.randrange(len(bank))]
            reference += [rng.randrange(32000) for _ in range(rng.randint(1, 4))]
        prompt = [rng.randrange(32000) for _ in range(64)]
        samples, logprobs = [], []
        for _ in range(num_paths):
            out: list[int] = []
            lps: list[float] = []
            i = 0
            while len(out) < length:
                r = rng.random()
                if r >= edit_rate:
                    out.append(reference[i])
                    lps.append(copy_lp)
                    i += 1
                elif r < edit_rate / 3:  # substitution
                    out.append(rng.randrange(32000))
                    lps.append(edit_lp)
                    i += 1
                elif r < 2 * edit_rate / 3:  # insertion
                    out.append(rng.randrange(32000))
                    lps.append(edit_lp)
                else:  # deletion
                    i += 1
            samples.append(out)
            logprobs.append(lps)
        problems.append(Problem(prompt, samples, logprobs))
    return problems


# ---------------------------------------------------------------------------- drafters
class OursAdapter:
    name = "ours"

    def __init__(self, config: DraftConfig, use_logprobs: bool = True, core: str = "auto") -> None:
        self.drafter = ConsensusDrafter(config, core=core)
        self.use_logprobs = use_logprobs  # False: extend(rid, tokens, None), frequency-only scores

    def start(self, rid, group, prompt):
        self.drafter.add(rid, group, prompt)

    def preload(self, rid, group, prompt, tokens, logprobs):
        self.drafter.add(rid, group, prompt)
        self.drafter.extend(rid, tokens, logprobs if self.use_logprobs else None)

    def step(self, rids, new_tokens, new_logprobs, prompts, outputs):
        extend = self.drafter.extend
        if not self.use_logprobs:
            new_logprobs = [None] * len(rids)
        for rid, tokens, lps in zip(rids, new_tokens, new_logprobs):
            extend(rid, tokens, lps)
        proposal = self.drafter.propose(rids)
        self.drafter.maintain()  # what the worker runs after the verify launch (timed with the step)
        return proposal

    def finish(self, rid, tokens, logprobs, prompt, output):
        self.drafter.extend(rid, tokens, logprobs if self.use_logprobs else None)
        self.drafter.remove(rid)

    def end_group(self, group):
        pass


class NgramAdapter:
    """SGLang's NgramCorpus driven like ngram_worker: put/get of each request's last 18 tokens."""

    def __init__(self, corpus_cls, draft_tokens: int, per_group: bool) -> None:
        self.corpus_cls = corpus_cls
        self.draft_tokens = draft_tokens
        self.per_group = per_group
        self.name = "ngram_group" if per_group else "ngram_global"
        self.corpora: dict = {}
        self.group_of: dict = {}
        self.shared = None if per_group else self._new()

    def _new(self):
        return self.corpus_cls(max_trie_depth=NGRAM_MAX_TRIE_DEPTH, draft_token_num=self.draft_tokens)

    def _corpus(self, group):
        if not self.per_group:
            return self.shared
        corpus = self.corpora.get(group)
        if corpus is None:
            corpus = self.corpora[group] = self._new()
        return corpus

    @staticmethod
    def _window(prompt, output):
        # = ngram_worker._efficient_concat_last_n(input tail, output tail, max_trie_depth)
        d = NGRAM_MAX_TRIE_DEPTH
        out_tail = output[-d:]
        if len(out_tail) >= d:
            return list(out_tail)
        return list(prompt[-(d - len(out_tail)):]) + list(out_tail)

    def start(self, rid, group, prompt):
        self.group_of[rid] = group
        self._corpus(group)

    def preload(self, rid, group, prompt, tokens, logprobs):
        # A finished sibling: its windows were put after every one of its steps.
        self.group_of[rid] = group
        corpus = self._corpus(group)
        windows = [self._window(prompt, tokens[:i]) for i in range(1, len(tokens) + 1)]
        for i in range(0, len(windows), 64):
            corpus.batch_put(windows[i:i + 64])
        corpus.synchronize()

    def step(self, rids, new_tokens, new_logprobs, prompts, outputs):
        window = self._window
        windows = [window(p, o) for p, o in zip(prompts, outputs)]
        total_lens = [len(p) + len(o) for p, o in zip(prompts, outputs)]
        if self.per_group:
            # Sibling groups share one corpus each; one put/get per group in the batch.
            by_group: dict = {}
            for i, rid in enumerate(rids):
                by_group.setdefault(self.group_of[rid], []).append(i)
            ids = np.zeros((len(rids), self.draft_tokens), dtype=np.int64)
            masks = np.zeros((len(rids), self.draft_tokens, self.draft_tokens), dtype=np.int64)
            for group, idx in by_group.items():
                corpus = self.corpora[group]
                corpus.batch_put([windows[i] for i in idx])
                corpus.synchronize()
                gi, gm = corpus.batch_get([rids[i] for i in idx], [windows[i] for i in idx], [total_lens[i] for i in idx])
                ids[idx] = gi.reshape(len(idx), self.draft_tokens)
                masks[idx] = gm.reshape(len(idx), self.draft_tokens, self.draft_tokens)
            return ids, masks
        corpus = self.shared
        corpus.batch_put(windows)
        corpus.synchronize()
        ids, masks = corpus.batch_get(rids, windows, total_lens)
        n = self.draft_tokens
        return ids.reshape(len(rids), n), masks.reshape(len(rids), n, n)

    def finish(self, rid, tokens, logprobs, prompt, output):
        corpus = self._corpus(self.group_of[rid])
        corpus.batch_put([self._window(prompt, output)])
        corpus.synchronize()
        corpus.erase_match_state([rid])
        self.group_of.pop(rid, None)

    def end_group(self, group):
        if self.per_group:
            self.corpora.pop(group, None)


class EvidenceOracleAdapter:
    """The tau no drafter that copies text it has already seen can exceed, in the same replay.

    A trie drafter drafts what followed its matched context (at least ``context`` tokens: both
    ours and SGLang's NgramCorpus match at least one) somewhere in its evidence, so context plus
    accepted tokens occurred there. This oracle knows each path's true continuation and drafts, as
    one chain, its longest prefix (up to ``draft_tokens - 1`` tokens) that, after the path's last
    ``context`` tokens, occurs anywhere in everything committed so far by every path of every
    problem or in any prompt: the evidence of SGLang's global NgramCorpus, and a superset of ours
    (group, own history, the tenant's finished groups). ``per_group``: only the path's own sibling
    group (its prompt, its siblings' and its own tokens so far): the ceiling of sibling drafting
    alone. It peeks at the futures through replay's request names (``p{problem}.{path}``)."""

    name = "oracle_evidence"

    def __init__(self, problems: list[Problem], draft_tokens: int, context: int = 1, per_group: bool = False) -> None:
        self.problems = problems
        self.context = context
        self.per_group = per_group
        self.depth = draft_tokens - 1 + context
        self.width = draft_tokens
        self.grams: dict[str, set[tuple[int, ...]]] = {}  # evidence scope ("" = everything) -> n-grams
        self.seqs: dict[str, list[int]] = {}  # rid -> prompt + committed tokens, as indexed so far

    def _scope(self, rid: str) -> set[tuple[int, ...]]:
        return self.grams.setdefault(rid.split(".")[0] if self.per_group else "", set())

    def _index(self, rid: str, tokens: Sequence[int]) -> None:
        seq, grams = self.seqs[rid], self._scope(rid)
        for token in tokens:
            seq.append(token)
            end = len(seq)
            for length in range(1, min(self.depth, end) + 1):
                grams.add(tuple(seq[end - length: end]))

    def _future(self, rid: str) -> list[int]:
        problem, path = rid[1:].split(".")
        return self.problems[int(problem)].samples[int(path)]

    def start(self, rid, group, prompt):
        self.seqs[rid] = []
        self._index(rid, prompt)

    def preload(self, rid, group, prompt, tokens, logprobs):
        self.start(rid, group, prompt)
        self._index(rid, tokens)

    def step(self, rids, new_tokens, new_logprobs, prompts, outputs):
        for rid, tokens in zip(rids, new_tokens):
            self._index(rid, tokens)
        ids = np.zeros((len(rids), self.width), dtype=np.int64)
        masks = np.zeros((len(rids), self.width, self.width), dtype=np.int64)
        masks[:, np.arange(self.width), np.arange(self.width)] = 1  # padding rows: detached
        for b, (rid, prompt, output) in enumerate(zip(rids, prompts, outputs)):
            seq = self.seqs[rid]
            context = seq[len(seq) - self.context:] if self.context else []
            future = self._future(rid)[len(output): len(output) + self.width - 1]
            length, grams = 0, self._scope(rid)
            while length < len(future) and tuple(context + future[: length + 1]) in grams:
                length += 1
            ids[b, 0] = output[-1] if output else prompt[-1]
            ids[b, 1: length + 1] = future[:length]
            for i in range(length + 1):  # a chain: every node's ancestors are the nodes before it
                masks[b, i, : i + 1] = 1
        return ids, masks

    def finish(self, rid, tokens, logprobs, prompt, output):
        self._index(rid, tokens)
        self.seqs.pop(rid, None)

    def end_group(self, group):
        pass


def load_ngram_corpus():
    """SGLang's NgramCorpus class, or (None, reason) if sglang cannot be imported here."""
    try:
        from sgl_consensus.cpu import torchvision_fix

        torchvision_fix.apply()
        from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus

        probe = NgramCorpus(max_trie_depth=NGRAM_MAX_TRIE_DEPTH, draft_token_num=4)
        probe.batch_put([[1, 2, 3, 4]])
        probe.synchronize()
        probe.batch_get(["probe"], [[1, 2]], [2])
        return NgramCorpus, None
    except Exception as exc:  # noqa: BLE001 - any failure means "run ours alone"
        return None, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- replay
def accepted_lengths(tokens: np.ndarray, masks: np.ndarray, continuations: list[list[int]]) -> list[int]:
    """Longest tree path (below the root) matching each continuation."""
    bs, n = tokens.shape
    masks = masks.astype(bool)
    lower = np.tril(np.ones((n, n), dtype=bool), -1)
    cols = np.arange(n)
    parents = np.where(masks & lower, cols, -1).max(axis=2)  # nearest ancestor = parent (BFS)
    result = []
    tok = tokens.tolist()
    par = parents.tolist()
    for b in range(bs):
        children: dict[int, list[int]] = {}
        for i in range(1, n):
            children.setdefault(par[b][i], []).append(i)
        node, length = 0, 0
        for target in continuations[b]:
            nxt = next((c for c in children.get(node, ()) if tok[b][c] == target), None)
            if nxt is None:
                break
            node, length = nxt, length + 1
        result.append(length)
    return result


def replay(adapter, problems: list[Problem], num_paths: int, regime: str, draft_tokens: int, stagger: int) -> dict:
    step_costs: list[float] = []  # CPU seconds per request-step, one entry per step
    wall_costs: list[float] = []  # wall seconds per request-step
    total_tokens = 0
    total_steps = 0
    drafts = hashlib.sha256()  # every proposal, to tell whether two drafters drafted identically
    for pi, problem in enumerate(problems):
        group = f"p{pi}"
        samples = problem.samples[:num_paths]
        logprobs = problem.logprobs[:num_paths] if problem.logprobs else [None] * len(samples)
        live = list(range(len(samples)))
        start_step = [0] * len(samples)
        started: set[int] = set()
        if regime == "ahead":
            # Path 0 joins first, so the finished siblings' n-grams stay in its live group.
            adapter.start(f"{group}.0", group, problem.prompt)
            started.add(0)
            for j in range(1, len(samples)):
                rid = f"{group}.{j}"
                adapter.preload(rid, group, problem.prompt, samples[j], logprobs[j])
                adapter.finish(rid, [], [] if logprobs[j] is not None else None, problem.prompt, samples[j])
            live = [0]
        elif regime == "staggered":
            start_step = [j * stagger for j in range(len(samples))]
        # The prefill commits each path's first token; it is extended at the path's first step.
        pos = {j: 1 for j in live}
        pending = {j: samples[j][:1] for j in live}
        pending_lp = {j: (logprobs[j][:1] if logprobs[j] is not None else None) for j in live}
        step = 0
        while pos:
            for j in live:
                if j not in started and step >= start_step[j]:
                    adapter.start(f"{group}.{j}", group, problem.prompt)
                    started.add(j)
            running = [j for j in live if j in started and j in pos]
            if running:
                rids = [f"{group}.{j}" for j in running]
                w0 = time.perf_counter()
                t0 = time.process_time()
                tokens, masks = adapter.step(
                    rids,
                    [pending[j] for j in running],
                    [pending_lp[j] for j in running],
                    [problem.prompt] * len(running),
                    [samples[j][: pos[j]] for j in running],
                )
                step_costs.append((time.process_time() - t0) / len(running))
                wall_costs.append((time.perf_counter() - w0) / len(running))
                drafts.update(np.ascontiguousarray(tokens).tobytes())
                drafts.update(np.ascontiguousarray(masks).tobytes())
                conts = [samples[j][pos[j]: pos[j] + draft_tokens] for j in running]
                for j, acc in zip(running, accepted_lengths(tokens, masks, conts)):
                    advance = min(acc + 1, len(samples[j]) - pos[j])
                    pending[j] = samples[j][pos[j]: pos[j] + advance]
                    pending_lp[j] = logprobs[j][pos[j]: pos[j] + advance] if logprobs[j] is not None else None
                    pos[j] += advance
                    total_tokens += advance
                    total_steps += 1
                    if pos[j] >= len(samples[j]):
                        adapter.finish(f"{group}.{j}", pending[j], pending_lp[j], problem.prompt, samples[j])
                        del pos[j]
            step += 1
        adapter.end_group(group)
    return {
        "tau": total_tokens / max(total_steps, 1),
        "verify_steps": total_steps,
        "output_tokens": total_tokens,
        "cost_us_median": statistics.median(step_costs) * 1e6 if step_costs else float("nan"),
        "cost_us_mean": statistics.fmean(step_costs) * 1e6 if step_costs else float("nan"),
        "wall_us_median": statistics.median(wall_costs) * 1e6 if wall_costs else float("nan"),
        "request_steps": total_steps,
        "drafts_sha256": drafts.hexdigest()[:16],
    }


def sibling_ceiling(problems: list[Problem], num_paths: int, draft_tokens: int) -> float:
    """tau of the oracle described in the module docstring (ahead regime, path 0)."""
    tokens_total = steps = 0
    depth = draft_tokens - 1
    for problem in problems:
        target = problem.samples[0]
        grams: set[tuple[int, ...]] = set()
        for seq in problem.samples[1:num_paths] + [problem.prompt]:
            for i in range(len(seq)):
                for length in range(1, depth + 1):
                    if i + length <= len(seq):
                        grams.add(tuple(seq[i: i + length]))
        pos = 1
        while pos < len(target):
            length = 0
            while length < depth and pos + length < len(target) and tuple(target[pos: pos + length + 1]) in grams:
                length += 1
            advance = min(length + 1, len(target) - pos)
            pos += advance
            tokens_total += advance
            steps += 1
    return tokens_total / max(steps, 1)


# ---------------------------------------------------------------------------- main
WORKLOADS = ["real_T07", "real_T10", "real_T07+T10", "synthetic", "reasoner_T07", "reasoner_T10"]


def workloads(quick: bool, selected: list[str] | None = None) -> list[tuple[str, list[int], callable]]:
    """(name, N values, problems(N) factory), loading only the selected stream sets."""
    selected = selected or WORKLOADS
    real_count = 40 if quick else 100
    syn_problems = 1 if quick else 2
    syn_len = 1024 if quick else 2048
    cache: dict = {}

    def real(name, prefix="sibling_streams"):
        if (prefix, name) not in cache:
            cache[(prefix, name)] = load_real(name, prefix)
        return cache[(prefix, name)]

    makers = {
        "real_T07": ([2, 4, 8], lambda n: real("T07")[:real_count]),
        "real_T10": ([2, 4, 8], lambda n: real("T10")[:real_count]),
        "real_T07+T10": ([16], lambda n: join_real(real("T07"), real("T10"))[:real_count]),
        "synthetic": ([2, 4, 8, 16, 32, 64], lambda n: synthetic(syn_problems, n, syn_len, seed=7)),
        "reasoner_T07": ([2, 4, 8], lambda n: real("T07", "reasoner_streams")[:real_count]),
        "reasoner_T10": ([2, 4, 8], lambda n: real("T10", "reasoner_streams")[:real_count]),
    }
    unknown = [w for w in selected if w not in makers]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {WORKLOADS}")
    return [(w, *makers[w]) for w in WORKLOADS if w in selected]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draft-tokens", type=int, default=8)
    parser.add_argument("--stagger", type=int, default=6, help="steps between sibling starts (staggered regime)")
    parser.add_argument("--quick", action="store_true", help="fewer problems and shorter synthetic streams")
    parser.add_argument("--regimes", default="lockstep,staggered,ahead")
    parser.add_argument("--out", default=str(RESULTS_DIR / "draft_latency.json"))
    parser.add_argument("--seq-len-sweep", default="256,1024,4096", help="synthetic lengths at N=8 (lock-step)")
    parser.add_argument("--from-json", help="only re-render the PNG and markdown of an earlier run's JSON")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"stream sets to run, from {WORKLOADS}")
    parser.add_argument("--update", action="store_true",
                        help="merge into the existing --out JSON: replace the rows of the workloads run, keep the rest")
    parser.add_argument("--no-python-core", action="store_true",
                        help="skip ours_py (our drafter on its pure-Python reference core)")
    parser.add_argument("--ignore-logprobs", action="store_true",
                        help="feed no logprobs to any drafter (frequency-only scores); no ours_nolp rows")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        plot(report, Path(args.from_json).with_suffix(".png"))
        write_markdown(report, Path(args.from_json).with_suffix(".md"))
        return

    corpus_cls, ngram_error = load_ngram_corpus()
    if corpus_cls is None:
        print(f"NOTE: SGLang's NgramCorpus is unavailable ({ngram_error}); measuring our drafter alone.")
    config = DraftConfig(num_draft_tokens=args.draft_tokens)
    own_config = DraftConfig(num_draft_tokens=args.draft_tokens, use_siblings=False, use_global=False)

    def drafters(with_logprobs: bool = False):
        made = [OursAdapter(config, use_logprobs=not args.ignore_logprobs)]
        if not args.no_python_core:
            reference = OursAdapter(config, use_logprobs=not args.ignore_logprobs, core="python")
            reference.name = "ours_py"
            made.append(reference)
        if with_logprobs and not args.ignore_logprobs:
            nolp = OursAdapter(config, use_logprobs=False)
            nolp.name = "ours_nolp"
            made.append(nolp)
        if corpus_cls is not None:
            made += [NgramAdapter(corpus_cls, args.draft_tokens, False), NgramAdapter(corpus_cls, args.draft_tokens, True)]
        own = OursAdapter(own_config, use_logprobs=not args.ignore_logprobs)
        own.name = "ours_own"
        return made + [own]

    rows = []
    regimes = args.regimes.split(",")
    selected = [w for w in args.workloads.split(",") if w]
    for workload, n_values, make in workloads(args.quick, selected):
        for regime in regimes:
            for n in n_values:
                problems = make(n)
                has_logprobs = all(p.logprobs for p in problems)
                if regime == "ahead" and workload.startswith(("real", "reasoner")):
                    ceiling = sibling_ceiling(problems, n, args.draft_tokens)
                    rows.append({"workload": workload, "regime": regime, "N": n, "drafter": "ceiling", "tau": ceiling})
                    print(f"{workload:13s} {regime:9s} N={n:<3d} {'ceiling':13s} tau={ceiling:.3f}", flush=True)
                for adapter in drafters(has_logprobs):
                    result = replay(adapter, problems, n, regime, args.draft_tokens, args.stagger)
                    row = {"workload": workload, "regime": regime, "N": n, "drafter": adapter.name, **result}
                    if has_logprobs:
                        row["logprobs_fed"] = getattr(adapter, "use_logprobs", False)
                    rows.append(row)
                    print(
                        f"{workload:13s} {regime:9s} N={n:<3d} {adapter.name:13s} tau={row['tau']:.3f} "
                        f"cost={row['cost_us_median']:.1f}us (mean {row['cost_us_mean']:.1f})",
                        flush=True,
                    )
    sweep = []
    for length in [int(x) for x in args.seq_len_sweep.split(",") if x]:
        problems = synthetic(1, 8, length, seed=11)
        for adapter in drafters():
            result = replay(adapter, problems, 8, "lockstep", args.draft_tokens, args.stagger)
            sweep.append({"length": length, "drafter": adapter.name, **result})
            print(f"sweep L={length:<5d} {adapter.name:13s} tau={result['tau']:.3f} cost={result['cost_us_median']:.1f}us")

    command = shlex.join([Path(sys.executable).name] + sys.argv)
    out = Path(args.out)
    updates = []
    if args.update and out.exists():
        # Keep every row of the workloads not run now (and the sweep unless re-run).
        previous = json.loads(out.read_text())
        ran = {w for w, _, _ in workloads(args.quick, selected)}
        rows = [r for r in previous["rows"] if r["workload"] not in ran] + rows
        order = {w: i for i, w in enumerate(WORKLOADS)}
        rows.sort(key=lambda r: order.get(r["workload"], len(order)))
        if not sweep:
            sweep = previous.get("seq_len_sweep", [])
        updates = previous.get("updates", []) + [{"command": command, "workloads": sorted(ran)}]
        command = previous["command"]

    report = {
        "command": command,
        "draft_tokens": args.draft_tokens,
        "stagger_steps": args.stagger,
        "ngram": {"available": corpus_cls is not None, "error": ngram_error, "max_trie_depth": NGRAM_MAX_TRIE_DEPTH,
                  "match_type": "BFS"},
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
        "seq_len_sweep": sweep,
        "targets": evaluate_targets(rows, sweep),
    }
    if updates:
        report["updates"] = updates
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["targets"], indent=1))
    plot(report, out.with_suffix(".png"))
    write_markdown(report, out.with_suffix(".md"))
    print(f"wrote {out}, {out.with_suffix('.png')} and {out.with_suffix('.md')}")


def _index(rows):
    return {(r["workload"], r["regime"], r["N"], r["drafter"]): r for r in rows}


def evaluate_targets(rows: list[dict], sweep: list[dict]) -> dict:
    """Where each of the issue's targets stands (computed, never asserted)."""
    idx = _index(rows)
    out: dict = {"tau_lockstep_ge_ngram_global": [], "tau_ahead_ge_1.2x_ngram_global": [],
                 "cost_le_ngram_global": [], "cost_le_half_ngram_global": [], "cost_N64_le_2x_N8": {},
                 "drafts_identical_to_python_core": []}
    for (workload, regime, n, drafter), row in sorted(idx.items()):
        if drafter != "ours":
            continue
        ref = idx.get((workload, regime, n, "ngram_global"))
        if ref is None:
            continue
        tau_ratio = row["tau"] / ref["tau"]
        cost_ratio = row["cost_us_median"] / ref["cost_us_median"]
        entry = {"workload": workload, "regime": regime, "N": n, "tau_ratio": round(tau_ratio, 3),
                 "cost_ratio": round(cost_ratio, 3)}
        if regime == "lockstep":
            out["tau_lockstep_ge_ngram_global"].append({**entry, "met": tau_ratio >= 1.0})
        if regime == "ahead":
            out["tau_ahead_ge_1.2x_ngram_global"].append({**entry, "met": tau_ratio >= 1.2})
        out["cost_le_ngram_global"].append({**entry, "met": cost_ratio <= 1.0})
        out["cost_le_half_ngram_global"].append({**entry, "met": cost_ratio <= 0.5})
        py = idx.get((workload, regime, n, "ours_py"))
        if py is not None:
            out["drafts_identical_to_python_core"].append(
                {**entry, "met": py.get("drafts_sha256") == row.get("drafts_sha256") is not None,
                 "python_cost_ratio": round(py["cost_us_median"] / ref["cost_us_median"], 3)})
    for regime in ("lockstep", "staggered", "ahead"):
        a = idx.get(("synthetic", regime, 8, "ours"))
        b = idx.get(("synthetic", regime, 64, "ours"))
        if a and b:
            ratio = b["cost_us_median"] / a["cost_us_median"]
            out["cost_N64_le_2x_N8"][regime] = {"ratio": round(ratio, 3), "met": ratio <= 2.0}
    return out


def write_markdown(report: dict, path: Path) -> None:
    """Headline tables and target status, generated from the report (no hand-copied numbers)."""
    rows = report["rows"]
    idx = _index(rows)
    all_drafters = ["ours", "ours_py", "ours_nolp", "ngram_global", "ngram_group", "ours_own"]
    lines = [
        "# Draft latency and acceptance: ConsensusDrafter vs SGLang NgramCorpus",
        "",
        f"Command: `{report['command']}` ({report['draft_tokens']} draft tokens, stagger "
        f"{report['stagger_steps']} steps; NgramCorpus available: {report['ngram']['available']}"
        + (f", error: {report['ngram']['error']}" if report["ngram"]["error"] else "")
        + f"; Python {report['machine']['python']}).",
        "",
        "tau = output tokens per verify step (1.0 = no speculation). cost = CPU microseconds per "
        "request-step, median over steps (mean in brackets). ngram_global = one NgramCorpus over "
        "all requests (as deployed); ngram_group = one per sibling group; ours_own = our drafter on "
        "own history only; ceiling = oracle bound for any drafter built from finished siblings "
        "(ahead regime, real streams); ours_nolp = ours fed no logprobs (streams that carry them); "
        "ours = the native (C++) core, ours_py = the same drafter on its pure-Python reference core; "
        "same drafts = whether both proposed identical trees at every step (digest of all proposals).",
        "",
    ]
    for update in report.get("updates", []):
        lines += [f"Rows of {', '.join(update['workloads'])} from a later run: `{update['command']}`.", ""]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        present = {r["drafter"] for r in rows if r["workload"] == workload}
        drafters = [d for d in all_drafters if d in present and d != "ours_py"]
        cost_drafters = [d for d in all_drafters if d in present and d != "ours_own"]
        lines += [f"## {workload}", ""]
        header = "| regime | N | " + " | ".join(f"tau {d}" for d in drafters) + " | tau ceiling | " + " | ".join(
            f"cost {d}" for d in cost_drafters) + " | tau ours / global | cost ours / global | cost ours / ours_py | same drafts |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for regime in ("lockstep", "staggered", "ahead"):
            for n in sorted({r["N"] for r in rows if r["workload"] == workload and r["regime"] == regime}):
                get = lambda d: idx.get((workload, regime, n, d))  # noqa: E731
                taus = [f"{get(d)['tau']:.3f}" if get(d) else "-" for d in drafters]
                ceiling = f"{get('ceiling')['tau']:.3f}" if get("ceiling") else "-"
                costs = [
                    f"{get(d)['cost_us_median']:.1f} ({get(d)['cost_us_mean']:.1f})" if get(d) else "-"
                    for d in cost_drafters
                ]
                ours, ref = get("ours"), get("ngram_global")
                ratio_tau = f"{ours['tau'] / ref['tau']:.3f}" if ours and ref else "-"
                ratio_cost = f"{ours['cost_us_median'] / ref['cost_us_median']:.2f}" if ours and ref else "-"
                py = get("ours_py")
                ratio_py = f"{ours['cost_us_median'] / py['cost_us_median']:.2f}" if ours and py else "-"
                same = ("yes" if ours["drafts_sha256"] == py["drafts_sha256"] else "NO") if ours and py else "-"
                lines.append(f"| {regime} | {n} | " + " | ".join(taus) + f" | {ceiling} | " + " | ".join(costs)
                             + f" | {ratio_tau} | {ratio_cost} | {ratio_py} | {same} |")
        lines.append("")
    lp_workloads = [w for w in dict.fromkeys(r["workload"] for r in rows)
                     if any(r["drafter"] == "ours_nolp" and r["workload"] == w for r in rows)]
    if lp_workloads:
        lines += ["## What the logprobs change (streams with recorded logprobs)", "",
                  "tau of our drafter fed the sampled tokens' logprobs (`ours`, edge score alpha * p + "
                  "(1 - alpha) * frequency) and fed none (`ours_nolp`, frequency only), against NgramCorpus.", "",
                  "| workload | regime | N | tau ours (logprobs) | tau ours (no logprobs) | with / without "
                  "| tau ngram_global | tau ngram_group | ours / global | ours_nolp / global |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for workload in lp_workloads:
            for regime in ("lockstep", "staggered", "ahead"):
                for n in sorted({r["N"] for r in rows if r["workload"] == workload and r["regime"] == regime}):
                    get = lambda d: idx.get((workload, regime, n, d))  # noqa: E731
                    a, b, g, gg = get("ours"), get("ours_nolp"), get("ngram_global"), get("ngram_group")
                    if not (a and b):
                        continue
                    f = lambda r: f"{r['tau']:.3f}" if r else "-"  # noqa: E731
                    lines.append(
                        f"| {workload} | {regime} | {n} | {a['tau']:.3f} | {b['tau']:.3f} | {a['tau'] / b['tau']:.3f} "
                        f"| {f(g)} | {f(gg)} | " + (f"{a['tau'] / g['tau']:.3f} | {b['tau'] / g['tau']:.3f} |" if g else "- | - |"))
        lines.append("")
    sweep = report.get("seq_len_sweep") or []
    if sweep:
        lines += ["## Sequence-length sweep (synthetic, N=8, lock-step)", "",
                  "| length | drafter | tau | cost median (mean) |", "|---|---|---|---|"]
        for r in sweep:
            lines.append(f"| {r['length']} | {r['drafter']} | {r['tau']:.3f} | {r['cost_us_median']:.1f} ({r['cost_us_mean']:.1f}) |")
        lines.append("")
    targets = report["targets"]
    lines += ["## Targets (computed from the rows above)", ""]
    if not report["ngram"]["available"]:
        lines += [f"NgramCorpus could not be run here ({report['ngram']['error']}): the comparisons "
                  "against it are not evaluated; only our drafter was measured.", ""]
    for key, title in [("tau_lockstep_ge_ngram_global", "tau >= NgramCorpus (global) in lock-step"),
                       ("tau_ahead_ge_1.2x_ngram_global", "tau >= 1.2x NgramCorpus (global) with siblings ahead"),
                       ("cost_le_ngram_global", "cost per request-step <= NgramCorpus (global)"),
                       ("cost_le_half_ngram_global", "cost per request-step <= 0.5x NgramCorpus (global)"),
                       ("drafts_identical_to_python_core", "drafts identical to the Python reference core")]:
        entries = targets[key]
        met = sum(e["met"] for e in entries)
        missed = [f"{e['workload']}/{e['regime']}/N={e['N']} ({e['tau_ratio' if 'tau' in key else 'cost_ratio']})"
                  for e in entries if not e["met"]]
        lines.append(f"- {title}: met in {met}/{len(entries)}" + (f"; missed: {', '.join(missed)}" if missed else ""))
    for regime, entry in targets["cost_N64_le_2x_N8"].items():
        lines.append(f"- our cost at N=64 <= 2x our cost at N=8 ({regime}, synthetic): ratio {entry['ratio']}, "
                     f"{'met' if entry['met'] else 'missed'}")
    lines.append("")
    text = "\n".join(lines)
    # A hand-written analysis below the generated part survives re-rendering.
    marker = "\n## Analysis"
    if path.exists():
        previous = path.read_text()
        if marker in previous:
            text = text.rstrip("\n") + "\n" + previous[previous.index(marker):]
    path.write_text(text)


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib unavailable: no PNG")
        return
    rows = report["rows"]
    regimes = ["lockstep", "staggered", "ahead"]
    drafters = ["ours", "ours_nolp", "ngram_global", "ngram_group", "ours_own"]
    colors = {"ours": "tab:blue", "ours_nolp": "tab:cyan", "ngram_global": "tab:orange", "ngram_group": "tab:green",
              "ours_own": "tab:gray"}
    fig, axes = plt.subplots(2, 3, figsize=(20, 9))
    for col, regime in enumerate(regimes):
        ax = axes[0][col]
        labels = sorted({(r["workload"], r["N"]) for r in rows if r["regime"] == regime}, key=lambda x: (x[0] == "synthetic", x[0], x[1]))
        x = np.arange(len(labels))
        width = 0.16
        for k, drafter in enumerate(drafters):
            vals = [next((r["tau"] for r in rows if (r["workload"], r["N"], r["regime"], r["drafter"]) == (w, n, regime, drafter)), 0) for w, n in labels]
            if any(vals):
                ax.bar(x + (k - 2) * width, vals, width, label=drafter, color=colors[drafter])
        ax.set_xticks(x)
        ax.set_xticklabels([f"{w.replace('real_', '').replace('reasoner_', 'rsn ').replace('synthetic', 'syn')} N={n}"
                            for w, n in labels], fontsize=6, rotation=90)
        ax.set_title(f"tau (accepted tokens / step), {regime}")
        ax.legend(fontsize=7)
        ax = axes[1][col]
        for drafter in drafters:
            for workloads, style, tag in ((("synthetic",), "o-", "synthetic"), (("real_T07", "real_T07+T10"), "s--", "real"),
                                             (("reasoner_T07",), "^:", "reasoner T07")):
                pts = sorted(
                    (r["N"], r["cost_us_median"])
                    for r in rows
                    if r["regime"] == regime and r["drafter"] == drafter and r["workload"] in workloads
                )
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{drafter} ({tag})",
                            color=colors[drafter])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (sibling paths)")
        ax.set_ylabel("CPU us per request-step (median)")
        ax.set_title(f"draft cost, {regime} (solid: synthetic, dashed: real T07, dotted: reasoner T07)")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"ConsensusDrafter vs SGLang NgramCorpus, {report['draft_tokens']} draft tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

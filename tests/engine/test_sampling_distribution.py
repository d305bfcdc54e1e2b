"""Lossless sampling in SGLang's real engine: consensus drafting (also lead-lag scheduled, with a
width that changes every step, and under tensor parallelism) samples as plain decoding does, and the
same statistics catch SGLang's own CPU NGRAM path, which verifies sampled requests greedily."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from sgl_consensus.testing.devices import cuda_available

pytestmark = pytest.mark.engine

PROMPT = "first we add then we subtract then we add"


def _internal(engine) -> dict:
    return engine.get_server_info()["internal_states"][0]["consensus"]

# --- lossless sampling: consensus passes, SGLang's CPU NGRAM is caught ------------------------

SAMPLES = 400
NEW_TOKENS = 10
SETTINGS = {"T1.0": {"temperature": 1.0}, "T0.7_top_p0.9": {"temperature": 0.7, "top_p": 0.9}}


def _sample(engine, setting: str, lead: int = 0) -> list[list[int]]:
    params = {**SETTINGS[setting], "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    if lead:  # groups of 8 siblings, lead-lag scheduled: the followers wait for their leader
        params = [{**params, "custom_params": {"consensus_group": f"{setting}-{i // 8}", "consensus_lead": lead}}
                  for i in range(SAMPLES)]
    outs = engine.generate([PROMPT] * SAMPLES, params)
    samples = [o["output_ids"] for o in outs]
    assert len(samples) == SAMPLES and all(len(s) == NEW_TOKENS for s in samples)
    return samples


def _position_pvalues(a: list[list[int]], b: list[list[int]], positions=range(1, 5)) -> list[float]:
    """Chi-square two-sample tests of the token histogram at each position (rare tokens pooled)."""
    pvalues = []
    for pos in positions:
        ca, cb = Counter(s[pos] for s in a), Counter(s[pos] for s in b)
        common = [t for t, c in (ca + cb).items() if c >= 10]
        table = [[ca[t] for t in common] + [len(a) - sum(ca[t] for t in common)],
                 [cb[t] for t in common] + [len(b) - sum(cb[t] for t in common)]]
        table = np.array([col for col in zip(*table) if sum(col) > 0]).T
        pvalues.append(stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0)
    return pvalues


def _repeat_rate(samples: list[list[int]]) -> np.ndarray:
    """Per sample: fraction of tokens equal to a token seen earlier in the same sample."""
    return np.array([sum(t in s[:i] for i, t in enumerate(s)) / len(s) for s in samples])


def _distribution_pvalue(a, b) -> float:
    tests = _position_pvalues(a, b) + [stats.mannwhitneyu(_repeat_rate(a), _repeat_rate(b)).pvalue]
    return min(tests) * len(tests)  # Bonferroni


# run -> (algorithm, worker knobs, lead, engine arguments)
RUNS = {"none": (None, {}, 0, {}), "consensus": ("consensus", {}, 0, {}), "NGRAM": ("NGRAM", {}, 0, {}),
        "lead_lag": ("consensus", {}, 4, {}),
        # the verify width changes every step (1, 2, 4 in turn), with model-informed nodes
        "consensus_cycle": ("consensus", {"CONSENSUS_ADAPTIVE": "cycle", "CONSENSUS_DRAFT_MODEL_WEIGHT": "1.0"}, 0, {}),
        # two tensor-parallel ranks (one core each), every step's trees compared across ranks
        "consensus_tp2": ("consensus", {"SGLANG_CPU_OMP_THREADS_BIND": "0|1", "CONSENSUS_CHECK_TP": "on"}, 0,
                          {"tp_size": 2})}


@pytest.fixture(scope="module")
def samples(engines, peaky_model):
    """``samples(run, setting)``: that run's samples, drawn once per module (any test may ask first;
    every setting is drawn while the run's engine is up, as engine starts dominate)."""
    drawn: dict[tuple[str, str], list[list[int]]] = {}

    def get(run: str, setting: str) -> list[list[int]]:
        if (run, setting) not in drawn:
            name, env, lead, extra = RUNS[run]
            engine = engines.get(peaky_model, name, env=env, max_running_requests=64, **extra)
            for each in SETTINGS:
                drawn[(run, each)] = _sample(engine, each, lead)
            if lead:
                assert _internal(engine)["lead_lag"]["lead_holds"] > 0, "the lead-lag samples were never held"
        return drawn[(run, setting)]

    return get


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("run", ["consensus", "lead_lag", "consensus_cycle"])
def test_consensus_sampling_preserves_distribution(samples, run, setting):
    """Consensus drafting, also under lead-lag scheduling and with a width that changes every
    step, samples as plain decoding does."""
    p = _distribution_pvalue(samples("none", setting), samples(run, setting))
    assert p > 1e-3, f"{run} changed the sampled distribution ({setting}): p = {p:.2e}"


@pytest.mark.skipif(cuda_available(), reason="two TP ranks on one machine's CPU cores")
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_tensor_parallel_sampling_preserves_distribution(samples, setting):
    """With TP = 2 every rank drafts and the sharded verify samples: still plain decoding's distribution."""
    p = _distribution_pvalue(samples("none", setting), samples("consensus_tp2", setting))
    assert p > 1e-3, f"TP = 2 consensus changed the sampled distribution ({setting}): p = {p:.2e}"


@pytest.mark.skipif(cuda_available(), reason="SGLang verifies sampled requests greedily only on CPU")
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_tests_catch_sglang_cpu_ngram_skew(samples, setting):
    """The same statistics reject SGLang's own CPU NGRAM path, which verifies sampled requests greedily."""
    p = _distribution_pvalue(samples("none", setting), samples("NGRAM", setting))
    assert p < 1e-6, f"expected SGLang's CPU NGRAM to skew samples, p = {p:.2e}"

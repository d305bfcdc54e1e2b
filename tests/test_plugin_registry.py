"""The plugin registers `consensus` in SGLang's speculative registry, idempotently, any letter case."""

from __future__ import annotations

import pytest


def test_register_is_idempotent_and_case_insensitive():
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from sgl_consensus import plugin

    plugin.register()
    plugin.register()
    algos = {SpeculativeAlgorithm.from_string(name) for name in ("consensus", "CONSENSUS", "CoNsEnSuS")}
    assert len(algos) == 1
    algo = algos.pop()
    assert algo.is_ngram() and algo.is_speculative() and not algo.is_eagle()
    # What SGLang 0.5.23's scheduler calls but its CustomSpecAlgo lacks:
    assert algo.carries_draft_hidden_states() is False
    assert algo.need_topk() is False
    assert algo.get_platform_worker_cls() is None
    assert callable(algo.create_future_map)


def test_entry_point_is_installed():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="sglang.srt.plugins") if ep.value == "sgl_consensus.plugin:register"]
    assert eps, "the sglang.srt.plugins entry point is missing: reinstall the package (pip install -e .)"


def test_unknown_algorithm_still_rejected():
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    with pytest.raises(ValueError, match="Unknown speculative algorithm"):
        SpeculativeAlgorithm.from_string("consensuss")

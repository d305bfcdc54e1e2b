"""Worker knobs and sibling grouping (pure Python, no SGLang)."""

from __future__ import annotations

import json

import pytest

from sgl_consensus.grouping import GroupingConfig, SiblingGrouper
from sgl_consensus.settings import SettingsError, load_settings


def test_defaults():
    s = load_settings({})
    assert s.drafter == "consensus" and s.grouping.enabled and s.log_interval_s == 30
    assert s.draft_config(8).num_draft_tokens == 8


def test_env_overrides_file(tmp_path):
    path = tmp_path / "knobs.json"
    path.write_text(json.dumps({"drafter": "prompt_lookup", "draft": {"alpha": 0.3, "max_branch": 2},
                                "grouping": {"min_common_prefix": 8}}))
    s = load_settings({"CONSENSUS_CONFIG": str(path), "CONSENSUS_DRAFT_ALPHA": "0.9", "CONSENSUS_GROUPING": "off"})
    cfg = s.draft_config(6)
    assert s.drafter == "prompt_lookup" and cfg.alpha == 0.9 and cfg.max_branch == 2
    assert not s.grouping.enabled and s.grouping.min_common_prefix == 8


@pytest.mark.parametrize("env, needle", [
    ({"CONSENSUS_DRAFTER": "medusa"}, "CONSENSUS_DRAFTER"),
    ({"CONSENSUS_DRAFT_ALPHA": "2"}, "alpha"),
    ({"CONSENSUS_DRAFT_ALPHA": "high"}, "alpha"),
    ({"CONSENSUS_DRAFT_BOGUS": "1"}, "bogus"),
    ({"CONSENSUS_DRAFT_NUM_DRAFT_TOKENS": "4"}, "speculative-num-draft-tokens"),
    ({"CONSENSUS_GROUPING": "maybe"}, "CONSENSUS_GROUPING"),
    ({"CONSENSUS_GROUPING_MIN_COMMON_FRACTION": "0"}, "min_common_fraction"),
    ({"CONSENSUS_LOG_INTERVAL": "-1"}, "CONSENSUS_LOG_INTERVAL"),
    ({"CONSENSUS_TYPO": "1"}, "CONSENSUS_TYPO"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(env)


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError, match="not valid JSON"):
        load_settings({"CONSENSUS_CONFIG": str(bad)})
    bad.write_text(json.dumps({"drafters": "x"}))
    with pytest.raises(SettingsError, match="unknown keys"):
        load_settings({"CONSENSUS_CONFIG": str(bad)})


def test_grouping_rules_first_match_wins():
    g = SiblingGrouper()
    prompt = list(range(40))
    assert g.assign("a", "t1", 4, prompt) == ("tag", "t1")  # explicit tag beats n > 1
    n1, n2 = g.assign("b", None, 4, prompt), g.assign("c", None, 4, prompt)
    assert n1 == n2 and n1[0] == "n"
    assert g.assign("d", None, 4, prompt + [1]) != n1  # n > 1 needs identical prompts


def test_prefix_clusters_join_forks_and_release():
    g = SiblingGrouper(GroupingConfig(min_common_prefix=16, min_common_fraction=0.8))
    shared = list(range(100, 140))
    a = g.assign("a", None, 1, shared + [1, 2])
    b = g.assign("b", None, 1, shared + [3])  # a fork branch appending different text
    c = g.assign("c", None, 1, list(range(500, 540)))  # unrelated
    short = g.assign("s", None, 1, [1, 2, 3])  # too short to cluster
    assert a == b and c != a and short is None
    assert g.live_clusters() == 2
    for rid in ("a", "b", "c", "s"):
        g.release(rid)
    assert g.live_clusters() == 0


def test_grouping_disabled():
    g = SiblingGrouper(GroupingConfig(enabled=False))
    assert g.assign("a", "tag", 4, list(range(40))) is None

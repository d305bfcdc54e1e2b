"""Worker knobs and sibling grouping (pure Python, no SGLang)."""

from __future__ import annotations

import json

import pytest

from sgl_consensus.grouping import GroupingConfig, SiblingGrouper
from sgl_consensus.request_params import ConsensusParams
from sgl_consensus.settings import SettingsError, check_draft_width, load_settings


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
    ({"CONSENSUS_LOG_INTERVAL": "nan"}, "CONSENSUS_LOG_INTERVAL must be a finite"),
    ({"CONSENSUS_LOG_INTERVAL": "inf"}, "CONSENSUS_LOG_INTERVAL must be a finite"),
    ({"CONSENSUS_DRAFT_MAX_MATCH_LEN": "100"}, "^CONSENSUS_DRAFT_MAX_MATCH_LEN='100': .*max_match_len"),
    ({"CONSENSUS_ISOLATION": "none"}, "CONSENSUS_ISOLATION"),
    ({"CONSENSUS_GROUPING_MIN_COMMON_PREFIX": "0"}, "^CONSENSUS_GROUPING_MIN_COMMON_PREFIX"),
    ({"CONSENSUS_PLAIN_DECODE": "sometimes"}, "^CONSENSUS_PLAIN_DECODE must be one of .*'sometimes'"),
    ({"CONSENSUS_CHECK_TP": "loud"}, "^CONSENSUS_CHECK_TP must be on or off, got 'loud'"),
    ({"CONSENSUS_DP_DISPATCH": "hash"}, "^CONSENSUS_DP_DISPATCH must be one of .*'hash'"),
    ({"CONSENSUS_CORE": "rust"}, r"^CONSENSUS_CORE must be one of \['auto', 'native', 'python'\], got 'rust'"),
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
    for section, value in (("draft", "abc"), ("grouping", [1]), ("draft", 3)):
        bad.write_text(json.dumps({section: value}))
        with pytest.raises(SettingsError, match=f"'{section}' must be a JSON object"):
            load_settings({"CONSENSUS_CONFIG": str(bad)})
    bad.write_text(json.dumps({"draft": {"max_match_len": 0}}))
    with pytest.raises(SettingsError, match="^CONSENSUS_CONFIG draft.max_match_len=0"):
        load_settings({"CONSENSUS_CONFIG": str(bad)})


@pytest.mark.parametrize("width, ok", [(2, True), ("64", True), (0, False), (1, False), (65, False),
                                       (200, False), ("abc", False), (None, False), (True, False)])
def test_draft_width_range(width, ok):
    if ok:
        assert check_draft_width(width) == int(width)
    else:
        with pytest.raises(SettingsError, match=r"--speculative-num-draft-tokens must be an integer in \[2, 64\]"):
            check_draft_width(width)


def _params(**fields) -> ConsensusParams:
    return ConsensusParams(**fields)


def test_grouping_rules_first_match_wins():
    g = SiblingGrouper()
    prompt = list(range(40))
    assert g.assign("a", _params(group="t1", origin="o"), prompt) == ("tag", None, "str", "t1")  # tag beats n > 1
    n1, n2 = g.assign("b", _params(origin="o1"), prompt), g.assign("c", _params(origin="o1"), prompt)
    assert n1 == n2 and n1[0] == "n"
    # n > 1 children of another request with the very same prompt are not siblings
    assert g.assign("d", _params(origin="o2"), prompt) != n1


def test_group_keys_never_cross_tenants_and_tags_keep_their_type():
    g = SiblingGrouper()
    prompt = list(range(40))
    assert g.assign("a", _params(group="x", tenant="alice"), prompt) != g.assign("b", _params(group="x"), prompt)
    assert g.assign("c", _params(group=1), prompt) != g.assign("d", _params(group="1"), prompt)
    assert g.assign("e", _params(origin="o", tenant="alice"), prompt) != g.assign("f", _params(origin="o"), prompt)
    # prefix clusters are per tenant
    shared = list(range(100, 140))
    assert g.assign("g", _params(tenant="alice"), shared + [1]) != g.assign("h", _params(tenant="bob"), shared + [2])
    assert g.assign("i", _params(tenant="alice"), shared + [3]) == g.assign("j", _params(tenant="alice"), shared)


def test_prefix_clusters_join_forks_and_release():
    g = SiblingGrouper(GroupingConfig(min_common_prefix=16, min_common_fraction=0.8))
    shared = list(range(100, 140))
    a = g.assign("a", _params(), shared + [1, 2])
    b = g.assign("b", _params(), shared + [3])  # a fork branch appending different text
    c = g.assign("c", _params(), list(range(500, 540)))  # unrelated
    short = g.assign("s", _params(), [1, 2, 3])  # too short to cluster
    assert a == b and c != a and short is None
    assert g.live_clusters() == 2
    for rid in ("a", "b", "c", "s"):
        g.release(rid)
    assert g.live_clusters() == 0


def test_strict_isolation_turns_off_prefix_clusters_and_the_global_corpus():
    s = load_settings({"CONSENSUS_ISOLATION": "strict"})
    assert s.isolation == "strict" and not s.grouping.prefix_clusters and not s.draft_config(8).use_global
    g = SiblingGrouper(s.grouping)
    shared = list(range(100, 140))
    assert g.assign("a", _params(), shared) is None and g.assign("b", _params(), shared) is None
    live = g.assign("c", _params(group="t"), shared)
    assert live == g.assign("d", _params(group="t"), shared)  # a live tag group is joined
    g.release("c")
    g.release("d")
    assert g.live_clusters() == 0
    assert g.assign("e", _params(group="t"), shared) != live  # an ended one is never revived
    with pytest.raises(SettingsError, match="CONSENSUS_DRAFT_USE_GLOBAL.*strict"):
        load_settings({"CONSENSUS_ISOLATION": "strict", "CONSENSUS_DRAFT_USE_GLOBAL": "1"})
    assert s.adaptive == "off" and s.widths(8) == (8,)  # a per-batch width would depend on others' drafts
    with pytest.raises(SettingsError, match="CONSENSUS_ADAPTIVE=on contradicts CONSENSUS_ISOLATION=strict"):
        load_settings({"CONSENSUS_ISOLATION": "strict", "CONSENSUS_ADAPTIVE": "on"})


def test_grouping_disabled():
    g = SiblingGrouper(GroupingConfig(enabled=False))
    assert g.assign("a", _params(group="tag"), list(range(40))) is None


def test_worker_settings_choose_the_core() -> None:
    from sgl_consensus.adapter.worker import make_drafter
    from sgl_consensus.settings import load_settings

    assert make_drafter(load_settings({"CONSENSUS_CORE": "Python"}), 8).core.name == "python"
    assert make_drafter(load_settings({}), 8).core.name == "native"

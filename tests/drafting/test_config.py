import dataclasses

import pytest

from sgl_consensus.drafting import DraftConfig


def test_defaults_are_valid_and_frozen():
    config = DraftConfig()
    assert config.num_draft_tokens == 8
    assert config.draft_depth == 7
    assert config.trie_depth == config.max_match_len + 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.alpha = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"alpha": 1.5}, "DraftConfig.alpha must be in [0, 1], got 1.5"),
        ({"num_draft_tokens": 0}, "DraftConfig.num_draft_tokens must be >= 1, got 0"),
        ({"min_match_len": 4, "max_match_len": 3}, "DraftConfig.max_match_len must be >= min_match_len (4), got 3"),
        ({"max_branch": 0}, "DraftConfig.max_branch"),
        ({"fuzzy_max_edits": 9}, "DraftConfig.fuzzy_max_edits"),
        ({"global_weight": -1.0}, "DraftConfig.global_weight must be >= 0, got -1.0"),
        ({"global_max_nodes": 1}, "DraftConfig.global_max_nodes"),
        ({"min_path_score": 1.0}, "DraftConfig.min_path_score"),
    ],
)
def test_bad_values_name_field_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        DraftConfig(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kwargs", [{"num_draft_tokens": 8.0}, {"use_global": 1}, {"alpha": "0.5"}, {"max_branch": True}])
def test_wrong_types_raise_type_error(kwargs):
    with pytest.raises(TypeError, match="DraftConfig." + next(iter(kwargs))):
        DraftConfig(**kwargs)


def test_from_mapping_converts_strings():
    config = DraftConfig.from_mapping(
        {"NUM_DRAFT_TOKENS": "12", "alpha": "0.25", "use_global": "false", "use_siblings": "1", "max_draft_depth": "none"}
    )
    assert config.num_draft_tokens == 12
    assert config.alpha == 0.25
    assert config.use_global is False and config.use_siblings is True
    assert config.max_draft_depth is None
    assert DraftConfig.from_mapping({"max_draft_depth": "3"}).max_draft_depth == 3


def test_from_mapping_rejects_unknown_keys_and_bad_strings():
    with pytest.raises(ValueError, match="no field 'draft_tokens'.*num_draft_tokens"):
        DraftConfig.from_mapping({"draft_tokens": "8"})
    with pytest.raises(ValueError, match="DraftConfig.use_global must be bool, got 'maybe'"):
        DraftConfig.from_mapping({"use_global": "maybe"})
    with pytest.raises(ValueError, match="DraftConfig.num_draft_tokens must be int"):
        DraftConfig.from_mapping({"num_draft_tokens": "eight"})
    with pytest.raises(ValueError, match="DraftConfig.alpha must be in"):
        DraftConfig.from_mapping({"alpha": "2"})

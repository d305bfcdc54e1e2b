"""Bad input raises a clear error naming the request and the problem."""

import numpy as np
import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig


@pytest.fixture
def d() -> ConsensusDrafter:
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=4))
    drafter.add("r", "g", [1, 2, 3])
    return drafter


def test_unknown_rid(d):
    with pytest.raises(KeyError, match="request 'nope' is not tracked"):
        d.extend("nope", [1])
    with pytest.raises(KeyError, match="'nope'"):
        d.propose(["r", "nope"])
    with pytest.raises(KeyError, match="'nope'"):
        d.remove("nope")
    d.remove("r")
    with pytest.raises(KeyError, match="already removed"):
        d.remove("r")


def test_duplicate_add_and_empty_prompt(d):
    with pytest.raises(ValueError, match="request 'r' was already added"):
        d.add("r", "g", [1])
    with pytest.raises(ValueError, match="request 'e': prompt_ids is empty"):
        d.add("e", "g", [])
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        d.add("e2", None, np.array([], dtype=np.int64))


@pytest.mark.parametrize(
    "tokens, error, fragment",
    [
        ([1.0, 2.0], TypeError, "must hold ints, got 1.0"),
        (np.array([1.5]), TypeError, "must hold integers, got dtype float64"),
        ([True], TypeError, "must hold ints"),
        ([-1], ValueError, "must be in [0, 2147483647], got -1"),
        ([2**31], ValueError, "got 2147483648"),
        (np.array([2**40]), ValueError, "max 1099511627776"),
        (np.array([[1, 2]]), ValueError, "must be 1-D"),
        ("12", TypeError, "must be a list, tuple or NumPy integer array, got str"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_bad_token_ids(d, tokens, error, fragment):
    with pytest.raises(error) as info:
        d.extend("r", tokens)
    assert "request 'r'" in str(info.value) and fragment in str(info.value)


def test_bad_prompt_ids_name_the_field():
    d = ConsensusDrafter()
    with pytest.raises(ValueError, match="request 'x': prompt_ids must be in"):
        d.add("x", None, [1, -5])
    assert "x" not in d  # a failed add leaves no trace
    assert d.stats()["live_groups"] == 0


def test_accepted_token_forms(d):
    d.extend("r", (4, 5))
    d.extend("r", np.array([6, 7], dtype=np.int32))
    d.extend("r", [np.int64(8)])
    d.extend("r", np.array([9], dtype=np.uint16))
    d.extend("r", [])
    tokens, _ = d.propose(["r"])
    assert tokens[0][0] == 9


@pytest.mark.parametrize(
    "logprobs, error, fragment",
    [
        ([-0.1], ValueError, "got 1 logprobs for 2 tokens"),
        ([-0.1, -0.2, -0.3], ValueError, "got 3 logprobs for 2 tokens"),
        ([0.5, -0.1], ValueError, "must be <= 0"),
        ([float("nan"), -0.1], ValueError, "must be <= 0"),
        (["a", -0.1], TypeError, "must be numbers"),
        (-0.1, TypeError, "logprobs must be a list"),
    ],
)
def test_bad_logprobs(d, logprobs, error, fragment):
    with pytest.raises(error) as info:
        d.extend("r", [4, 5], logprobs)
    assert "request 'r'" in str(info.value) and fragment in str(info.value)
    # Nothing was written by the failed call.
    assert d.stats()["tokens_extended"] == 0


def test_unhashable_ids_and_bad_config():
    d = ConsensusDrafter()
    with pytest.raises(TypeError, match="rid must be hashable"):
        d.add(["list"], None, [1])
    with pytest.raises(TypeError, match="group of request 'x' must be hashable"):
        d.add("x", {"a": 1}, [1])
    with pytest.raises(TypeError, match="config must be a DraftConfig"):
        ConsensusDrafter({"num_draft_tokens": 8})  # type: ignore[arg-type]

"""Every drafter implements the declared `Drafter` protocol, with its parameters (widths and
budgets included), and behaves as it says on width and budget."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter
from sgl_consensus.drafting.protocol import Drafter, RankedDrafter

DRAFTERS = {
    "consensus": lambda: ConsensusDrafter(DraftConfig(num_draft_tokens=6)),
    "consensus_python_core": lambda: ConsensusDrafter(DraftConfig(num_draft_tokens=6), core="python"),
    "prompt_lookup": lambda: PromptLookupDrafter(num_draft_tokens=6),
}


def _members(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items()
            if callable(value) and (not name.startswith("_") or name in ("__contains__", "__len__"))]


@pytest.mark.parametrize("name", sorted(DRAFTERS))
def test_drafters_implement_the_protocol_with_its_parameters(name: str) -> None:
    drafter = DRAFTERS[name]()
    assert isinstance(drafter, Drafter)
    protocols = [Drafter, RankedDrafter] if name.startswith("consensus") else [Drafter]
    for protocol in protocols:
        for member in _members(protocol):
            declared = list(inspect.signature(getattr(protocol, member)).parameters)
            actual = list(inspect.signature(getattr(type(drafter), member)).parameters)
            assert actual == declared, f"{type(drafter).__name__}.{member}{actual} != protocol {declared}"


@pytest.mark.parametrize("name", sorted(DRAFTERS))
def test_width_and_budgets_shape_every_drafters_rows(name: str) -> None:
    drafter = DRAFTERS[name]()
    for rid in ("a", "b"):
        drafter.add(rid, "g", [1, 2, 3, 1, 2, 3, 1, 2])
        drafter.extend(rid, [3, 1, 2, 3])
    drafter.maintain()
    tokens, mask = drafter.propose(["a", "b"], width=4)
    assert tokens.shape == (2, 4) and mask.shape == (2, 4, 4)
    assert (mask.sum(axis=2) > 1).any(), "a repetitive history gives drafts"
    tokens, mask = drafter.propose(["a", "b"], budgets=[1, 3], width=4)
    row_a_nodes = mask[0].any(axis=0) & ~np.eye(4, dtype=bool).any(axis=0)
    assert not mask[0][1:, 0].any() and not row_a_nodes.any(), "budget 1: the root alone, padding detached"
    assert mask[1][1:3, 0].all() and not mask[1][3, 0], "budget 3: two draft nodes below the root"
    with pytest.raises(ValueError, match=r"width must be an integer in \[1, 6\].*got 7"):
        drafter.propose(["a"], width=7)
    with pytest.raises(ValueError, match=r"budgets must hold 1 integers in \[1, 4\], got \[5\]"):
        drafter.propose(["a"], budgets=[5], width=4)
    assert "a" in drafter and len(drafter) == 2

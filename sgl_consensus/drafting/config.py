"""Configuration of the consensus drafter.

`DraftConfig` is a frozen dataclass validated on construction: every bad value raises a
`ValueError`/`TypeError` naming the field and the value. `DraftConfig.from_mapping` builds one from
a plain mapping of strings or values (the worker feeds it `CONSENSUS_*` environment variables)
and rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
_FALSE_STRINGS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class DraftConfig:
    """Knobs of `ConsensusDrafter`. Only `num_draft_tokens` usually needs setting."""

    # Draft tree size, root (last committed token) included: SGLang's `speculative_num_draft_tokens`.
    num_draft_tokens: int = 8
    # Edge weight = alpha * recorded model probability + (1 - alpha) * observed frequency.
    alpha: float = 0.5
    # Suffix match lengths: the longest match in [min_match_len, max_match_len] is used.
    max_match_len: int = 6
    min_match_len: int = 1
    # Children kept per draft node (breadth where the siblings disagree).
    max_branch: int = 4
    # Deepest draft path; None = num_draft_tokens - 1 (a chain can use the whole budget).
    max_draft_depth: int | None = None
    # Fuzzy suffix matching (edit distance), used when no exact match exists. 0 = off.
    fuzzy_max_edits: int = 0
    # Evidence sources.
    use_siblings: bool = True
    use_global: bool = True
    use_own_history: bool = True
    # Relative trust in each source when they are merged under one score.
    sibling_weight: float = 1.0
    global_weight: float = 0.5
    own_weight: float = 0.6
    # Pseudo-count shrinking estimates backed by little evidence (k observations -> k / (k + prior)).
    prior_count: float = 0.2
    # Pseudo-length shrinking matches on short contexts (match length m -> m / (m + depth_prior)).
    depth_prior: float = 1.0
    # Model-informed nodes (drafting/successors.py): the target's top successors of a token from
    # earlier verifies fill the tree where the siblings are silent, scored parent score x successor
    # probability x model_weight. 0 = off. model_topk successors are kept per token, for at most
    # model_max_entries tokens per request.
    model_weight: float = 0.0
    model_topk: int = 2
    model_max_entries: int = 4096
    # Draft nodes whose path score (estimated acceptance probability) falls below this are not proposed.
    min_path_score: float = 0.0
    # Memory caps, in trie nodes: per sibling group and for the global corpus (bytes per node:
    # docs/drafting-step.md).
    group_max_nodes: int = 1 << 20
    global_max_nodes: int = 1 << 19
    # Finished groups are merged into the global corpus incrementally, paid by later writes: each
    # token `extend`ed buys up to this many trie-child visits of pending merges (run in batches of
    # 256). A group needs a few visits per token it wrote; a fast pace makes a finished group
    # useful to the next ones sooner at no extra total cost, and the batches bound the spikes.
    merge_visits_per_token: int = 64
    # From a finished group of several paths, only n-grams written at least this often reach the
    # global corpus (its consensus: a fraction of the group's trie, so cheap to merge).
    global_min_count: int = 2
    # Shortest match used in the global corpus (short contexts there match everything, weakly).
    global_min_match_len: int = 1
    # The global corpus is consulted only when the group's match is shorter than this: a full-length
    # sibling/own match already carries the evidence, and skipping the lookup saves more drafting
    # time than it costs tau (docs/drafting-step.md). None = max_match_len; 65 = always consult it.
    global_skip_depth: int | None = None
    # Depth of the global corpus trie; None = the group tries' depth (max_match_len + draft depth).
    global_max_depth: int | None = None
    # Only a prompt's last this many tokens are written into the tries (the n-grams near the end of
    # a prompt are the ones outputs repeat; bounds the work of a new request). None = all of it.
    prompt_index_tokens: int | None = 1024
    # Finished groups waiting to be merged beyond this many are dropped (oldest first).
    max_pending_merges: int = 4
    # Each tenant has its own global corpus (drafts never carry one tenant's text to another);
    # beyond this many tenants the least recently active tenant's corpus is dropped. Memory is at
    # most this times global_max_nodes trie nodes.
    max_tenant_corpora: int = 8
    # A group whose members have all finished lingers (by key, up to this many groups, least recently
    # emptied dropped first) so that siblings arriving later (staggered starts, lead-lag followers,
    # more branches than running slots) still draft from the finished paths' full trie. An emptied
    # group is queued for the global corpus at once either way (a revived one is merged again when
    # it empties, so its earlier paths count twice there). 0 = no lingering.
    linger_groups: int = 16

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), field.type)
        _require(self.num_draft_tokens >= 1, "num_draft_tokens", self.num_draft_tokens, "must be >= 1")
        _require(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "must be in [0, 1]")
        _require(self.min_match_len >= 1, "min_match_len", self.min_match_len, "must be >= 1")
        _require(
            self.max_match_len >= self.min_match_len,
            "max_match_len",
            self.max_match_len,
            f"must be >= min_match_len ({self.min_match_len})",
        )
        _require(self.max_match_len <= 64, "max_match_len", self.max_match_len, "must be <= 64")
        _require(self.global_min_match_len >= 1, "global_min_match_len", self.global_min_match_len, "must be >= 1")
        _require(self.max_branch >= 1, "max_branch", self.max_branch, "must be >= 1")
        _require(0.0 <= self.model_weight <= 1.0, "model_weight", self.model_weight, "must be in [0, 1]")
        _require(1 <= self.model_topk <= 16, "model_topk", self.model_topk, "must be in [1, 16]")
        _require(self.model_max_entries >= 1, "model_max_entries", self.model_max_entries, "must be >= 1")
        if self.max_draft_depth is not None:
            _require(self.max_draft_depth >= 1, "max_draft_depth", self.max_draft_depth, "must be >= 1")
        _require(0 <= self.fuzzy_max_edits <= 3, "fuzzy_max_edits", self.fuzzy_max_edits, "must be in [0, 3]")
        for name in ("sibling_weight", "global_weight", "own_weight"):
            _require(getattr(self, name) >= 0.0, name, getattr(self, name), "must be >= 0")
        _require(self.prior_count >= 0.0, "prior_count", self.prior_count, "must be >= 0")
        _require(self.depth_prior >= 0.0, "depth_prior", self.depth_prior, "must be >= 0")
        _require(0.0 <= self.min_path_score < 1.0, "min_path_score", self.min_path_score, "must be in [0, 1)")
        _require(self.group_max_nodes >= 1, "group_max_nodes", self.group_max_nodes, "must be >= 1")
        _require(self.global_max_nodes >= 2, "global_max_nodes", self.global_max_nodes, "must be >= 2")
        _require(
            self.merge_visits_per_token >= 1, "merge_visits_per_token", self.merge_visits_per_token, "must be >= 1"
        )
        if self.global_skip_depth is not None:
            _require(self.global_skip_depth >= 1, "global_skip_depth", self.global_skip_depth, "must be >= 1")
        if self.global_max_depth is not None:
            _require(self.global_max_depth >= 2, "global_max_depth", self.global_max_depth, "must be >= 2")
        _require(self.global_min_count >= 1, "global_min_count", self.global_min_count, "must be >= 1")
        _require(self.linger_groups >= 0, "linger_groups", self.linger_groups, "must be >= 0")
        _require(self.max_pending_merges >= 0, "max_pending_merges", self.max_pending_merges, "must be >= 0")
        if self.prompt_index_tokens is not None:
            _require(self.prompt_index_tokens >= 1, "prompt_index_tokens", self.prompt_index_tokens, "must be >= 1")
        _require(self.max_tenant_corpora >= 1, "max_tenant_corpora", self.max_tenant_corpora, "must be >= 1")

    @property
    def draft_depth(self) -> int:
        """Deepest draft path below the root."""
        cap = self.num_draft_tokens - 1
        return max(1, min(cap, self.max_draft_depth) if self.max_draft_depth is not None else cap)

    @property
    def trie_depth(self) -> int:
        """Depth of the n-gram tries: a match of max_match_len plus a full-depth draft below it."""
        return self.max_match_len + self.draft_depth

    @property
    def global_lookup_below(self) -> int:
        """The global corpus is consulted when the group's match is shorter than this."""
        return self.max_match_len if self.global_skip_depth is None else self.global_skip_depth

    @property
    def global_trie_depth(self) -> int:
        return self.trie_depth if self.global_max_depth is None else min(self.trie_depth, self.global_max_depth)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DraftConfig:
        """Build a config from a mapping whose values may be strings (e.g. environment variables).

        Keys are field names (case-insensitive). Unknown keys raise `ValueError` listing the valid ones.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, raw_value in values.items():
            key = str(raw_key).strip().lower()
            if key not in fields:
                raise ValueError(
                    f"DraftConfig has no field {raw_key!r}; valid fields: {', '.join(sorted(fields))}"
                )
            kwargs[key] = _convert(key, raw_value, fields[key].type)
        return cls(**kwargs)


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"DraftConfig.{name} {what}, got {value!r}")


def _base_type(annotation: str) -> str:
    # Annotations are strings under `from __future__ import annotations`: "int", "int | None", ...
    return annotation.replace(" | None", "").strip()


def _check_type(name: str, value: Any, annotation: str) -> None:
    optional = "None" in annotation
    if value is None and optional:
        return
    base = _base_type(annotation)
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # pragma: no cover - every field is one of the above
        ok = True
    if not ok:
        raise TypeError(f"DraftConfig.{name} must be {annotation}, got {value!r} ({type(value).__name__})")


def _convert(name: str, value: Any, annotation: str) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if "None" in annotation and text.lower() in ("", "none"):
        return None
    base = _base_type(annotation)
    try:
        if base == "bool":
            lowered = text.lower()
            if lowered in _TRUE_STRINGS:
                return True
            if lowered in _FALSE_STRINGS:
                return False
            raise ValueError
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"DraftConfig.{name} must be {annotation}, got {value!r}") from None
    return value  # pragma: no cover

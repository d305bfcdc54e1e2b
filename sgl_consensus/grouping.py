"""Which requests are siblings: the group key the drafter shares evidence within.

SGLang has no notion of a sibling group, so the worker infers one per request, first match wins:

1. an explicit tag, ``sampling_params.custom_params["consensus_group"]`` (what
   ``ConsensusRuntimeEndpoint`` sends for every branch of one ``s.fork(n)``);
2. ``n > 1`` requests: SGLang expands them into ``n`` requests with identical prompts;
3. untagged requests whose prompts share a long common prefix with a live group's (frontend forks
   append different text after a shared prefix): joined by longest common prefix.

Everything else has no siblings (group ``None``). Pure Python: no SGLang import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

PREFIX_KEY_LEN = 16  # prompts are bucketed by their first tokens before an exact prefix comparison
GROUP_TAG = "consensus_group"  # the explicit tag's key in ``sampling_params.custom_params``


def explicit_group_key(tag: Hashable | None, n: int, prompt_ids: Sequence[int]) -> Hashable | None:
    """The group key of rules 1 and 2 (explicit tag, ``n > 1``), known before a request decodes;
    None when neither applies (prefix clusters, rule 3, need the live groups)."""
    if tag is not None:
        return ("tag", tag)
    if n > 1:
        prompt = tuple(prompt_ids)
        return ("n", hash(prompt), len(prompt))
    return None


@dataclass(frozen=True)
class GroupingConfig:
    enabled: bool = True
    # An untagged request joins a prefix cluster when the common prefix with its prompt is at least
    # this many tokens and this fraction of the shorter prompt.
    min_common_prefix: int = 16
    min_common_fraction: float = 0.8

    def __post_init__(self) -> None:
        if self.min_common_prefix < 1:
            raise ValueError(f"GroupingConfig.min_common_prefix must be >= 1, got {self.min_common_prefix}")
        if not 0.0 < self.min_common_fraction <= 1.0:
            raise ValueError(
                f"GroupingConfig.min_common_fraction must be in (0, 1], got {self.min_common_fraction}"
            )


@dataclass
class _PrefixCluster:
    key: tuple
    prompt: tuple[int, ...]
    members: set = field(default_factory=set)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SiblingGrouper:
    """Assigns group keys to requests and forgets them when they are released."""

    def __init__(self, config: GroupingConfig = GroupingConfig()) -> None:
        self.config = config
        self._clusters: dict[tuple, list[_PrefixCluster]] = {}  # bucket -> clusters
        self._member_of: dict[Hashable, _PrefixCluster] = {}
        self._next_cluster = 0

    def assign(self, rid: Hashable, tag: Hashable | None, n: int, prompt_ids: Sequence[int]) -> Hashable | None:
        if not self.config.enabled:
            return None
        key = explicit_group_key(tag, n, prompt_ids)
        return key if key is not None else self._join_prefix_cluster(rid, tuple(prompt_ids))

    def release(self, rid: Hashable) -> None:
        cluster = self._member_of.pop(rid, None)
        if cluster is None:
            return
        cluster.members.discard(rid)
        if not cluster.members:
            bucket = self._clusters[cluster.prompt[:PREFIX_KEY_LEN]]
            bucket.remove(cluster)
            if not bucket:
                del self._clusters[cluster.prompt[:PREFIX_KEY_LEN]]

    def live_clusters(self) -> int:
        return sum(len(b) for b in self._clusters.values())

    def _join_prefix_cluster(self, rid: Hashable, prompt: tuple[int, ...]) -> Hashable | None:
        if len(prompt) < self.config.min_common_prefix:
            return None
        bucket = self._clusters.setdefault(prompt[:PREFIX_KEY_LEN], [])
        for cluster in bucket:
            common = _common_prefix_len(cluster.prompt, prompt)
            shorter = min(len(cluster.prompt), len(prompt))
            if common >= self.config.min_common_prefix and common >= self.config.min_common_fraction * shorter:
                cluster.members.add(rid)
                self._member_of[rid] = cluster
                return cluster.key
        cluster = _PrefixCluster(key=("prefix", self._next_cluster), prompt=prompt, members={rid})
        self._next_cluster += 1
        bucket.append(cluster)
        self._member_of[rid] = cluster
        return cluster.key

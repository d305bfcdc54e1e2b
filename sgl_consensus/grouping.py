"""Which requests are siblings: the group key the drafter shares evidence within.

SGLang has no notion of a sibling group, so the worker infers one per request, first match wins:

1. an explicit tag, ``custom_params["consensus_group"]`` (what ``ConsensusRuntimeEndpoint`` sends
   for every branch of one ``s.fork(n)``);
2. the ``n > 1`` children of one request (the server stamps them with the request they came from,
   ``custom_params["consensus_origin"]``: never grouped by prompt, so two users' identical
   ``n > 1`` prompts stay apart);
3. untagged requests whose prompts share a long common prefix with a live group's (frontend forks
   append different text after a shared prefix): joined by longest common prefix. Off under
   ``strict`` isolation.

A tag is chosen by the client, so anyone of the same tenant who knows it joins its group. Under
``strict`` isolation a tag joins only a *live* group: once its last member has left, the next
request with that tag starts a new group (it cannot revive the finished paths' evidence).

Every key includes the request's tenant (``custom_params["consensus_tenant"]``; None = the
default tenant), so no rule ever puts two tenants' requests in one group. Everything else has no
siblings (group ``None``). Pure Python: no SGLang import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

from sgl_consensus.request_params import ConsensusParams

PREFIX_KEY_LEN = 16  # prompts are bucketed by their first tokens before an exact prefix comparison
ISOLATION_MODES = ("tenant", "strict")


def explicit_group_key(params: ConsensusParams) -> Hashable | None:
    """The group key of rules 1 and 2 (explicit tag, ``n > 1`` origin), known before a request
    decodes; None when neither applies (prefix clusters, rule 3, need the live groups).

    The tag's type is part of the key: ``"1"`` and ``1`` are different groups."""
    if params.group is not None:
        return ("tag", params.tenant, type(params.group).__name__, params.group)
    if params.origin is not None:
        return ("n", params.tenant, params.origin)
    return None


@dataclass(frozen=True)
class GroupingConfig:
    enabled: bool = True
    # An untagged request joins a prefix cluster when the common prefix with its prompt is at least
    # this many tokens and this fraction of the shorter prompt.
    min_common_prefix: int = 16
    min_common_fraction: float = 0.8
    # Rule 3 (prefix clusters of untagged requests); off under strict isolation.
    prefix_clusters: bool = True
    # A tag whose group has emptied revives it (its finished paths keep drafting for late siblings);
    # off under strict isolation.
    revive_tags: bool = True

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
    bucket: tuple
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
        self._clusters: dict[tuple, list[_PrefixCluster]] = {}  # (tenant, first tokens) -> clusters
        self._member_of: dict[Hashable, _PrefixCluster] = {}
        self._next_cluster = 0
        # Without tag revival: live tag key -> (its current group key, members); a new group key
        # (the tag key plus a serial number) each time the tag's group starts anew.
        self._live_tags: dict[Hashable, tuple[Hashable, set]] = {}
        self._tag_of: dict[Hashable, Hashable] = {}

    def assign(self, rid: Hashable, params: ConsensusParams, prompt_ids: Sequence[int]) -> Hashable | None:
        if not self.config.enabled:
            return None
        key = explicit_group_key(params)
        if key is not None and params.group is not None and not self.config.revive_tags:
            return self._join_live_tag(rid, key)
        if key is not None or not self.config.prefix_clusters:
            return key
        return self._join_prefix_cluster(rid, params.tenant, tuple(prompt_ids))

    def _join_live_tag(self, rid: Hashable, tag_key: Hashable) -> Hashable:
        live = self._live_tags.get(tag_key)
        if live is None:
            live = self._live_tags[tag_key] = ((*tag_key, self._next_cluster), set())
            self._next_cluster += 1
        live[1].add(rid)
        self._tag_of[rid] = tag_key
        return live[0]

    def release(self, rid: Hashable) -> None:
        tag_key = self._tag_of.pop(rid, None)
        if tag_key is not None:
            members = self._live_tags[tag_key][1]
            members.discard(rid)
            if not members:
                del self._live_tags[tag_key]
        cluster = self._member_of.pop(rid, None)
        if cluster is None:
            return
        cluster.members.discard(rid)
        if not cluster.members:
            bucket = self._clusters[cluster.bucket]
            bucket.remove(cluster)
            if not bucket:
                del self._clusters[cluster.bucket]

    def live_clusters(self) -> int:
        """Live prefix clusters and (without tag revival) live tag groups."""
        return sum(len(b) for b in self._clusters.values()) + len(self._live_tags)

    def _join_prefix_cluster(self, rid: Hashable, tenant: str | None, prompt: tuple[int, ...]) -> Hashable | None:
        if len(prompt) < self.config.min_common_prefix:
            return None
        bucket_key = (tenant, prompt[:PREFIX_KEY_LEN])
        bucket = self._clusters.setdefault(bucket_key, [])
        for cluster in bucket:
            common = _common_prefix_len(cluster.prompt, prompt)
            shorter = min(len(cluster.prompt), len(prompt))
            if common >= self.config.min_common_prefix and common >= self.config.min_common_fraction * shorter:
                cluster.members.add(rid)
                self._member_of[rid] = cluster
                return cluster.key
        cluster = _PrefixCluster(key=("prefix", tenant, self._next_cluster), bucket=bucket_key, prompt=prompt,
                                 members={rid})
        self._next_cluster += 1
        bucket.append(cluster)
        self._member_of[rid] = cluster
        return cluster.key

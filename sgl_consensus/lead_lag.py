"""Lead-lag scheduling for sibling groups: one leader runs ahead, the followers ride its drafts.

Siblings that start together draft little for each other (they are all at the same place); a
sibling that is already ahead drafts long accepted chains. With a lead of ``H`` tokens, the first
request of a group to reach the scheduler (the leader) is admitted as usual and its siblings (the
followers) wait in the queue until the leader has committed ``H`` output tokens, or has finished
or been aborted, whichever comes first. Nothing else changes: every follower then runs to its own
end under the same lossless verification, so the policy moves work in time and never changes
what any path samples.

This module is the policy, pure Python with no SGLang import: :class:`LeadLagGate` decides which
waiting requests are held back, given small accessors for a request's group, lead and progress.
``sgl_consensus.adapter.lead_lag_hook`` applies it to SGLang's scheduler queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Sequence


def parse_lead(value: Any, what: str = "lead") -> float:
    """A lead in tokens: an int >= 0, or ``"inf"``/``math.inf`` (the leader finishes first).

    Raises ``ValueError`` naming ``what`` and the value otherwise; 0 means no lead (lock-step).
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of tokens >= 0 or 'inf', got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("inf", "infinity"):
            return math.inf
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{what} must be a number of tokens >= 0 or 'inf', got {value!r}") from None
    if isinstance(value, float) and value == math.inf:
        return math.inf
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a number of tokens >= 0 or 'inf', got {value!r}")
    return value


def format_lead(lead: float) -> str:
    """The inverse of :func:`parse_lead`: ``"inf"`` or the token count as text."""
    return "inf" if lead == math.inf else str(int(lead))


@dataclass(frozen=True)
class RequestView:
    """How the gate reads a request (SGLang's ``Req`` in the server, anything in tests)."""

    group_of: Callable[[Any], Hashable | None]  # sibling group key, None = no siblings
    lead_of: Callable[[Any], float]  # the lead this request's group asks for (0 = none)
    progress_of: Callable[[Any], int]  # output tokens committed so far
    is_done: Callable[[Any], bool]  # finished or aborted
    decodes: Callable[[Any], bool]  # False for requests that only prefill (SGLang's n > 1 warm-up)


class LeadLagGate:
    """Which queued requests wait for their group's leader. One instance per scheduler."""

    def __init__(self, view: RequestView) -> None:
        self.view = view
        self._leaders: dict[Hashable, Any] = {}
        self.held_total = 0  # request-holds so far (a request held over k scheduling rounds counts k)
        self.groups_led = 0

    def held(self, waiting: Sequence[Any], running: Callable[[], Iterable[Any]]) -> list[Any]:
        """The requests of ``waiting`` that must stay queued this round (in queue order).

        ``running()``: every request the scheduler holds outside the queue (called only when a
        group needs it). A leader found in neither is gone (e.g. aborted while queued, which need
        not mark it finished): its followers go.
        """
        view = self.view
        held = []
        queued_groups: set[Hashable] = set()
        present: set[int] | None = None
        for req in waiting:
            lead = view.lead_of(req)
            if lead <= 0 or not view.decodes(req):
                continue
            group = view.group_of(req)
            if group is None:
                continue
            queued_groups.add(group)
            leader = self._leaders.get(group)
            if leader is None:
                self._leaders[group] = req  # the first of its group to queue leads
                self.groups_led += 1
                continue
            if leader is req:
                continue
            if present is None:
                present = self._present(waiting, running)
            if not self._leader_gone(leader, present) and view.progress_of(leader) < lead:
                held.append(req)
        self.held_total += len(held)
        if self._leaders:
            self._forget(queued_groups, present if present is not None else self._present(waiting, running))
        return held

    def sweep(self, running: Callable[[], Iterable[Any]]) -> None:
        """Forget gone leaders while nothing waits (keeps a reused group key from inheriting one)."""
        if self._leaders:
            self._forget(set(), self._present((), running))

    @staticmethod
    def _present(waiting: Sequence[Any], running: Callable[[], Iterable[Any]]) -> set[int]:
        present = {id(req) for req in waiting}
        present.update(id(req) for req in running())
        return present

    def _leader_gone(self, leader: Any, present: set[int]) -> bool:
        return self.view.is_done(leader) or id(leader) not in present

    def _forget(self, queued_groups: set[Hashable], present: set[int]) -> None:
        """A leader is forgotten once it is gone and none of its group waits (bounded state).

        A sibling arriving after that leads anew; it still drafts from its group's finished paths
        (the drafter keeps emptied groups for a while).
        """
        for group, leader in list(self._leaders.items()):
            if group not in queued_groups and self._leader_gone(leader, present):
                del self._leaders[group]

    def tracked_groups(self) -> int:
        return len(self._leaders)

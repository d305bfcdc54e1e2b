"""Run one self-consistency vote on SGLang with early stopping (``sgl_consensus.early_stop``).

:func:`run_vote` keeps up to ``in_flight`` paths of one problem running (all ``paths`` at once by
default; fewer = paths launched in waves, so a decided vote never starts the rest), records each
path's answer as it finishes, and when the rule fires aborts the paths still running: SGLang frees
their KV and the consensus worker their drafter state at once. Every path of the vote carries one
``consensus_group`` tag, so the consensus worker drafts them for each other (and ``lead`` lets the
first path run ahead).

Backend: :class:`EngineBackend` (an in-process ``sglang.Engine``); any object with the
:class:`PathBackend` methods works. Programs against a server use ``ConsensusRuntimeEndpoint(early_stop=...)``.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sgl_consensus.early_stop import Answer, Extractor, Rule, Vote
from sgl_consensus.lead_lag import format_lead
from sgl_consensus.request_params import GROUP_TAG, LEAD_PARAM


class PathBackend(Protocol):
    async def generate(self, prompt: str, params: dict, rid: str) -> dict: ...

    def abort(self, rid: str) -> None: ...


class EngineBackend:
    """An in-process ``sglang.Engine``."""

    def __init__(self, engine) -> None:
        self.engine = engine

    async def generate(self, prompt: str, params: dict, rid: str) -> dict:
        return await self.engine.async_generate(prompt, params, rid=rid)

    def abort(self, rid: str) -> None:
        from sgl_consensus.adapter.abort import abort_engine_request

        abort_engine_request(self.engine, rid)


@dataclass
class PathResult:
    index: int
    text: str
    output_tokens: int
    voted: bool  # finished before the rule fired (aborted paths do not vote)
    answer: Answer = None
    aborted: bool = False  # cut short by the rule


@dataclass
class VoteResult:
    answer: Answer  # the leader when the vote stopped
    paths: list[PathResult]  # launched paths, by index
    stopped_after: int  # votes recorded when the rule fired (= paths when it never fired)
    never_launched: int
    finish_order: list[int] = field(default_factory=list)  # path indices, as they voted

    @property
    def output_tokens(self) -> int:
        return sum(p.output_tokens for p in self.paths)

    @property
    def votes(self) -> list[Answer]:
        return [p.answer for p in self.paths if p.voted]


def _output_tokens(out: dict) -> int:
    meta = out.get("meta_info") or {}
    if "completion_tokens" in meta:
        return int(meta["completion_tokens"])
    return len(out.get("output_ids") or [])


def was_aborted(meta_info: dict | None) -> bool:
    """Whether SGLang ended the request by an abort (its ``meta_info["finish_reason"]``)."""
    reason = (meta_info or {}).get("finish_reason") or {}
    return isinstance(reason, dict) and reason.get("type") == "abort"


async def run_vote(backend: PathBackend, prompt: str, params: dict, paths: int, rule: Rule,
                   extract: Extractor, in_flight: int | None = None, lead: float = 0,
                   group: str | None = None) -> VoteResult:
    """One problem's vote: ``paths`` sampled paths at most, ``in_flight`` at a time."""
    group = group or f"vote-{uuid.uuid4().hex[:12]}"
    in_flight = paths if in_flight is None else max(1, min(in_flight, paths))
    custom = {**(params.get("custom_params") or {}), GROUP_TAG: group}
    if lead:
        custom[LEAD_PARAM] = format_lead(lead)
    params = {**params, "custom_params": custom}
    vote = Vote(rule, paths)
    rid = {i: f"{group}-{i}" for i in range(paths)}
    launch = iter(range(paths))
    running: dict[asyncio.Task, int] = {}
    results: dict[int, PathResult] = {}

    def start(count: int) -> None:
        for i in itertools.islice(launch, count):
            running[asyncio.ensure_future(backend.generate(prompt, params, rid[i]))] = i

    start(in_flight)
    while running:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            i = running.pop(task)
            try:
                out = task.result()
            except Exception:
                if not vote.stopped:
                    raise
                out = {"text": "", "meta_info": {"finish_reason": {"type": "abort"}}}  # aborted by us
            aborted = was_aborted(out.get("meta_info"))
            if vote.stopped or aborted:
                results[i] = PathResult(i, out.get("text", ""), _output_tokens(out), voted=False, aborted=aborted)
                continue
            answer = extract(out.get("text", ""))
            results[i] = PathResult(i, out.get("text", ""), _output_tokens(out), voted=True, answer=answer)
            if vote.record(i, answer):
                for other in running.values():
                    backend.abort(rid[other])
        if not vote.stopped:
            start(in_flight - len(running))
    launched = len(results)
    return VoteResult(answer=vote.leader(), paths=[results[i] for i in sorted(results)],
                      stopped_after=vote.stopped_after or len(vote.answers), never_launched=paths - launched,
                      finish_order=list(vote.answers))


async def run_votes(backend: PathBackend, prompts: Sequence[str], params: dict, paths: int, rule: Rule,
                    extract: Extractor, in_flight: int | None = None, lead: float = 0) -> list[VoteResult]:
    """Many problems' votes at once (the server batches their paths together)."""
    return list(await asyncio.gather(*(run_vote(backend, p, params, paths, rule, extract, in_flight, lead)
                                       for p in prompts)))

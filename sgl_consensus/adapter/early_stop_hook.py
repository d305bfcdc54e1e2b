"""Server-side early stop for one ``n > 1`` request: the children vote as they finish, and the rest
are aborted once the request's rule fires (``custom_params["consensus_early_stop"]``, a rule of
``sgl_consensus.early_stop``).

Two hooks on SGLang's tokenizer manager, the process that answers HTTP and ``Engine`` calls:

- :func:`attach_vote` (called by ``adapter.admission`` when it admits the request): the request
  object the children are shallow copies of gets one :class:`ServerVote`, so every child's request
  state carries the same vote (the prefill-only warm-up too; it produces no tokens and never votes).
- :func:`vote_on_finished` (an AROUND hook on the async ``_handle_batch_output``): before SGLang
  handles a batch of outputs, each child that finishes in it with tokens votes with the answer
  extracted from its text (the text so far plus this batch's piece); when the rule fires, its
  still-running and still-waiting siblings are aborted through SGLang's own ``abort_request`` (KV
  freed at once; the drafter forgets them as they leave). Each child's
  ``meta_info["consensus_vote"]`` says whether it voted, with what, and whether the early stop
  aborted it (written as SGLang queues the output); the response still has ``n`` entries.

Needs detokenized outputs (not ``--skip-tokenizer-init``, where children finish without a vote).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from sgl_consensus.early_stop import Vote, parse_rule

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._handle_batch_output"
VOTE_ATTR = "_consensus_vote"  # on GenerateReqInput: copied (shared) into every child's state.obj


@dataclass
class ServerVote:
    """The vote of one ``n > 1`` request: children numbered in the order they first finish."""

    vote: Vote
    answer: str  # "number" or "text" (request_params.ANSWER_KINDS)
    order: itertools.count = field(default_factory=itertools.count)
    aborted: set[str] = field(default_factory=set)  # rids this vote aborted


def attach_vote(obj: Any, rule_spec: str, paths: int, answer: str = "number") -> None:
    """Give the request object (and so each of its ``n`` children) one vote under ``rule_spec``."""
    setattr(obj, VOTE_ATTR, ServerVote(Vote(parse_rule(rule_spec), paths), answer))


def extract_answer(text: str, kind: str):
    """A child's vote: the number its text ends with, or the whole text (None if there is none)."""
    if kind == "text":
        return text.strip() or None
    from sgl_consensus.workload.datasets import extract_free_form_answer

    return extract_free_form_answer(text)


def vote_on_finished(original, manager, recv_obj, *args, **kwargs):
    """AROUND hook: count the votes of the children that finish in this batch, abort the rest of a
    decided vote, then let SGLang handle the outputs (an awaitable, returned as is)."""
    reasons = getattr(recv_obj, "finished_reasons", None)
    if reasons and any(r is not None for r in reasons):
        pieces = getattr(recv_obj, "output_strs", None)
        tokens = getattr(recv_obj, "completion_tokens", None)
        finishing = {rid for rid, reason in zip(recv_obj.rids, reasons) if reason is not None}
        for i, rid in enumerate(recv_obj.rids):
            state = manager.rid_to_state.get(rid) if reasons[i] is not None else None
            server_vote = getattr(getattr(state, "obj", None), VOTE_ATTR, None)
            if server_vote is not None:
                piece = pieces[i] if pieces is not None else None
                produced = int(tokens[i] or 0) if tokens is not None else 1
                note = _count(manager, rid, state, server_vote, reasons[i], piece, produced, finishing)
                if note is not None:
                    state.out_list = _Annotated(state.out_list, note)
    return original(manager, recv_obj, *args, **kwargs)


def _count(manager, rid: str, state, server_vote: ServerVote, reason: dict, piece: str | None,
           produced: int, finishing: set[str]) -> dict | None:
    """Record one finished child; returns its ``consensus_vote`` note (None: the warm-up). A stop
    aborts the siblings that are not finishing in this same batch (those come back complete, unvoted)."""
    from sgl_consensus.early_stop_runner import was_aborted

    aborted = was_aborted({"finish_reason": reason})
    if produced == 0 and not aborted:
        return None  # the prefill-only warm-up of the n children
    vote = server_vote.vote
    if aborted or vote.stopped or piece is None:
        return {"voted": False, "aborted_by_early_stop": rid in server_vote.aborted}
    answer = extract_answer(state.get_text() + piece, server_vote.answer)
    stop = vote.record(next(server_vote.order), answer)
    if stop:
        for other, other_state in list(manager.rid_to_state.items()):
            if other not in finishing and getattr(other_state.obj, VOTE_ATTR, None) is server_vote \
                    and not other_state.finished:
                server_vote.aborted.add(other)
                # its last output (the abort, from the batch or the waiting queue) carries the note
                other_state.out_list = _Annotated(other_state.out_list,
                                                  {"voted": False, "aborted_by_early_stop": True})
                manager.abort_request(rid=other)
    return {"voted": True, "answer": answer, "votes_so_far": len(vote.answers), "stopped": stop}


class _Annotated(list):
    """A request state's output queue that adds the vote note to the next output SGLang queues."""

    def __init__(self, items, note: dict) -> None:
        super().__init__(items)
        self.note = note

    def append(self, out) -> None:
        meta = out.get("meta_info") if isinstance(out, dict) else None
        if isinstance(meta, dict):
            meta["consensus_vote"] = self.note
        super().append(out)

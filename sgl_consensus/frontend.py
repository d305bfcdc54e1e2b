"""SGLang frontend integration: a ``RuntimeEndpoint`` that tags every branch of one ``s.fork(n)``.

Branches of a fork post their own ``/generate`` requests, with prompts that share a prefix but may
differ after it, and SGLang's ``RuntimeEndpoint`` sends no group id. This subclass adds
``custom_params["consensus_group"]`` (the worker's first grouping rule) to every generation, derived
from the fork the branch came from, so an existing program only swaps its backend line::

    sgl.set_default_backend(ConsensusRuntimeEndpoint("http://127.0.0.1:30000"))

``lead=H`` also asks for lead-lag scheduling of every fork (``sgl_consensus.lead_lag``): the server
admits the first branch to arrive and holds its siblings until it has ``H`` output tokens (``"inf"``:
until it finished). Outputs are sampled exactly as without it; only when each branch runs changes.

``early_stop=RULE`` (``sgl_consensus.early_stop``) makes every fork a vote: each branch's answer is
read (``extract``) as it finishes, and when the rule fires the fork's running branches are aborted on
the server and branches not sent yet are not sent. Every branch's ``meta_info["consensus_vote"]``
says whether it voted and with what; aborted branches keep the text they had.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict

from sgl_consensus.cpu import torchvision_fix

torchvision_fix.apply()  # CPU machines with a CUDA torchvision build; a no-op elsewhere

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint  # noqa: E402
from sglang.lang.ir import SglSamplingParams  # noqa: E402
from sglang.utils import http_request  # noqa: E402

from sgl_consensus.adapter.frontend_fork import fork_group_tag, program_text  # noqa: E402
from sgl_consensus.early_stop import Extractor, Rule, Vote, parse_rule  # noqa: E402
from sgl_consensus.early_stop_runner import was_aborted  # noqa: E402
from sgl_consensus.lead_lag import format_lead, parse_lead  # noqa: E402
from sgl_consensus.request_params import (  # noqa: E402
    GROUP_TAG,
    LEAD_PARAM,
    TENANT_PARAM,
    RequestParamError,
    parse_params,
)


class _TaggedSamplingParams(SglSamplingParams):
    """SglSamplingParams whose ``to_srt_kwargs()`` also carries the consensus fields (fork tag,
    lead, tenant)."""

    consensus_fields: dict | None = None

    def to_srt_kwargs(self) -> dict:
        kwargs = super().to_srt_kwargs()
        kwargs["custom_params"] = {**(kwargs.get("custom_params") or {}), **(self.consensus_fields or {})}
        return kwargs


def _tag_params(params: SglSamplingParams, fields: dict) -> _TaggedSamplingParams:
    tagged = _TaggedSamplingParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})
    tagged.consensus_fields = fields
    return tagged


class _ForkVote:
    """One fork's vote: its branches as they are sent (the fork's size is the number sent)."""

    def __init__(self, rule: Rule, in_flight: int | None) -> None:
        self.vote = Vote(rule, paths=1)
        self.sent = 0
        self.arrived = 0  # branches that reached the endpoint (the fork's size, once all have)
        self.running: dict[int, str] = {}  # branch index -> request id
        self.slots = threading.BoundedSemaphore(in_flight) if in_flight else None  # waves


class ConsensusRuntimeEndpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` whose fork branches are drafted for each other by the consensus worker.

    ``lead``: tokens the first branch of each fork runs ahead of its siblings (0 = all start
    together, the default; ``"inf"`` = the first branch finishes first). ``tenant``: whom this
    program's requests belong to (``custom_params["consensus_tenant"]``): drafts never carry text
    between tenants. ``early_stop``: a rule (``"esc:4"``, ``"beta:0.95"``, ``"decided"``) that ends
    each fork's vote early, reading answers with ``extract`` (default: the ``#### N`` answer, else
    "the answer is N", else the last number); ``in_flight``: at most this many branches of one fork
    run at a time (waves: a decided vote never sends the rest; default: all at once). Other
    arguments are ``RuntimeEndpoint``'s.
    """

    MAX_TRACKED_FORKS = 4096

    def __init__(self, *args, lead: int | float | str = 0, tenant: str | None = None,
                 early_stop: str | None = None, extract: Extractor | None = None, in_flight: int | None = None,
                 **kwargs) -> None:
        self.lead = parse_lead(lead, "ConsensusRuntimeEndpoint(lead=...)")  # before any connection
        try:
            parse_params({TENANT_PARAM: tenant})
        except RequestParamError as exc:
            raise ValueError(f"ConsensusRuntimeEndpoint(tenant=...): {exc}") from None
        self.tenant = tenant
        self.early_stop: Rule | None = None if early_stop is None else parse_rule(early_stop)
        if extract is None:
            from sgl_consensus.workload.datasets import extract_free_form_answer

            extract = extract_free_form_answer
        self.extract = extract
        if in_flight is not None and (not isinstance(in_flight, int) or in_flight < 1):
            raise ValueError(f"ConsensusRuntimeEndpoint(in_flight=...): must be an integer >= 1, got {in_flight!r}")
        self.in_flight = in_flight
        self._forks: OrderedDict[str, _ForkVote] = OrderedDict()
        self._forks_lock = threading.Lock()
        self._rids = itertools.count()
        super().__init__(*args, **kwargs)

    def _tagged(self, s, sampling_params):
        fields = {} if self.tenant is None else {TENANT_PARAM: self.tenant}
        tag = fork_group_tag(s)
        if tag is not None:
            fields[GROUP_TAG] = tag
            if self.lead:
                fields[LEAD_PARAM] = format_lead(self.lead)
        return _tag_params(sampling_params, fields) if fields else sampling_params

    def generate(self, s, sampling_params):
        tag = fork_group_tag(s)
        if self.early_stop is None or tag is None:
            return super().generate(s, self._tagged(s, sampling_params))
        return self._generate_voting(s, self._tagged(s, sampling_params), tag)

    # -- early stop -------------------------------------------------------------------------------
    def _fork(self, tag: str) -> _ForkVote:
        fork = self._forks.get(tag)
        if fork is None:
            fork = self._forks[tag] = _ForkVote(self.early_stop, self.in_flight)
            while len(self._forks) > self.MAX_TRACKED_FORKS:
                self._forks.popitem(last=False)
        return fork

    def _generate_voting(self, s, sampling_params, tag: str):
        with self._forks_lock:
            fork = self._fork(tag)
            fork.arrived += 1
        if fork.slots is None:
            return self._send_and_vote(fork, s, sampling_params, tag)
        with fork.slots:  # a wave: wait until a running branch of this fork has voted
            return self._send_and_vote(fork, s, sampling_params, tag)

    def _send_and_vote(self, fork: _ForkVote, s, sampling_params, tag: str):
        with self._forks_lock:
            if fork.vote.stopped:
                return "", {"finish_reason": {"type": "abort", "message": "early stop: not sent"},
                            "consensus_vote": {"voted": False, "sent": False}}
            index = fork.sent
            fork.sent += 1
            rid = f"{tag}-{index}-{next(self._rids)}"
            fork.running[index] = rid
        try:
            text, meta = self._post_generate(s, sampling_params, rid)
        finally:
            with self._forks_lock:
                fork.running.pop(index, None)
        with self._forks_lock:
            if was_aborted(meta) or fork.vote.stopped:
                meta["consensus_vote"] = {"voted": False, "sent": True}
                return text, meta
            answer = self.extract(text)
            fork.vote.paths = fork.arrived  # the fork's size: every branch arrives before any finishes
            stop = fork.vote.record(index, answer)
            to_abort = list(fork.running.values()) if stop else []
            meta["consensus_vote"] = {"voted": True, "answer": answer, "votes_so_far": len(fork.vote.answers)}
        for other in to_abort:
            http_request(self.base_url + "/abort_request", json={"rid": other}, api_key=self.api_key,
                         verify=self.verify)
        return text, meta

    def _post_generate(self, s, sampling_params, rid: str) -> tuple[str, dict]:
        data = {"text": program_text(s), "rid": rid, "sampling_params": sampling_params.to_srt_kwargs()}
        res = http_request(self.base_url + "/generate", json=data, api_key=self.api_key, verify=self.verify)
        if res.status_code != 200:
            raise RuntimeError(f"/generate of early-stop branch {rid!r} failed: {res.text}")
        obj = res.json()
        return obj["text"], obj["meta_info"]

    def generate_stream(self, s, sampling_params):
        return super().generate_stream(s, self._tagged(s, sampling_params))

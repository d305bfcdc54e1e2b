"""SGLang frontend integration: a ``RuntimeEndpoint`` that tags every branch of one ``s.fork(n)``.

Branches of a fork post their own ``/generate`` requests, with prompts that share a prefix but may
differ after it, and SGLang's ``RuntimeEndpoint`` sends no group id. This subclass adds
``custom_params["consensus_group"]`` (the worker's first grouping rule) to every generation, derived
from the fork the branch came from, so an existing program only swaps its backend line::

    sgl.set_default_backend(ConsensusRuntimeEndpoint("http://127.0.0.1:30000"))

``lead=H`` also asks for lead-lag scheduling of every fork (``sgl_consensus.lead_lag``): the server
admits the first branch to arrive and holds its siblings until it has ``H`` output tokens (``"inf"``:
until it finished). Outputs are sampled exactly as without it; only when each branch runs changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from sgl_consensus.cpu import torchvision_fix

torchvision_fix.apply()  # CPU machines with a CUDA torchvision build; a no-op elsewhere

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint  # noqa: E402
from sglang.lang.ir import SglSamplingParams  # noqa: E402

from sgl_consensus.lead_lag import format_lead, parse_lead  # noqa: E402
from sgl_consensus.request_params import (  # noqa: E402
    GROUP_TAG,
    LEAD_PARAM,
    TENANT_PARAM,
    RequestParamError,
    parse_params,
)


def fork_group_tag(executor) -> str | None:
    """One tag per fork: branches share the program's argument object and the fork's prefix text."""
    start = getattr(executor, "fork_start_text_pos", None)
    if start is None:
        return None
    prefix = executor.text_[:start]
    digest = hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()
    return f"fork-{os.getpid()}-{id(executor.arguments):x}-{start}-{digest}"


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


class ConsensusRuntimeEndpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` whose fork branches are drafted for each other by the consensus worker.

    ``lead``: tokens the first branch of each fork runs ahead of its siblings (0 = all start
    together, the default; ``"inf"`` = the first branch finishes first). ``tenant``: whom this
    program's requests belong to (``custom_params["consensus_tenant"]``): drafts never carry text
    between tenants. Other arguments are ``RuntimeEndpoint``'s.
    """

    def __init__(self, *args, lead: int | float | str = 0, tenant: str | None = None, **kwargs) -> None:
        self.lead = parse_lead(lead, "ConsensusRuntimeEndpoint(lead=...)")  # before any connection
        try:
            parse_params({TENANT_PARAM: tenant})
        except RequestParamError as exc:
            raise ValueError(f"ConsensusRuntimeEndpoint(tenant=...): {exc}") from None
        self.tenant = tenant
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
        return super().generate(s, self._tagged(s, sampling_params))

    def generate_stream(self, s, sampling_params):
        return super().generate_stream(s, self._tagged(s, sampling_params))

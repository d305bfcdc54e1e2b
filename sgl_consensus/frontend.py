"""SGLang frontend integration: a ``RuntimeEndpoint`` that tags every branch of one ``s.fork(n)``.

Branches of a fork post their own ``/generate`` requests, with prompts that share a prefix but may
differ after it, and SGLang's ``RuntimeEndpoint`` sends no group id. This subclass adds
``custom_params["consensus_group"]`` (the worker's first grouping rule) to every generation, derived
from the fork the branch came from, so an existing program only swaps its backend line::

    sgl.set_default_backend(ConsensusRuntimeEndpoint("http://127.0.0.1:30000"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from sgl_consensus.cpu import torchvision_fix

torchvision_fix.apply()  # CPU machines with a CUDA torchvision build; a no-op elsewhere

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint  # noqa: E402
from sglang.lang.ir import SglSamplingParams  # noqa: E402

GROUP_TAG = "consensus_group"


def fork_group_tag(executor) -> str | None:
    """One tag per fork: branches share the program's argument object and the fork's prefix text."""
    start = getattr(executor, "fork_start_text_pos", None)
    if start is None:
        return None
    prefix = executor.text_[:start]
    digest = hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()
    return f"fork-{os.getpid()}-{id(executor.arguments):x}-{start}-{digest}"


class _TaggedSamplingParams(SglSamplingParams):
    """SglSamplingParams whose ``to_srt_kwargs()`` also carries the fork's group tag."""

    consensus_tag: str = ""

    def to_srt_kwargs(self) -> dict:
        kwargs = super().to_srt_kwargs()
        kwargs["custom_params"] = {GROUP_TAG: self.consensus_tag}
        return kwargs


def _tag_params(params: SglSamplingParams, tag: str) -> _TaggedSamplingParams:
    tagged = _TaggedSamplingParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})
    tagged.consensus_tag = tag
    return tagged


class ConsensusRuntimeEndpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` whose fork branches are drafted for each other by the consensus worker."""

    def _tagged(self, s, sampling_params):
        tag = fork_group_tag(s)
        return sampling_params if tag is None else _tag_params(sampling_params, tag)

    def generate(self, s, sampling_params):
        return super().generate(s, self._tagged(s, sampling_params))

    def generate_stream(self, s, sampling_params):
        return super().generate_stream(s, self._tagged(s, sampling_params))

"""The server's door: every request is checked in SGLang's tokenizer manager, before it can reach
the scheduler loop.

An AROUND hook on ``TokenizerManager._create_tokenized_object`` (SGLang's plugin ``HookRegistry``;
the one call every single, batched and ``n > 1`` request passes through after tokenization, in the
process that answers HTTP and ``Engine`` calls). A ``ValueError`` raised there is SGLang's own
"bad request" path: HTTP 400 with the message, or the exception in an ``Engine`` caller.

- Always (whatever the speculative algorithm): a prompt of zero tokens, or with token ids outside
  the vocabulary, is refused. SGLang 0.5.23's scheduler crashes on both.
- When the server runs ``--speculative-algorithm consensus``: ``custom_params`` must be a JSON
  object and its ``consensus_*`` keys valid (``sgl_consensus.request_params``); the ``n > 1``
  children of one request are stamped with one fresh, unguessable ``consensus_origin``, which
  groups them as siblings of each other and of nobody else; an ``n > 1`` request with
  ``consensus_early_stop`` gets its vote (``adapter.early_stop_hook``), other requests with it a 400.
"""

from __future__ import annotations

import uuid
from typing import Any

from sgl_consensus.adapter import ALGORITHM_NAME
from sgl_consensus.adapter.early_stop_hook import attach_vote
from sgl_consensus.request_params import ORIGIN_PARAM, parse_params

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._create_tokenized_object"


def _serves_consensus(manager) -> bool:
    algorithm = getattr(manager.server_args, "speculative_algorithm", None)
    return str(algorithm or "").upper() == ALGORITHM_NAME


def check_prompt_ids(input_ids: Any, vocab_size: int) -> None:
    """Refuse prompts SGLang's scheduler cannot serve: no tokens, or ids outside [0, vocab)."""
    if input_ids is None:
        return  # input embeddings or multimodal inputs: SGLang checks those itself
    if len(input_ids) == 0:
        raise ValueError("the prompt is empty: a request needs at least one input token")
    for position, token in enumerate(input_ids):
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab_size:
            raise ValueError(
                f"input_ids[{position}] = {token!r} is not a token id of this model (valid: integers in "
                f"[0, {vocab_size}))")


def admit(original, manager, obj, input_text, input_ids, *args, **kwargs):
    """AROUND hook: validate, let SGLang build the tokenized request, stamp ``n > 1`` siblings."""
    check_prompt_ids(input_ids, manager.model_config.vocab_size)
    sampling = getattr(obj, "sampling_params", None)
    if not isinstance(sampling, dict) or not _serves_consensus(manager):
        return original(manager, obj, input_text, input_ids, *args, **kwargs)
    params = parse_params(sampling.get("custom_params"))  # RequestParamError is a ValueError: 400
    tokenized = original(manager, obj, input_text, input_ids, *args, **kwargs)
    sampling_params = getattr(tokenized, "sampling_params", None)
    if params.early_stop is not None:
        paths = getattr(sampling_params, "n", None) or 1
        if paths < 2:
            raise ValueError(f"custom_params['consensus_early_stop'] = {params.early_stop!r} needs n > 1 "
                             f"(the vote is over one request's n samples), got n = {paths}")
        attach_vote(obj, params.early_stop, paths, params.answer)
    if sampling_params is not None and (sampling_params.n or 1) > 1 and params.group is None:
        # All n children share this SamplingParams object (SGLang copies the tokenized request
        # shallowly per child), so they share the origin; the warm-up prefill gets it too.
        custom = dict(sampling_params.custom_params or {})
        custom[ORIGIN_PARAM] = uuid.uuid4().hex
        sampling_params.custom_params = custom
    return tokenized

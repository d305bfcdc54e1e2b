"""The per-request consensus fields, read from ``sampling_params.custom_params``.

Clients may send:

- ``consensus_group``: an explicit sibling-group tag (a string of 1-256 characters or an integer;
  ``"1"`` and ``1`` are different tags);
- ``consensus_tenant``: who the request belongs to (a string of 1-256 characters). Drafts never
  carry text across tenants: group keys, prefix clusters, finished groups and the global corpus
  are all per tenant. Requests without one share the default tenant;
- ``consensus_lead``: lead-lag scheduling of the request's group (``sgl_consensus.lead_lag``);
- ``consensus_early_stop``: for an ``n > 1`` request, a stopping rule of ``sgl_consensus.early_stop``
  (``decided``, ``esc:W``, ``beta:LEVEL``): the server votes on the answers of the children as they
  finish and aborts the rest once the rule fires (``adapter.early_stop_hook``);
- ``consensus_answer``: what a child's vote is, with ``consensus_early_stop``: ``number`` (default:
  "#### N", "the answer is N", else the last number) or ``text`` (the whole output, stripped).

The server itself adds ``consensus_origin`` to the ``n > 1`` children of one request (an
unguessable id, so siblings are grouped by the request they came from, never by prompt); a client
that sends it is refused.

:func:`parse_params` is the strict reader used at the server's door (every bad field is a clear
error naming the key and the value); :func:`read_params` is the scheduler's reader, which never
raises: a request that somehow skipped the door is served without consensus fields.
Pure Python: no SGLang import.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sgl_consensus.lead_lag import parse_lead

logger = logging.getLogger(__name__)

GROUP_TAG = "consensus_group"
TENANT_PARAM = "consensus_tenant"
LEAD_PARAM = "consensus_lead"
EARLY_STOP_PARAM = "consensus_early_stop"
ANSWER_PARAM = "consensus_answer"
ANSWER_KINDS = ("number", "text")
ORIGIN_PARAM = "consensus_origin"  # set by the server only
CLIENT_KEYS = (GROUP_TAG, TENANT_PARAM, LEAD_PARAM, EARLY_STOP_PARAM, ANSWER_PARAM)
MAX_ID_CHARS = 256
_INT64 = 1 << 63


class RequestParamError(ValueError):
    """A malformed per-request consensus field; the message names the key and the value."""


@dataclass(frozen=True)
class ConsensusParams:
    group: str | int | None = None  # explicit sibling-group tag
    tenant: str | None = None  # None = the default tenant
    lead: float | None = None  # None = the server's CONSENSUS_LEAD
    origin: str | None = None  # n > 1 children of one request (server-assigned)
    early_stop: str | None = None  # a stopping rule for the n > 1 children's vote (validated)
    answer: str = "number"  # what a child votes with: see ANSWER_KINDS


NO_PARAMS = ConsensusParams()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _identifier(key: str, value: Any, allow_int: bool) -> str | int:
    if isinstance(value, str) and 1 <= len(value) <= MAX_ID_CHARS:
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    kinds = "a string of 1-256 characters or a 64-bit integer" if allow_int else "a string of 1-256 characters"
    raise RequestParamError(f"custom_params[{key!r}] must be {kinds}, got {_short(value)}")


def parse_params(custom_params: Any, *, from_server: bool = False) -> ConsensusParams:
    """Validate and read the consensus fields of ``custom_params`` (None, or a JSON object).

    Keys that do not start with ``consensus_`` belong to others (e.g. custom logit processors) and
    are left alone; unknown ``consensus_*`` keys are refused (a typo must not silently do nothing).
    ``from_server``: accept ``consensus_origin`` (only the server's own door sets it).
    """
    if custom_params is None:
        return NO_PARAMS
    if not isinstance(custom_params, Mapping):
        raise RequestParamError(
            f"sampling_params.custom_params must be a JSON object, got {type(custom_params).__name__} "
            f"{_short(custom_params)}")
    known = CLIENT_KEYS + ((ORIGIN_PARAM,) if from_server else ())
    for key in custom_params:
        if isinstance(key, str) and key.startswith("consensus_") and key not in known:
            hint = " (set by the server only)" if key == ORIGIN_PARAM else ""
            raise RequestParamError(
                f"unknown custom_params key {key!r}{hint}; consensus keys are {list(CLIENT_KEYS)}")
    group = custom_params.get(GROUP_TAG)
    tenant = custom_params.get(TENANT_PARAM)
    lead = custom_params.get(LEAD_PARAM)
    origin = custom_params.get(ORIGIN_PARAM) if from_server else None
    try:
        parsed_lead = None if lead is None else parse_lead(lead, f"custom_params[{LEAD_PARAM!r}]")
    except ValueError as exc:
        raise RequestParamError(str(exc)) from None
    early_stop = custom_params.get(EARLY_STOP_PARAM)
    if early_stop is not None:
        from sgl_consensus.early_stop import EarlyStopError, parse_rule

        if not isinstance(early_stop, str) or len(early_stop) > 64:
            raise RequestParamError(f"custom_params[{EARLY_STOP_PARAM!r}] must be a rule string such as "
                                    f"'esc:3', got {_short(early_stop)}")
        try:
            parse_rule(early_stop)
        except EarlyStopError as exc:
            raise RequestParamError(f"custom_params[{EARLY_STOP_PARAM!r}]: {exc}") from None
    answer = custom_params.get(ANSWER_PARAM, "number")
    if answer not in ANSWER_KINDS:
        raise RequestParamError(f"custom_params[{ANSWER_PARAM!r}] must be one of {list(ANSWER_KINDS)}, "
                                f"got {_short(answer)}")
    if ANSWER_PARAM in custom_params and early_stop is None:
        raise RequestParamError(f"custom_params[{ANSWER_PARAM!r}] only applies with {EARLY_STOP_PARAM!r}")
    return ConsensusParams(
        group=None if group is None else _identifier(GROUP_TAG, group, allow_int=True),
        tenant=None if tenant is None else _identifier(TENANT_PARAM, tenant, allow_int=False),
        lead=parsed_lead,
        origin=None if origin is None else str(_identifier(ORIGIN_PARAM, origin, allow_int=False)),
        early_stop=early_stop,
        answer=answer,
    )


_warned: set[str] = set()


def read_params(custom_params: Any) -> ConsensusParams:
    """The scheduler's reader: like :func:`parse_params`, but a malformed field never raises.

    The door (``adapter.admission``) refuses such requests first; one that got past it anyway (a
    request built inside the scheduler process, say) is served without consensus fields, and the
    problem is logged once per message.
    """
    try:
        return parse_params(custom_params, from_server=True)
    except RequestParamError as exc:
        message = str(exc)
        if message not in _warned and len(_warned) < 64:
            _warned.add(message)
            logger.warning("%s; the request is served without consensus fields", message)
        return NO_PARAMS

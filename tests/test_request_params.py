"""Per-request consensus fields: the door's strict reader and the scheduler's lenient one."""

from __future__ import annotations

import math

import pytest

from sgl_consensus.request_params import (
    NO_PARAMS,
    ConsensusParams,
    RequestParamError,
    parse_params,
    read_params,
)


def test_valid_fields_are_read():
    assert parse_params(None) == NO_PARAMS
    assert parse_params({"temperature_boost": 3}) == NO_PARAMS  # other people's keys are left alone
    assert parse_params({"consensus_group": "g", "consensus_tenant": "alice", "consensus_lead": "inf"}) == \
        ConsensusParams(group="g", tenant="alice", lead=math.inf)
    assert parse_params({"consensus_group": 7, "consensus_lead": 16}) == ConsensusParams(group=7, lead=16)
    assert parse_params({"consensus_early_stop": "beta:0.9"}).early_stop == "beta:0.9"
    assert parse_params({"consensus_early_stop": "esc:2", "consensus_answer": "text"}).answer == "text"


@pytest.mark.parametrize("custom, needle", [
    ("consensus_group", "must be a JSON object, got str 'consensus_group'"),
    ([1, 2], "must be a JSON object, got list"),
    (3, "must be a JSON object, got int"),
    ({"consensus_group": True}, r"custom_params\['consensus_group'\] must be a string .* got True"),
    ({"consensus_group": ""}, "consensus_group"),
    ({"consensus_group": "x" * 257}, "consensus_group"),
    ({"consensus_group": 1.5}, "consensus_group"),
    ({"consensus_group": 2 ** 70}, "consensus_group"),
    ({"consensus_group": {"a": 1}}, "consensus_group"),
    ({"consensus_tenant": 5}, r"custom_params\['consensus_tenant'\] must be a string of 1-256"),
    ({"consensus_tenant": None, "consensus_lead": -1}, "consensus_lead"),
    ({"consensus_lead": "soon"}, "consensus_lead"),
    ({"consensus_grup": "g"}, "unknown custom_params key 'consensus_grup'"),
    ({"consensus_early_stop": "esc:1"}, r"custom_params\['consensus_early_stop'\]: .*'esc:1'.*window"),
    ({"consensus_early_stop": "majority"}, r"consensus_early_stop.*unknown early-stop rule 'majority'"),
    ({"consensus_early_stop": 3}, r"consensus_early_stop.* must be a rule string .* got 3"),
    ({"consensus_early_stop": "esc:2", "consensus_answer": "regex"}, r"consensus_answer.*'regex'"),
    ({"consensus_answer": "text"}, r"consensus_answer'\] only applies with 'consensus_early_stop'"),
])
def test_malformed_fields_are_named(custom, needle):
    with pytest.raises(RequestParamError, match=needle):
        parse_params(custom)
    assert read_params(custom) == NO_PARAMS  # the scheduler never raises on them


def test_the_server_may_set_the_origin():
    with pytest.raises(RequestParamError, match="set by the server only"):
        parse_params({"consensus_origin": "forged"})
    assert parse_params({"consensus_origin": "abc"}, from_server=True).origin == "abc"
    assert read_params({"consensus_origin": "abc"}).origin == "abc"


def test_frontend_sends_tenant_tag_and_lead_together():
    from sglang.lang.ir import SglSamplingParams

    from sgl_consensus.frontend import _tag_params

    params = _tag_params(SglSamplingParams(max_new_tokens=4), {"consensus_tenant": "alice", "consensus_group": "f1"})
    custom = params.to_srt_kwargs()["custom_params"]
    assert parse_params(custom) == ConsensusParams(group="f1", tenant="alice")


def test_endpoint_rejects_a_bad_tenant_before_connecting():
    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    with pytest.raises(ValueError, match=r"ConsensusRuntimeEndpoint\(tenant=...\).*consensus_tenant"):
        ConsensusRuntimeEndpoint("http://127.0.0.1:9", tenant="")

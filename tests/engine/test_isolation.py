"""Tenant isolation in SGLang's real engine: the timing side channel of forced guesses, per leak path.

A victim's output is forced (regex) to a secret S; then an attacker forces its own output to a guess
of S. Consensus drafts make a right guess cheaper (fewer verify steps) if anything of the victim's
text reaches the attacker's drafts. The probe runs twice with everything identical but the
victim's secret: once the victim writes S (the attacker's guess is right), once S' (wrong). The
difference in the attacker's verify steps is the leak; isolated, it is zero.

Paths: (a) the global corpus of finished groups, (b) prefix clusters of untagged requests that share
a system prompt, (c) a tag reused after its group finished, (d) ``n > 1`` requests with one prompt.
"""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from sgl_consensus.testing.engines import flush

pytestmark = pytest.mark.engine

SYSTEM = ("first we add then we subtract then we add one two three four five six seven eight nine ten "
          "apples books coins cats each has gives buys sells more less than total so then")
WORDS = "one two three four five six seven eight nine ten apples books coins cats".split()
NEW_TOKENS = 96


def _secret(seed: int, words: int = 28) -> str:
    rng = random.Random(seed)
    return " " + " ".join(rng.choice(WORDS) for _ in range(words))


RIGHT, WRONG = _secret(1), _secret(2)
PAD = _secret(3, words=40)  # the victim keeps running after its secret (live-group paths)


def _params(text: str, tenant: str | None, group: str | None = None, n: int = 1) -> dict:
    custom = {}
    if tenant is not None:
        custom["consensus_tenant"] = tenant
    if group is not None:
        custom["consensus_group"] = group
    return {"temperature": 0.0, "max_new_tokens": NEW_TOKENS, "regex": re.escape(text), "n": n,
            "custom_params": custom}


async def _victim_then_attacker(engine, victim: dict, attacker: dict, victim_prompt: str, attacker_prompt: str,
                                concurrent: bool) -> dict:
    """Run the victim; the attacker starts after the victim finished, or (concurrent) once the victim
    has written 40 tokens and is still running."""
    if not concurrent:
        await engine.async_generate(victim_prompt, victim)
        return await engine.async_generate(attacker_prompt, attacker)
    stream = await engine.async_generate(victim_prompt, victim, stream=True)
    attack = None
    async for chunk in stream:
        chunks = chunk if isinstance(chunk, list) else [chunk]
        written = max(c["meta_info"]["completion_tokens"] for c in chunks)
        if attack is None and written >= 40:
            attack = asyncio.ensure_future(engine.async_generate(attacker_prompt, attacker))
    assert attack is not None, "the victim finished before the attacker started"
    return await attack


def _attacker_steps(engine, path: str, victim_secret: str, victim_tenant, attacker_tenant) -> int:
    flush(engine)  # also empties the drafter and the width policy: every probe starts from nothing
    prompt_a, prompt_b = SYSTEM + " user alice asks", SYSTEM + " user bob asks"
    if path == "global":
        victim, attacker, concurrent = _params(victim_secret, victim_tenant), _params(RIGHT, attacker_tenant), False
    elif path == "prefix":
        victim, attacker, concurrent = (_params(victim_secret + PAD, victim_tenant), _params(RIGHT, attacker_tenant),
                                        True)
    elif path == "tag":
        victim, attacker, concurrent = (_params(victim_secret, victim_tenant, group="team"),
                                        _params(RIGHT, attacker_tenant, group="team"), False)
    else:  # "n": both send n = 2 with one prompt
        prompt_b = prompt_a
        victim = _params(victim_secret + PAD, victim_tenant, n=2)
        attacker, concurrent = _params(RIGHT, attacker_tenant, n=2), True
    out = engine.run(_victim_then_attacker(engine, victim, attacker, prompt_a, prompt_b, concurrent))
    outs = out if isinstance(out, list) else [out]
    assert all(o["text"] == RIGHT for o in outs), "the regex did not force the attacker's output"
    return sum(o["meta_info"]["spec_verify_ct"] for o in outs)


def _leak(engine, path: str, victim_tenant, attacker_tenant) -> int:
    """Verify steps of a right guess minus those of a wrong one (negative: the right guess was faster)."""
    right = _attacker_steps(engine, path, RIGHT, victim_tenant, attacker_tenant)
    wrong = _attacker_steps(engine, path, WRONG, victim_tenant, attacker_tenant)
    return right - wrong


# At a fixed width, a leak-free path shows no difference at all (one step of slack). With the adaptive
# width, each tenant's widths come from its own calibration and its own cost model (never from another
# tenant's outcomes), but the cost model is fitted to measured wall-clock step times, so two runs of
# the same requests can choose some widths differently: a few steps of noise either way, secret or not
# (more on a loaded machine). Where victim and attacker share batches (prefix, n), the one width per
# batch is chosen from every request's drafts, so a co-scheduled request moves another's width (never
# its drafts) as well. The open channel inside one tenant is 10-26 steps (test below, README).
def _tolerance(path: str, adaptive: str) -> int:
    return 1 if adaptive == "off" else 6


# Every path with the adaptive width (the default) and at a fixed width, where only the drafts can carry
# anything and the tolerance is one step.
@pytest.mark.parametrize("path, adaptive", [("global", "on"), ("prefix", "on"), ("tag", "on"), ("n", "on"),
                                            ("global", "off"), ("prefix", "off"), ("tag", "off"), ("n", "off")])
def test_no_path_crosses_tenants(engines, tiny_llama, path, adaptive):
    engine = engines.get(tiny_llama, "consensus", env={"CONSENSUS_ISOLATION": "tenant", "CONSENSUS_ADAPTIVE": adaptive},
                         max_running_requests=16)
    tolerance = _tolerance(path, adaptive)
    leaks = [_leak(engine, path, "alice", "mallory")]
    while not _no_channel(leaks, tolerance) and adaptive == "on" and len(leaks) < 3:
        # Width noise from wall-clock step times (a loaded machine: the suite runs three workers) moves
        # either way from one measurement to the next; a leak would show again, the same way, every time.
        leaks.append(_leak(engine, path, "alice", "mallory"))
    assert _no_channel(leaks, tolerance), leaks


def _no_channel(leaks: list[int], tolerance: int) -> bool:
    """No side channel: a measurement within the tolerance, or measurements beyond it in both
    directions (a channel makes one guess cheaper than the other the same way every time)."""
    return min(abs(x) for x in leaks) <= tolerance or min(leaks) < -tolerance < tolerance < max(leaks)


@pytest.mark.parametrize("path", ["global", "prefix", "tag", "n"])
def test_strict_isolates_requests_without_tenants(engines, tiny_llama, path):
    engine = engines.get(tiny_llama, "consensus", env={"CONSENSUS_ISOLATION": "strict"}, max_running_requests=16)
    assert abs(_leak(engine, path, None, None)) <= 1


@pytest.mark.parametrize("path", ["global", "prefix", "tag"])
def test_the_probe_sees_the_channel_inside_one_tenant(engines, tiny_llama, path):
    """Within one tenant the paths are open by design (shared evidence): the probe must measure it,
    else the isolation tests above could pass with a probe that sees nothing. At a fixed width: the
    adaptive policy may narrow the attacker's steps to no drafts at all, hiding what the probe tests."""
    engine = engines.get(tiny_llama, "consensus", env={"CONSENSUS_ISOLATION": "tenant", "CONSENSUS_ADAPTIVE": "off"},
                         max_running_requests=16)
    assert _leak(engine, path, "alice", "alice") <= -5

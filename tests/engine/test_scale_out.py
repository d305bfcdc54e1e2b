"""Scale-out behind sglang-router: a keyed sibling group stays on one worker (the engines' data and
tensor parallelism: test_parallel_engines.py)."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from sgl_consensus.testing.devices import device

pytestmark = pytest.mark.engine

def _requests_added(url: str) -> int:
    with urllib.request.urlopen(url + "/server_info", timeout=60) as resp:
        info = json.loads(resp.read())
    return info["internal_states"][0]["consensus"]["drafter_stats"]["requests_added"]


def _send_group(router_url: str, group: str, headers: dict[str, str], paths: int = 6) -> None:
    body = json.dumps({"text": f"{group}: first we add then we subtract",
                       "sampling_params": {"temperature": 0.7, "max_new_tokens": 12,
                                           "custom_params": {"consensus_group": group}}}).encode()

    def one(_):
        request = urllib.request.Request(router_url + "/generate", data=body,
                                         headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=120) as resp:
            assert resp.status == 200

    with ThreadPoolExecutor(paths) as pool:
        list(pool.map(one, range(paths)))


def test_router_keeps_a_keyed_group_on_one_worker(consensus_server, tiny_llama):
    """Two workers behind sglang-router: with the manual policy and the group tag as routing key,
    each group's paths all reach one worker's drafter; round robin splits every group."""
    from sgl_consensus.router import group_headers, launch_router
    from sgl_consensus.server import launch_server

    args = ["--speculative-algorithm", "consensus", "--speculative-num-draft-tokens", "4",
            "--max-running-requests", "16", "--log-level", "warning"]
    with launch_server(tiny_llama, args, device=device()) as second:
        workers = [consensus_server, second.url]
        for policy, keyed in [("manual", True), ("round_robin", False)]:
            with launch_router(workers, policy) as router:
                for g in range(3):
                    before = [_requests_added(w) for w in workers]
                    group = f"{policy}-{g}"
                    _send_group(router.url, group, group_headers(group) if keyed else {})
                    grew = sorted(b - a for a, b in zip(before, [_requests_added(w) for w in workers]))
                    if keyed:
                        assert grew[0] == 0 and grew[1] >= 6, (group, grew)  # one worker drafted them all
                    else:
                        assert grew[0] > 0, (group, grew)  # alternating: both workers saw the group

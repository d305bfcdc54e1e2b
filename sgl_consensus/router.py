"""Many servers behind SGLang's router (``sglang-router`` on PyPI), with every sibling group on one worker.

A self-consistency group is N requests with one prompt; consensus drafting only helps if they meet in
one worker's drafter. The router decides per request. Its ``manual`` policy pins every value of the
``X-SMG-Routing-Key`` header to one worker (new keys go to a worker by ``--assignment-mode``), so a
client that sends its group tag as that header never splits a group; ``cache_aware`` routes by prompt
prefix, which keeps most groups together but balances load by moving requests
(``benchmarks/bench_scale_out.py`` measures both). ``n > 1`` requests are one HTTP request and never split.

    python -m sgl_consensus.router --worker-urls http://w1:30000 http://w2:30000 --policy manual

takes ``sglang_router.launch_router``'s arguments; it only makes the router's launcher importable on a
CPU machine (it imports SGLang, which imports torchvision). :func:`group_headers` gives the header for
a group; :func:`launch_router` starts a router as a child process (tests, benchmarks).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Sequence

from sgl_consensus.server import ServerHandle, free_port, start_and_wait

ROUTING_KEY_HEADER = "X-SMG-Routing-Key"
POLICIES = ("manual", "cache_aware", "round_robin", "random", "power_of_two")


def group_headers(group: str, tenant: str | None = None) -> dict[str, str]:
    """HTTP headers that keep a tagged group on one worker under the router's ``manual`` policy
    (the key is tenant-qualified like the drafter's groups, so two tenants' tags never share a pin)."""
    return {ROUTING_KEY_HEADER: group if tenant is None else f"{tenant}/{group}"}


def launch_router(worker_urls: Sequence[str], policy: str = "manual", timeout_s: float = 120,
                  extra_args: Sequence[str] = ()) -> ServerHandle:
    """Start ``sglang-router`` on a free loopback port in front of ``worker_urls``; returns once it
    reports every worker healthy (it answers ``/health`` before it has registered them). Raises
    ValueError for an unknown policy, RuntimeError with the log tail if it does not come up."""
    if policy not in POLICIES:
        raise ValueError(f"router policy must be one of {list(POLICIES)}, got {policy!r}")
    port = free_port()
    cmd = [sys.executable, "-m", "sgl_consensus.router", "--host", "127.0.0.1", "--port", str(port),
           "--worker-urls", *worker_urls, "--policy", policy, "--log-level", "warn", *extra_args]
    return start_and_wait(cmd, port, "router", lambda url: _healthy_workers(url) >= len(worker_urls), timeout_s)


def _healthy_workers(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readiness", timeout=5) as resp:
            return int(json.loads(resp.read()).get("healthy_workers", 0))
    except (OSError, ValueError):
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()  # the launcher imports SGLang; a no-op where torchvision loads
    try:
        from sglang_router.launch_router import launch_router as run, parse_router_args
    except ImportError:
        sys.exit("sgl_consensus.router: sglang-router is not installed (pip install sglang-router==0.3.2)")
    run(parse_router_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

"""Shared command-line plumbing of the example programs: connect to a server or start one on CPU."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Importing sglang (even its frontend) imports torchvision; on CPU machines with the registry's
# CUDA torchvision that fails unless the missing op schemas are defined first (a no-op elsewhere).
from sgl_consensus.cpu import torchvision_fix  # noqa: E402

torchvision_fix.apply()

BUNDLED_MODEL = ROOT / "sgl_consensus" / "assets" / "tiny-reasoner"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running SGLang server, e.g. http://127.0.0.1:30000")
    where.add_argument("--cpu", action="store_true",
                       help="start a server on this machine's CPU with --speculative-algorithm consensus")
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="model for --cpu (default: bundled tiny reasoner)")
    parser.add_argument("--draft-tokens", type=int, default=8, help="--speculative-num-draft-tokens for --cpu")
    parser.add_argument("--plain-endpoint", action="store_true",
                        help="use SGLang's plain RuntimeEndpoint (no fork tags), for comparison")
    parser.add_argument("--lead", default="0",
                        help="lead-lag: tokens the first branch of each fork runs ahead of its siblings "
                             "(0 = all start together; 'inf' = it finishes first)")
    parser.add_argument("--tenant", default=None,
                        help="tenant of this program's requests (custom_params consensus_tenant): drafts "
                             "never carry text between tenants")


def add_workload_arguments(parser: argparse.ArgumentParser, temperature: float) -> None:
    parser.add_argument("--problems", type=int, default=4, help="held-out problems (default 4)")
    parser.add_argument("--n", type=int, default=8, help="sampled paths per problem (default 8)")
    parser.add_argument("--temperature", type=float, default=temperature)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed-start", type=int, default=1_000_000_000, help="first problem seed (held-out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_and_check(parser: argparse.ArgumentParser) -> argparse.Namespace:
    ns = parser.parse_args()
    if ns.n < 1 or ns.problems < 1:
        parser.error("--n and --problems must be >= 1")
    from sgl_consensus.lead_lag import parse_lead

    try:
        ns.lead = parse_lead(ns.lead, "--lead")
    except ValueError as exc:
        parser.error(str(exc))
    if ns.lead and ns.plain_endpoint:
        parser.error("--lead needs the consensus endpoint (drop --plain-endpoint)")
    if ns.tenant is not None:
        from sgl_consensus.request_params import TENANT_PARAM, RequestParamError, parse_params

        try:
            parse_params({TENANT_PARAM: ns.tenant})
        except RequestParamError as exc:
            parser.error(f"--tenant: {exc}")
        if ns.plain_endpoint:
            parser.error("--tenant needs the consensus endpoint (drop --plain-endpoint)")
    return ns


def held_out_problems(ns: argparse.Namespace) -> list:
    from sgl_consensus.workload.problems import generate_problem

    return [generate_problem(ns.seed_start + i) for i in range(ns.problems)]


@contextlib.contextmanager
def backend(ns: argparse.Namespace):
    """Yield a frontend backend for the chosen server; a --cpu server is stopped on exit."""
    from sgl_consensus import cpu

    cpu.activate(allow_cuda=not ns.cpu)  # only the --cpu server needs CPU mode
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    def endpoint_cls(url: str):
        if ns.plain_endpoint:
            return RuntimeEndpoint(url)
        return ConsensusRuntimeEndpoint(url, lead=ns.lead, tenant=ns.tenant, early_stop=getattr(ns, "early_stop", None),
                                         extract=getattr(ns, "extract", None), in_flight=getattr(ns, "in_flight", None))
    if not ns.cpu:
        try:
            endpoint = endpoint_cls(ns.url)
        except OSError as exc:  # urllib's URLError is an OSError
            raise SystemExit(f"cannot reach an SGLang server at {ns.url}: {exc}") from None
        yield endpoint
        return
    from sgl_consensus.server import launch_server

    print(f"starting a CPU server for {ns.model} ...", file=sys.stderr)
    args = ["--speculative-algorithm", "consensus", "--speculative-num-draft-tokens", str(ns.draft_tokens),
            "--max-running-requests", "64", "--max-total-tokens", "65536", "--log-level", "warning"]
    with launch_server(ns.model, args) as server:
        yield endpoint_cls(server.url)


def _check_reachable(url: str) -> None:
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10):
            pass
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise SystemExit(f"cannot reach an SGLang server at {url}: {exc}") from None
    except ValueError as exc:  # not a URL at all
        raise SystemExit(f"cannot reach an SGLang server at {url}: {exc}") from None


def run_program(ns: argparse.Namespace, make_program, arguments: list[dict]) -> tuple[list, float]:
    """Run the program ``make_program()`` builds over ``arguments`` on the chosen backend; returns
    the states and wall seconds. The server is checked first: building the program imports SGLang,
    which takes seconds."""
    import time

    if not ns.cpu:
        if not ns.url:
            raise SystemExit("pass --url URL of a running server, or --cpu to start one here")
        _check_reachable(ns.url)
    program = make_program()
    import sglang as sgl

    with backend(ns) as endpoint:
        sgl.set_default_backend(endpoint)
        start = time.perf_counter()
        states = program.run_batch(arguments, progress_bar=not ns.json)
        return states, time.perf_counter() - start

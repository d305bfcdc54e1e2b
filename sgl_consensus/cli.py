"""``sgl-consensus``: serve SGLang with consensus drafting, and run the demo.

    sgl-consensus serve --device cpu -- --model-path M --speculative-algorithm consensus
    sgl-consensus demo            # self-consistency on CPU: no speculation vs NGRAM vs consensus
    sgl-consensus gpu-check       # on a CUDA machine: exactness and speed of the worker there
"""

from __future__ import annotations

import argparse
import os
import sys

def _with_cpu_defaults(server_args: list[str]) -> list[str]:
    from sgl_consensus.cpu import server_flag_defaults

    args = list(server_args)
    present = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    for flag, value in server_flag_defaults().items():
        if flag not in present:
            args += [flag] if value is None else [flag, value]
    return args


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in an argument list (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def cmd_serve(ns: argparse.Namespace) -> int:
    server_args = [a for a in ns.server_args if a != "--"]
    if not any(a.split("=", 1)[0] == "--model-path" for a in server_args):
        print("sgl-consensus serve: pass SGLang's arguments after '--', at least --model-path", file=sys.stderr)
        return 2
    from sgl_consensus.settings import SettingsError, check_draft_width, load_settings

    try:
        load_settings()  # fail before SGLang starts, with the variable and value named
        if ns.device == "cpu":
            from sgl_consensus.cpu import preloaded_start

            preloaded_start.enabled()  # CONSENSUS_CPU_SPAWN's value
        width = _flag_value(server_args, "--speculative-num-draft-tokens")
        algorithm = _flag_value(server_args, "--speculative-algorithm")
        if width is not None and str(algorithm).upper() == "CONSENSUS":
            check_draft_width(width)
    except SettingsError as exc:
        print(f"sgl-consensus serve: {exc}", file=sys.stderr)
        return 2
    if ns.device == "cpu":
        from sgl_consensus import cpu

        try:
            cpu.activate()
        except cpu.CudaAvailableError as exc:
            print(f"sgl-consensus serve: {exc}", file=sys.stderr)
            return 2
        server_args = _with_cpu_defaults(server_args)
    argv = [sys.executable, "-m", "sglang.launch_server", *server_args]
    print("sgl-consensus serve: " + " ".join(argv[1:]), file=sys.stderr, flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_demo(ns: argparse.Namespace) -> int:
    from sgl_consensus.demo import run_demo

    return run_demo(ns)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgl-consensus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="launch SGLang's server with sgl-consensus loaded",
                           description="Launch `python -m sglang.launch_server` with sgl-consensus. "
                           "With --device cpu, SGLang runs on this machine's CPU (kernel stand-ins, "
                           "tree-verify attention, lossless sampling verification).")
    serve.add_argument("--device", choices=["cpu", "cuda"], default="cuda",
                       help="cpu: activate sgl-consensus' CPU support (refused where CUDA is available)")
    serve.add_argument("server_args", nargs=argparse.REMAINDER,
                       help="arguments for sglang.launch_server, after '--'")
    serve.set_defaults(func=cmd_serve)

    from sgl_consensus.demo import add_demo_arguments

    demo = sub.add_parser("demo", help="self-consistency on CPU: none vs NGRAM vs consensus",
                          description="Runs the bundled tiny model through SGLang on CPU without "
                          "speculation and with speculative decoding, and prints a comparison.")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    from sgl_consensus import gpu_check

    check = sub.add_parser("gpu-check", help="check correctness and speed of the worker on a CUDA GPU",
                           description=gpu_check.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu_check.add_arguments(check)
    check.set_defaults(func=gpu_check.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Start-up hook for every Python process that runs SGLang on CPU under sgl-consensus.

``sgl_consensus.cpu.activate()`` puts this folder first on PYTHONPATH, so the interpreters SGLang
spawns (scheduler, detokenizer, ...) run it at start-up, before any SGLang import. It applies the
torchvision fix and then hands over to any other ``sitecustomize`` that this one shadows.
"""

import importlib.util
import os
import sys

if os.environ.get("CONSENSUS_CPU") == "1":
    try:
        from sgl_consensus.cpu import torchvision_fix

        torchvision_fix.apply()
    except Exception as exc:  # a start-up hook must never stop the interpreter
        print(f"[sgl-consensus] CPU start-up hook failed: {exc!r}", file=sys.stderr)


def _chain_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_sgl_consensus_chained_sitecustomize", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_chain_shadowed_sitecustomize()

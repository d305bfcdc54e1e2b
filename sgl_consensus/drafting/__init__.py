"""Consensus drafting for multi-sample inference: sibling paths of one prompt draft for each other.

No SGLang import. Policy in Python, data plane in C++ (with its pure-Python reference). Module map:
- `config`: `DraftConfig` (frozen, validated, `from_mapping` for environment variables).
- `protocol`: `Drafter` / `RankedDrafter`, what the worker asks of every drafter.
- `drafter`: `ConsensusDrafter`, the add / extend / propose / remove / stats / reset facade and its
  policy (groups, tenants, lingering groups, global-corpus generations and merge pacing).
- `sources`: `GroupIndex` (one trie per sibling group) and `GlobalCorpus` (tries of finished groups).
- `core`: `DraftCore`, the per-token and per-step operations, and `PythonCore`, their reference.
- `native`: `NativeCore`, the same operations in C++ (`core.cpp`, ctypes bindings, build on first use).
- `trie`, `tree`: the reference n-gram trie and the consensus score + best-first draft tree.
- `successors`: model-informed nodes (the target's earlier top successors).
- `prompt_lookup`: a drafter on the request's own history only (a baseline).
- `validation`: input checks with errors naming the request and the problem.
"""

from .config import DraftConfig
from .drafter import ConsensusDrafter

__all__ = ["ConsensusDrafter", "DraftConfig"]

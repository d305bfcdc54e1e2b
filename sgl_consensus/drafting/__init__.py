"""Consensus drafting for multi-sample inference: sibling paths of one prompt draft for each other.

Pure Python/NumPy, no SGLang import. Module map:
- `config`: `DraftConfig` (frozen, validated, `from_mapping` for environment variables).
- `trie`: the depth-limited n-gram count trie and its O(depth)-per-token writer pointers.
- `sources`: `GroupIndex` (one trie per sibling group, own history included) and `GlobalCorpus`
  (bounded tries of finished groups, merged in incrementally).
- `tree`: consensus scoring and the best-first draft tree in SGLang NGRAM's BFS layout.
- `drafter`: `ConsensusDrafter`, the add / extend / propose / remove / stats / reset facade.
- `validation`: input checks with errors naming the request and the problem.
"""

from .config import DraftConfig
from .drafter import ConsensusDrafter

__all__ = ["ConsensusDrafter", "DraftConfig"]

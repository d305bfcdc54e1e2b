"""Padding rows: detached (never reachable) vs distinct filler tokens that could be accepted.

A tree smaller than the verify width is padded. Padding costs the same verify work either way; the
question (issue 11) is whether filling it with distinct guesses (the most frequent tokens of the
group so far that are not already children of the root) would be accepted often enough to matter.
Offline lock-step replay of recorded sibling streams, 8 draft tokens: per verify step, the padding
rows available and whether the path's true next token would have been one of the fillers (only when
no real draft node was accepted, since a filler is a root child competing with the real ones).

    .venv/bin/python benchmarks/replay_padding.py   # writes benchmarks/results/padding_replay.json
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig  # noqa: E402


def accepted_length(tokens, mask, continuation) -> int:
    n, best = len(tokens), 0
    for i in range(1, n):
        path = [int(tokens[j]) for j in range(1, n) if mask[i, j]]
        if mask[i, :i].any() and path == continuation[: len(path)]:
            best = max(best, len(path))
    return best


def replay(name: str, width: int = 8, problems: int = 50) -> dict:
    data = json.load(gzip.open(ROOT / "benchmarks" / "data" / f"{name}.json.gz", "rt"))
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=width))
    steps = tokens_out = padded_steps = padding_rows = filler_hits = 0
    for pi, problem in enumerate(data["problems"][:problems]):
        samples = problem["samples"]
        rids = [(pi, j) for j in range(len(samples))]
        unigram: Counter = Counter()
        for rid in rids:
            drafter.add(rid, pi, problem["prompt_ids"])
        pos = {rid: 0 for rid in rids}
        while pos:
            live = list(pos)
            proposal, masks = drafter.propose(live)
            drafter.maintain()
            for rid, row, mask in zip(live, proposal, masks):
                sample = samples[rid[1]]
                cont = sample[pos[rid]: pos[rid] + width]
                acc = accepted_length(row, mask, cont)
                detached = [i for i in range(1, width) if not mask[i, :i].any()]
                if detached:
                    padded_steps += 1
                    padding_rows += len(detached)
                    if acc == 0 and cont:
                        children = {int(row[i]) for i in range(1, width) if mask[i, 0] and mask[i, :i].sum() == 1}
                        fillers = [t for t, _ in unigram.most_common() if t not in children][: len(detached)]
                        filler_hits += int(cont[0] in fillers)
                advance = min(acc + 1, len(sample) - pos[rid])
                new = sample[pos[rid]: pos[rid] + advance]
                unigram.update(new)
                drafter.extend(rid, new)
                pos[rid] += advance
                steps += 1
                tokens_out += advance
                if pos[rid] >= len(sample):
                    drafter.remove(rid)
                    del pos[rid]
    return {"streams": name, "width": width, "problems": problems, "request_steps": steps,
            "tau": tokens_out / steps, "steps_with_padding": padded_steps / steps,
            "padding_rows_per_step": padding_rows / steps,
            "filler_accepted_per_step": filler_hits / steps,
            "tau_gain_from_fillers": filler_hits / max(tokens_out, 1)}


def main() -> None:
    rows = [replay(name) for name in ("reasoner_streams_T07", "reasoner_streams_T10", "sibling_streams_T07")]
    out = ROOT / "benchmarks" / "results" / "padding_replay.json"
    out.write_text(json.dumps({"command": ".venv/bin/python benchmarks/replay_padding.py", "rows": rows}, indent=1))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()

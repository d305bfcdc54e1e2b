"""Input checks for the drafter's public API: clear errors naming the request and the problem."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

MAX_TOKEN_ID = 2**31 - 1


def token_list(rid: Hashable, values: Any, what: str) -> list[int]:
    """Validate token ids (list, tuple or NumPy integer array) and return them as a list of ints."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"request {rid!r}: {what} must be 1-D, got shape {values.shape}")
        if values.dtype.kind not in "iu":
            raise TypeError(f"request {rid!r}: {what} must hold integers, got dtype {values.dtype}")
        if values.size and (int(values.min()) < 0 or int(values.max()) > MAX_TOKEN_ID):
            raise ValueError(
                f"request {rid!r}: {what} must be in [0, {MAX_TOKEN_ID}], "
                f"got min {int(values.min())}, max {int(values.max())}"
            )
        return values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(
            f"request {rid!r}: {what} must be a list, tuple or NumPy integer array, got {type(values).__name__}"
        )
    tokens = list(values)
    for index, token in enumerate(tokens):
        if type(token) is not int:  # exact int is the fast path; bool (an int subclass) is rejected
            if not isinstance(token, np.integer):
                raise TypeError(f"request {rid!r}: {what} must hold ints, got {token!r} ({type(token).__name__})")
            token = tokens[index] = int(token)
        if token < 0 or token > MAX_TOKEN_ID:
            raise ValueError(f"request {rid!r}: {what} must be in [0, {MAX_TOKEN_ID}], got {token}")
    return tokens


def token_rows(rids: Sequence[Hashable], rows: Sequence[Any], what: str) -> list[list[int]]:
    """`token_list` of every row, checked in one pass when every row is a list of ints (the
    worker's case); any other row goes through `token_list`, which names the request at fault."""
    if all(type(row) is list for row in rows):
        flat = [token for row in rows for token in row]
        if all(type(token) is int for token in flat) and (not flat or (min(flat) >= 0 and max(flat) <= MAX_TOKEN_ID)):
            return list(rows)
    return [token_list(rid, row, what) for rid, row in zip(rids, rows)]


def probabilities(rid: Hashable, logprobs: Any, expected: int) -> list[float]:
    """Validate per-token logprobs (<= 0, finite, one per token) and return probabilities."""
    if isinstance(logprobs, np.ndarray):
        if logprobs.ndim != 1:
            raise ValueError(f"request {rid!r}: logprobs must be 1-D, got shape {logprobs.shape}")
        logprobs = logprobs.tolist()
    elif not isinstance(logprobs, (list, tuple)):
        raise TypeError(
            f"request {rid!r}: logprobs must be a list, tuple or NumPy array, got {type(logprobs).__name__}"
        )
    if len(logprobs) != expected:
        raise ValueError(
            f"request {rid!r}: got {len(logprobs)} logprobs for {expected} tokens; pass one per token or None"
        )
    probs = []
    for value in logprobs:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"request {rid!r}: logprobs must be numbers, got {value!r}")
        value = float(value)
        if math.isnan(value) or value > 1e-6:
            raise ValueError(f"request {rid!r}: logprobs must be <= 0 (log of a probability), got {value}")
        probs.append(math.exp(min(value, 0.0)))
    return probs


def probability_rows(rids: Sequence[Hashable], tokens: Sequence[Sequence[int]],
                     logprob_rows: Sequence[Any] | None) -> list[float] | None:
    """Per-token probabilities of a batch, flat and aligned with the concatenated ``tokens``: NaN
    where no logprob is known. Row i's logprobs cover the last ones of ``tokens[i]``. A bad row is
    named as `probabilities` would name it."""
    if logprob_rows is None or all(row is None for row in logprob_rows):
        return None
    if not (all(row is None or (type(row) is list and len(row) <= len(row_tokens))
                for row_tokens, row in zip(tokens, logprob_rows))
            and all(type(value) is float and value <= 1e-6 for row in logprob_rows if row for value in row)):
        return _slow_rows(rids, tokens, logprob_rows)  # arrays, tuples, ints, NumPy scalars, or a bad row
    # The worker's case (lists of floats), checked above in one pass (NaN fails the comparison).
    out: list[float] = []
    exp, nan = math.exp, math.nan
    for row_tokens, row in zip(tokens, logprob_rows):
        unknown = len(row_tokens) - (len(row) if row else 0)
        if unknown:
            out += [nan] * unknown
        if row:
            out += [exp(value if value < 0.0 else 0.0) for value in row]  # as `probabilities`, bit for bit
    return out


def flat_probabilities(rids: Sequence[Hashable], tokens: Sequence[Sequence[int]], values: Any) -> list[float] | None:
    """Per-token probabilities, flat over the concatenated ``tokens`` (NaN: unknown), checked in one
    array pass: in [0, 1] or NaN, one per token. None if none is known. A bad value is named with
    its request."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"probabilities must be numbers, got {str(values)[:80]!r}") from None
    lengths = [len(row) for row in tokens]
    if array.shape != (sum(lengths),):
        raise ValueError(f"probabilities must be 1-D with one value per token ({sum(lengths)}), got shape {array.shape}")
    unknown = np.isnan(array)
    bad = ~unknown & ((array < 0.0) | (array > 1.0))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        row = int(np.searchsorted(np.cumsum(lengths), index, side="right"))
        raise ValueError(f"request {rids[row]!r}: probabilities must be in [0, 1] (or NaN: unknown), "
                         f"got {float(array[index])}")
    return None if unknown.all() else array.tolist()


def row_batch(rows: int, tokens: Any, lens: Any, logprobs: Any, counts: Any
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The shapes and types of a batch of rows (`ConsensusDrafter.extend_rows`), as contiguous int64
    tokens and lens, float64 logprobs and int64 counts; the values are checked by the core as it
    reads them (one pass)."""
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 2 or tokens.shape[0] != rows \
            or tokens.dtype.kind not in "iu":
        raise TypeError(f"tokens must be a NumPy integer array of shape ({rows}, width), got {_describe(tokens)}")
    if not isinstance(lens, np.ndarray) or lens.shape != (rows,) or lens.dtype.kind not in "iu":
        raise ValueError(f"lens must be a NumPy integer array of shape ({rows},), got {_describe(lens)}")
    if (logprobs is None) != (counts is None):
        raise ValueError("logprobs and logprob_counts go together: pass both or neither")
    if logprobs is not None:
        if not isinstance(logprobs, np.ndarray) or logprobs.ndim != 2 or logprobs.shape[0] != rows \
                or logprobs.dtype.kind != "f":
            raise ValueError(f"logprobs must be a float array of shape ({rows}, stride), got {_describe(logprobs)}")
        if not isinstance(counts, np.ndarray) or counts.shape != (rows,) or counts.dtype.kind not in "iu":
            raise ValueError(f"logprob_counts must be an integer array of shape ({rows},), got {_describe(counts)}")
        logprobs = np.ascontiguousarray(logprobs, dtype=np.float64)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
    return (np.ascontiguousarray(tokens, dtype=np.int64), np.ascontiguousarray(lens, dtype=np.int64),
            logprobs, counts)


def rank_weights(weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, intercepts, slopes) of a piecewise-linear weight (`core.rank_weight_sums`) as
    contiguous float64 arrays: edges [m], intercepts and slopes [m + 1]. Their values (edges
    rising, weights finite) are checked where they are used (`core.check_rank_weights`): the width
    policy hands new weights every step, and these checks cost no array operation."""
    try:
        edges, intercepts, slopes = (part if isinstance(part, np.ndarray) and part.dtype == np.float64
                                     and part.flags.c_contiguous else np.ascontiguousarray(part, dtype=np.float64)
                                     for part in weights)
    except (TypeError, ValueError):
        raise TypeError(f"rank_weights must be (edges, intercepts, slopes) arrays of floats, got {str(weights)[:80]}") \
            from None
    if edges.ndim != 1 or intercepts.shape != (len(edges) + 1,) or slopes.shape != (len(edges) + 1,):
        raise ValueError(f"rank_weights: edges must be 1-D ([m]) and intercepts, slopes [m + 1], got shapes "
                         f"{edges.shape}, {intercepts.shape}, {slopes.shape}")
    return edges, intercepts, slopes


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _slow_rows(rids: Sequence[Hashable], tokens: Sequence[Sequence[int]], logprob_rows: Sequence[Any]) -> list[float]:
    """`probability_rows` row by row through `probabilities`, which names the first bad row."""
    out: list[float] = []
    for rid, row_tokens, row in zip(rids, tokens, logprob_rows):
        size = len(row_tokens)
        if row is None:
            out += [math.nan] * size
            continue
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)) or len(row) > size:
            probabilities(rid, row, size)
        out += [math.nan] * (size - len(row)) + probabilities(rid, row, len(row))
    return out

"""ctypes bindings of core.cpp: `NativeCore`, the C++ `DraftCore` (see drafting/core.py).

Bindings only: every operation is one C call. The calls of every drafting step (the writes of
committed tokens, the proposal, the layout, the outcomes learned after the launch) go through
`fastcall.c`, a CPython extension, where it builds (it costs a fraction of a ctypes call when the
caches are cold); elsewhere through ctypes, with the same results. Handles are small Python objects holding the C id;
tries, corpora and merge jobs are freed when their handle is garbage (the policy drops them by
reference, as it drops Python tries), requests explicitly by `free_request`. `extend` calls are
queued and written in one C call before anything else reads or writes the tries, so the order of
trie operations is exactly the policy's.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import DraftConfig
from ..core import CORE_WORK, LABELS, BadBatch, CandidateBatch, RankWeights, Written, check_rank_weights
from .build import NativeCoreUnavailable, build, build_fastcall

logger = logging.getLogger(__name__)

ABI_VERSION = 9
_i32, _i64, _f64, _ptr = ctypes.c_int32, ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
_NAN = math.nan


class _Config(ctypes.Structure):
    """core.cpp's CoreConfig (field order is the ABI; meanings there)."""

    _fields_ = [(name, _i32) for name in (
        "num_draft_tokens", "trie_depth", "max_match", "min_match", "global_min_match", "global_below",
        "fuzzy_max_edits", "max_branch", "max_depth", "use_siblings", "use_global", "use_own", "group_max_nodes",
    )] + [(name, _f64) for name in (
        "alpha", "prior", "depth_prior", "min_score", "sibling_weight", "own_weight", "global_weight",
    )]

    @classmethod
    def of(cls, config: DraftConfig) -> _Config:
        return cls(
            config.num_draft_tokens, config.trie_depth, config.max_match_len, config.min_match_len,
            max(config.min_match_len, config.global_min_match_len), config.global_lookup_below,
            config.fuzzy_max_edits, config.max_branch, config.draft_depth, config.use_siblings, config.use_global,
            config.use_own_history, min(config.group_max_nodes, 2**31 - 1), config.alpha, config.prior_count,
            config.depth_prior, config.min_path_score, config.sibling_weight, config.own_weight, config.global_weight,
        )


_SIGNATURES = {
    "sgc_abi_version": ([], _i32),
    "sgc_core_new": ([ctypes.POINTER(_Config)], _ptr),
    "sgc_core_free": ([_ptr], None),
    "sgc_core_busy": ([_ptr, _ptr, _ptr, _i32], _i32),
    "sgc_trie_new": ([_ptr], _i32),
    "sgc_trie_free": ([_ptr, _i32], None),
    "sgc_trie_nodes": ([_ptr, _i32], _i64),
    "sgc_trie_set_members": ([_ptr, _i32, _i32], None),
    "sgc_trie_write": ([_ptr, _i32, _ptr, _i32, _ptr, _i64, _i32, _ptr], _i32),
    "sgc_corpus_new": ([_ptr], _i32),
    "sgc_corpus_free": ([_ptr, _i32], None),
    "sgc_corpus_set": ([_ptr, _i32, _i32, _i32], None),
    "sgc_request_new": ([_ptr, _i32, _i32, _i32, _ptr, _i32, _ptr, _i32], _i32),
    "sgc_request_free": ([_ptr, _i32], None),
    "sgc_request_last": ([_ptr, _i32], _i32),
    "sgc_extend_batch": ([_ptr, _ptr, _i32, _ptr, _ptr, _ptr], _i32),
    "sgc_extend_rows": ([_ptr, _ptr, _i32, _ptr, _i64, _ptr, _ptr, _i64, _ptr, _ptr, _ptr, _ptr], _i64),
    "sgc_merge_new": ([_ptr, _i32, _i32], _i32),
    "sgc_merge_free": ([_ptr, _i32], None),
    "sgc_merge_step": ([_ptr, _i32, _i64, _i64, _i32, _ptr], _i64),
    "sgc_propose": ([_ptr, _ptr, _i32, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i32, _ptr, _ptr, _ptr], _i32),
    "sgc_layout": ([_i32, _i32, _ptr, _ptr, _ptr, _ptr, _ptr, _i32, _ptr, _ptr, _ptr, _ptr], _i32),
    "sgc_accepted": ([_i32, _i32, _ptr, _ptr, _ptr, _i32, _ptr, _ptr, _ptr], _i32),
    "sgc_outcomes": ([_i32, _i32, _ptr, _ptr, _ptr, _ptr, _i32, _ptr, _i64, _ptr, _ptr, _ptr, _ptr], _i64),
}
_library: ctypes.PyDLL | None = None
_fastcall: object | None = None  # the extension module, once loaded
fastcall_unavailable: str | None = None  # why it is not, once tried
_stateless_addresses: dict[str, int] = {}  # the stateless calls' functions in the default build, by name


def load() -> ctypes.PyDLL:
    """The compiled library (built on first use), with its signatures declared."""
    global _library
    if _library is None:
        _library = load_library(build())
    return _library


def load_fastcall():
    """`fastcall.c`'s module (built on first use), or None where it cannot be built or loaded:
    the reason is logged once and kept in `fastcall_unavailable`."""
    global _fastcall, fastcall_unavailable
    if _fastcall is None and fastcall_unavailable is None:
        try:
            path = build_fastcall()
            spec = importlib.util.spec_from_file_location("_sgc_fastcall", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _fastcall = module
        except (NativeCoreUnavailable, ImportError, OSError) as exc:
            fastcall_unavailable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.info("draft core: per-step calls through ctypes (%s)", fastcall_unavailable)
    return _fastcall


def _function_address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


def load_library(path: Path) -> ctypes.PyDLL:
    """A build of core.cpp at ``path`` (this one's, or another version's with the same ABI, as
    `benchmarks/ab_core_replay.py` compares), its signatures declared."""
    try:
        # PyDLL: calls keep the GIL (they take microseconds), so no other Python thread, nor a
        # handle finalised by the garbage collector there, ever runs inside the core meanwhile.
        lib = ctypes.PyDLL(str(path))
    except OSError as exc:
        raise NativeCoreUnavailable(f"cannot load {path}: {exc}") from None
    version = getattr(lib, "sgc_abi_version", None)
    if version is None:
        raise NativeCoreUnavailable(f"{path} is not a build of core.cpp (no sgc_abi_version)")
    version.argtypes, version.restype = [], _i32
    if version() != ABI_VERSION:  # checked first: an older build may lack functions declared below
        raise NativeCoreUnavailable(f"{path} has ABI {version()}, expected {ABI_VERSION}")
    for name, (argtypes, restype) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def _address(array: np.ndarray) -> int | None:
    """Address of a C-contiguous, writable array's first byte (None if it is empty): the cheapest
    way to it (a quarter of `__array_interface__`'s cost)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(array)) if array.size else None


def _check(result: int) -> int:
    if result < 0:
        raise MemoryError("the native draft core could not allocate memory")
    return result


class _Owner:
    """Owns the C core; every handle refers to it, so it is freed after the last handle."""

    __slots__ = ("lib", "pointer")

    def __init__(self, lib: ctypes.PyDLL, config: DraftConfig) -> None:
        self.lib = lib
        self.pointer = lib.sgc_core_new(ctypes.byref(_Config.of(config)))
        if not self.pointer:
            raise MemoryError("the native draft core could not allocate memory")

    def __del__(self) -> None:
        if self.pointer:
            self.lib.sgc_core_free(self.pointer)
            self.pointer = None


class _Handle:
    """A trie, corpus or merge job of the C core, freed with this object."""

    __slots__ = ("owner", "id", "free", "refs")

    def __init__(self, owner: _Owner, id_: int, free: str, refs: tuple = ()) -> None:
        self.owner, self.id, self.free, self.refs = owner, _check(id_), free, refs

    def __del__(self) -> None:
        # In a garbage cycle the owner may be finalised first: the core (and this object) is gone.
        if self.owner.pointer:
            getattr(self.owner.lib, self.free)(self.owner.pointer, self.id)


class NativeCore:
    """The C++ data plane (same operations and results as `PythonCore`)."""

    name = "native"

    def __init__(self, config: DraftConfig, library: ctypes.PyDLL | None = None, fastcall: bool = True) -> None:
        """``library``: a build from `load_library` (default: this source's, built on first use);
        ``fastcall``: make the per-step calls through `fastcall.c` where it builds (False: ctypes)."""
        self.config = config
        self.lib = load() if library is None else library
        self._fast = load_fastcall() if fastcall else None
        self._extend_rows_function = _function_address(self.lib.sgc_extend_rows)
        self._propose_function = _function_address(self.lib.sgc_propose)
        self._owner = _Owner(self.lib, config)
        self._pointer = self._owner.pointer
        self._n = config.num_draft_tokens
        self._depth = config.trie_depth
        self._queue_requests: list[int] = []
        self._queue_offsets: list[int] = [0]
        self._queue_tokens: list[int] = []
        self._queue_probs: list[float] = []
        self._queue_has_probs = False
        self._extend_out = np.zeros(1, dtype=np.float64)
        self._extend_info = np.zeros(3, dtype=np.int64)
        self._extend_out_address, self._extend_info_address = _address(self._extend_out), _address(self._extend_info)

    @property
    def calls(self) -> str:
        """How the step's core calls are made here: ``fastcall`` or ``ctypes`` (with the reason the
        extension is not used, where one is known)."""
        if self._fast is not None:
            return "fastcall"
        return f"ctypes ({fastcall_unavailable})" if fastcall_unavailable else "ctypes"

    def busy(self) -> dict[str, tuple[float, int]]:
        # Writes still queued (`extend_many`) count once flushed, by the next call that needs them.
        seconds = np.zeros(len(CORE_WORK), dtype=np.float64)
        calls = np.zeros(len(CORE_WORK), dtype=np.int64)
        self.lib.sgc_core_busy(self._pointer, _address(seconds), _address(calls), len(CORE_WORK))  # ABI-checked
        return {work: (float(s), int(n)) for work, s, n in zip(CORE_WORK, seconds.tolist(), calls.tolist())}

    # -- tries and corpora
    def new_trie(self) -> _Handle:
        self._flush()
        return _Handle(self._owner, self.lib.sgc_trie_new(self._pointer), "sgc_trie_free")

    def trie_nodes(self, handle: _Handle) -> int:
        self._flush()
        return self.lib.sgc_trie_nodes(self._pointer, handle.id)

    def set_members(self, handle: _Handle, members: int) -> None:
        self._flush()
        self.lib.sgc_trie_set_members(self._pointer, handle.id, members)

    def write(self, handle: _Handle, active: list[int], tokens: list[int], owner: int) -> list[int]:
        self._flush()
        pointers = np.asarray(active, dtype=np.int32)
        values = np.asarray(tokens, dtype=np.int32)
        out = np.empty(self._depth + 1, dtype=np.int32)
        count = _check(self.lib.sgc_trie_write(self._pointer, handle.id, _address(pointers), len(pointers),
                                               _address(values), len(values), owner, _address(out)))
        return out[:count].tolist()

    def new_corpus(self) -> _Handle:
        self._flush()
        return _Handle(self._owner, self.lib.sgc_corpus_new(self._pointer), "sgc_corpus_free")

    def set_generations(self, corpus: _Handle, current: _Handle, previous: _Handle | None) -> None:
        self._flush()
        corpus.refs = (current, previous)  # the corpus reads them: keep them alive
        self.lib.sgc_corpus_set(self._pointer, corpus.id, current.id, -1 if previous is None else previous.id)

    # -- requests
    def new_request(self, group_trie: _Handle, corpus: _Handle, slot: int, active: list[int], tail: list[int]) -> int:
        self._flush()
        pointers = np.asarray(active, dtype=np.int32)
        last = np.asarray(tail, dtype=np.int32)
        return _check(self.lib.sgc_request_new(self._pointer, group_trie.id, corpus.id, slot, _address(pointers),
                                               len(pointers), _address(last), len(last)))

    def free_request(self, request: int) -> None:
        self._flush()
        self.lib.sgc_request_free(self._pointer, request)

    def last_token(self, request: int) -> int:
        self._flush()
        return self.lib.sgc_request_last(self._pointer, request)

    def extend(self, request: int, tokens: list[int], probs: list[float] | None) -> None:
        self.extend_many((request,), (tokens,), probs)

    def extend_many(self, requests: Sequence[int], token_lists: Sequence[list[int]], probs: list[float] | None) -> None:
        queue_tokens, offsets = self._queue_tokens, self._queue_offsets
        self._queue_requests += requests
        for tokens in token_lists:
            queue_tokens += tokens
            offsets.append(len(queue_tokens))
        if probs is None:
            self._queue_probs += [_NAN] * (len(queue_tokens) - len(self._queue_probs))
        else:
            self._queue_probs += probs
            self._queue_has_probs = True

    def request_batch(self, requests: Sequence[int]) -> np.ndarray:
        return np.asarray(requests, dtype=np.int32)

    def extend_rows(self, requests: np.ndarray, tokens: np.ndarray, lens: np.ndarray,
                    logprobs: np.ndarray | None, counts: np.ndarray | None) -> Written:
        self._flush()  # earlier writes first: the order of trie operations is the policy's
        out, info = self._extend_out, self._extend_info  # [prob sum], [bad kind, bad index, tokens written]
        last = np.empty(len(requests), dtype=np.int64)
        if self._fast is not None:
            result = self._fast.extend_rows(self._extend_rows_function, self._pointer, requests, tokens, lens,
                                            logprobs, counts, out, info, last)
        else:
            result = self._extend_rows_ctypes(requests, tokens, lens, logprobs, counts, last)
        if result == -2:
            raise BadBatch(int(info[0]), int(info[1]))
        return Written(_check(result), float(out[0]), last, int(info[2]))

    def _extend_rows_ctypes(self, requests: np.ndarray, tokens: np.ndarray, lens: np.ndarray,
                            logprobs: np.ndarray | None, counts: np.ndarray | None, last: np.ndarray) -> int:
        return self.lib.sgc_extend_rows(
            self._pointer, _address(requests), len(requests), _address(tokens), tokens.shape[1], _address(lens),
            None if logprobs is None else _address(logprobs), 0 if logprobs is None else logprobs.shape[1],
            None if counts is None else _address(counts), self._extend_out_address, self._extend_info_address,
            _address(last))

    def _flush(self) -> None:
        if not self._queue_requests:
            return
        requests = np.asarray(self._queue_requests, dtype=np.int32)
        offsets = np.asarray(self._queue_offsets, dtype=np.int64)
        tokens = np.asarray(self._queue_tokens, dtype=np.int32)
        probs = np.asarray(self._queue_probs, dtype=np.float64) if self._queue_has_probs else None
        self._queue_requests, self._queue_offsets, self._queue_tokens, self._queue_probs = [], [0], [], []
        self._queue_has_probs = False
        _check(self.lib.sgc_extend_batch(self._pointer, _address(requests), len(requests), _address(offsets),
                                         _address(tokens), None if probs is None else _address(probs)))

    # -- merges
    def merge_start(self, source: _Handle, destination: _Handle) -> _Handle:
        self._flush()
        return _Handle(self._owner, self.lib.sgc_merge_new(self._pointer, source.id, destination.id), "sgc_merge_free",
                       (source, destination))

    def merge_step(self, job: _Handle, budget: int, min_count: int, max_depth: int) -> tuple[int, bool]:
        self._flush()
        finished = ctypes.c_int32(0)
        visited = _check(self.lib.sgc_merge_step(self._pointer, job.id, budget, min_count, min(max_depth, 2**31 - 1),
                                                 ctypes.byref(finished)))
        return visited, bool(finished.value)

    # -- drafting
    def propose(self, requests: Sequence[int], rank_weights: RankWeights | None = None) -> CandidateBatch:
        """``rank_weights``: contiguous float64 (edges, intercepts, slopes), checked by the drafter."""
        self._flush()
        ids = requests if isinstance(requests, np.ndarray) else np.asarray(requests, dtype=np.int32)
        size = len(ids)
        batch = CandidateBatch.empty(size, self._n)
        if not size:
            return batch
        if rank_weights is not None:
            batch.rank_sums = np.empty(max(self._n - 1, 1), dtype=np.float64)
        if self._fast is not None:
            edges, intercepts, slopes = (None, None, None) if rank_weights is None else rank_weights
            result = self._fast.propose(self._propose_function, self._pointer, ids, batch.block, batch.scores, self._n,
                                        edges, intercepts, slopes, batch.rank_sums)
        else:
            result = self._propose_ctypes(ids, batch, rank_weights)
        if result == -2:
            check_rank_weights(rank_weights)  # names what is wrong with them
            raise ValueError("rank_weights: the native core refused them (edges must rise, weights be finite)")
        _check(result)
        if rank_weights is not None:
            batch.rank_sums = batch.rank_sums[: self._n - 1]
        return batch

    def _propose_ctypes(self, ids: np.ndarray, batch: CandidateBatch, rank_weights: RankWeights | None) -> int:
        base, step = _address(batch.block), 4 * len(ids) * self._n  # tokens, parents, depths, labels, lengths
        weights: tuple = (None, 0, None, None, None)
        if rank_weights is not None:
            edges, intercepts, slopes = rank_weights
            # no edges (one linear piece): any valid address, never read; _address gives None for an empty array
            edges_address = _address(edges) if len(edges) else _address(intercepts)
            weights = (edges_address, len(edges), _address(intercepts), _address(slopes), _address(batch.rank_sums))
        return self.lib.sgc_propose(self._pointer, _address(ids), len(ids), base, base + step, base + 2 * step,
                                    base + 3 * step, _address(batch.scores), base + 4 * step, *weights)

    def layout(self, batch: CandidateBatch, width: int, budgets: Sequence[int] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return native_layout(batch, width, budgets, self._fast is not None)

    def accepted(self, batch: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
        return native_accepted(batch, width, committed)

    def outcomes(self, batch: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return native_outcomes(batch, width, tokens, lens, self._fast is not None)


def _candidate_arrays(batch: CandidateBatch) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Addresses of (tokens, parents, depths, labels, lengths) int32 and the arrays that hold them."""
    if batch.block is not None:
        size, n = batch.shape
        base, step = _address(batch.block), 4 * size * n
        return (base, base + step, base + 2 * step, base + 3 * step, base + 4 * step), []
    held = [np.require(a, np.int32, ["C", "W"])  # held: the call reads them
            for a in (batch.tokens, batch.parents, batch.depths, batch.labels, batch.lengths)]
    return tuple(_address(a) for a in held), held


def native_accepted(batch: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
    """`core.accepted_rows` in C (stateless)."""
    lib = load()
    size, n = batch.shape
    mask = np.zeros((size, n), dtype=np.bool_)
    if not size:
        return mask
    bounds = list(itertools.accumulate(map(len, committed), initial=0))  # (lists: cheaper than NumPy here)
    offsets = np.array(bounds, dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(committed), dtype=np.int64, count=bounds[-1])
    inputs, _held = _candidate_arrays(batch)
    _check(lib.sgc_accepted(size, n, inputs[0], inputs[1], inputs[4], width, _address(offsets),
                            _address(flat) if len(flat) else _address(offsets), _address(mask)))
    return mask


def native_outcomes(batch: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray, fastcall: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`core.outcome_rows` in C (stateless); ``tokens`` [batch, stride], ``lens``: contiguous int64;
    ``fastcall``: through `fastcall.c` where it builds."""
    lib = load()
    size, n = batch.shape
    rows = np.empty(size * n, dtype=np.int32)
    scores = np.empty(size * n, dtype=np.float64)
    accepted = np.empty(size * n, dtype=np.bool_)
    if not size or not tokens.size:
        return rows[:0], scores[:0], accepted[:0]
    fast = load_fastcall() if fastcall and batch.block is not None else None
    if fast is not None:
        count = _check(fast.outcomes(_function(lib, "sgc_outcomes"), batch.block, batch.scores, n, width, tokens, lens,
                                     rows, scores, accepted))
        return rows[:count], scores[:count], accepted[:count]
    inputs, _held = _candidate_arrays(batch)
    values = np.require(batch.scores, np.float64, ["C", "W"])
    count = _check(lib.sgc_outcomes(size, n, inputs[0], inputs[1], inputs[4], _address(values), width,
                                    _address(tokens), tokens.shape[1], _address(lens), _address(rows),
                                    _address(scores), _address(accepted)))
    return rows[:count], scores[:count], accepted[:count]


def native_layout(batch: CandidateBatch, width: int, budgets: Sequence[int] | None, fastcall: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`core.layout_rows` in C (stateless); ``fastcall``: through `fastcall.c` where it builds."""
    lib = load()
    size, n = batch.shape
    out = np.empty(size * width + (size + 1) * LABELS, dtype=np.int64)  # tokens, label counts, their totals
    tokens = out[:size * width].reshape(size, width)
    labels = out[size * width:-LABELS].reshape(size, LABELS)
    mask = np.empty((size, width, width), dtype=np.bool_)
    totals = out[-LABELS:]
    if not size:
        totals[:] = 0
        return tokens, mask, labels, totals
    limits = None if budgets is None else np.asarray(budgets, dtype=np.int32)
    fast = load_fastcall() if fastcall and batch.block is not None else None
    if fast is not None:
        _check(fast.layout(_function(lib, "sgc_layout"), batch.block, n, width, limits, out, mask))
        return tokens, mask, labels, totals
    inputs, _held = _candidate_arrays(batch)
    base = _address(out)
    _check(lib.sgc_layout(size, n, *inputs, width, None if limits is None else _address(limits), base,
                          _address(mask), base + 8 * size * width))
    return tokens, mask, labels, totals


def _function(lib: ctypes.PyDLL, name: str) -> int:
    """The address of the default build's function ``name`` (the only build the stateless calls use)."""
    address = _stateless_addresses.get(name)
    if address is None:
        address = _stateless_addresses[name] = _function_address(getattr(lib, name))
    return address

"""Aborting one request of an in-process ``sglang.Engine`` (the Engine has no public abort; a
server has ``/abort_request``): SGLang frees the request's KV, the worker its drafter state."""

from __future__ import annotations


def abort_engine_request(engine, rid: str) -> None:
    if not rid:
        raise ValueError("abort needs a request id, got an empty one")
    engine.tokenizer_manager.abort_request(rid=rid)

"""What the frontend endpoint reads from SGLang's ``StreamExecutor`` (the program state a
``RuntimeEndpoint`` receives): which fork a branch came from, and the text to send."""

from __future__ import annotations

import hashlib
import os


def fork_group_tag(executor) -> str | None:
    """One tag per fork: branches share the program's argument object and the fork's prefix text
    (``StreamExecutor.fork`` sets ``fork_start_text_pos`` on every branch); None outside a fork."""
    start = getattr(executor, "fork_start_text_pos", None)
    if start is None:
        return None
    prefix = executor.text_[:start]
    digest = hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()
    return f"fork-{os.getpid()}-{id(executor.arguments):x}-{start}-{digest}"


def program_text(executor) -> str:
    """The text a generation call continues (what ``RuntimeEndpoint.generate`` sends)."""
    return executor.text_

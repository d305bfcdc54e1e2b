"""Start SGLang's offline ``Engine`` so that a crashing scheduler raises instead of killing us.

The public face of ``sgl_consensus.adapter.engine_lifecycle`` (which holds the SGLang internals it
touches: the Engine's process-tree kill and its signal handlers)."""

from sgl_consensus.adapter.engine_lifecycle import SchedulerDiedError, environment, start_engine

__all__ = ["SchedulerDiedError", "environment", "start_engine"]

"""Helpers for tests and examples: tiny models built locally (nothing from a model hub)."""

"""The thin SGLang adapter: everything that depends on SGLang 0.5.23's internals lives here."""

SGLANG_VERSION = "0.5.23"
ALGORITHM_NAME = "CONSENSUS"

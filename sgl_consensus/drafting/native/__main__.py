"""`python -m sgl_consensus.drafting.native`: build the native draft core now and print its path;
then build the per-step fast calls (`fastcall.c`) and print theirs, or why they are not built (the
core then serves them through ctypes)."""

from .build import NativeCoreUnavailable, build, build_fastcall

try:
    print(build())
except NativeCoreUnavailable as exc:
    raise SystemExit(f"sgl-consensus: {exc}") from None
try:
    print(build_fastcall())
except NativeCoreUnavailable as exc:
    print(f"sgl-consensus: per-step calls through ctypes: {exc}")

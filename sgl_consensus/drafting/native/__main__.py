"""`python -m sgl_consensus.drafting.native`: build the native draft core now and print its path."""

from .build import NativeCoreUnavailable, build

try:
    print(build())
except NativeCoreUnavailable as exc:
    raise SystemExit(f"sgl-consensus: {exc}") from None

"""The drafter's C++ data plane: `core.cpp` (the code), `build.py` (compiles it into the user's
cache), `binding.py` (ctypes bindings: `NativeCore`)."""

from .binding import NativeCore, native_layout
from .build import NativeCoreUnavailable

__all__ = ["NativeCore", "NativeCoreUnavailable", "native_layout"]

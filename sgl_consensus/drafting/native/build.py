"""Compile `core.cpp` into a shared library, once per source version, into the user's cache.

The library has a C ABI (no Python headers), so one build serves every Python version; its file
name carries a digest of the source and flags, so an edited source is rebuilt and a stale library
is never loaded. Concurrent builds (test workers, tensor-parallel ranks) each compile to a private
temporary file and rename it into place: the last rename wins, every one is complete.

`fastcall.c`, the per-step calls as a CPython extension (see its header), is built the same way
where Python's and NumPy's headers are found; its digest also covers the Python and NumPy it is
built for. Without it the binding makes the same calls through ctypes.

    python -m sgl_consensus.drafting.native      # build now (the set-up scripts do), print the path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("core.cpp")
FASTCALL_SOURCE = Path(__file__).with_name("fastcall.c")
# -ffp-contract=off: no fused multiply-adds, so scores round exactly as the Python reference's.
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fvisibility=hidden")
FASTCALL_FLAGS = ("-x", "c", "-O2", "-shared", "-fPIC", "-fvisibility=hidden")


class NativeCoreUnavailable(RuntimeError):
    """The native core cannot be built or loaded (the message says why, in one line)."""


def cache_dir() -> Path:
    base = os.environ.get("CONSENSUS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sgl-consensus"
    return Path(base) / "native"


def compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise NativeCoreUnavailable("no C++ compiler found (install g++ or set CXX)")


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / f"core-{digest}.so"


def build(force: bool = False) -> Path:
    """The compiled library's path, compiling it first if needed."""
    return _built(SOURCE, library_path(), FLAGS, force)


def _built(source: Path, target: Path, flags: tuple[str, ...], force: bool) -> Path:
    """``target``, compiled from ``source`` first unless it exists (or ``force``)."""
    if target.exists() and not force:
        return target
    cxx = compiler()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NativeCoreUnavailable(f"cannot create {target.parent}: {exc.strerror}") from None
    return compile_library(source, target, cxx, flags)


def fastcall_headers() -> tuple[str, str]:
    """The include folders of this Python and of the NumPy it imports (NativeCoreUnavailable,
    saying which is missing, where either has no headers)."""
    import numpy

    python, arrays = sysconfig.get_paths()["include"], numpy.get_include()
    if not (Path(python) / "Python.h").is_file():
        raise NativeCoreUnavailable(f"no Python.h in {python} (install this Python's development headers)")
    if not (Path(arrays) / "numpy" / "arrayobject.h").is_file():
        raise NativeCoreUnavailable(f"no numpy/arrayobject.h in {arrays}")
    return python, arrays


def fastcall_path(headers: tuple[str, str]) -> Path:
    import numpy

    identity = f"{' '.join(FASTCALL_FLAGS)} {headers} {sysconfig.get_config_var('EXT_SUFFIX')} {numpy.__version__}"
    digest = hashlib.sha256(FASTCALL_SOURCE.read_bytes() + identity.encode()).hexdigest()[:16]
    return cache_dir() / f"fastcall-{digest}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def build_fastcall(force: bool = False) -> Path:
    """The compiled extension's path, compiling it first if needed (NativeCoreUnavailable, with
    the reason, where it cannot be built)."""
    headers = fastcall_headers()
    return _built(FASTCALL_SOURCE, fastcall_path(headers), (*FASTCALL_FLAGS, *(f"-I{h}" for h in headers)), force)


def compile_library(source: Path, target: Path, cxx: str | None = None, flags: tuple[str, ...] = FLAGS) -> Path:
    """Compile ``source`` (a version of core.cpp, by default) with ``flags`` into ``target``,
    through a private temporary file renamed into place."""
    cxx = cxx or compiler()
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([cxx, *flags, str(source), "-o", tmp], capture_output=True, text=True)
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()[:200])
            raise NativeCoreUnavailable(f"{cxx} failed to compile {source.name}: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


"""Make the CPU stand-in ``sgl_kernel`` (in sgl_consensus/cpu/_boot) importable as a top-level
package, as SGLang processes see it after ``sgl_consensus.cpu.activate()``. Where CUDA is available
these tests are not collected: the stand-ins would shadow SGLang's real kernels."""

import sys
from pathlib import Path

from sgl_consensus.testing.devices import cuda_available

if cuda_available():
    collect_ignore_glob = ["test_*.py"]
else:
    _BOOT = Path(__file__).resolve().parents[2] / "sgl_consensus" / "cpu" / "_boot"
    if str(_BOOT) not in sys.path:
        sys.path.insert(0, str(_BOOT))

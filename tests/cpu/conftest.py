"""Make the CPU stand-in ``sgl_kernel`` (in sgl_consensus/cpu/_boot) importable as a top-level
package, as SGLang processes see it after ``sgl_consensus.cpu.activate()``."""

import sys
from pathlib import Path

_BOOT = Path(__file__).resolve().parents[2] / "sgl_consensus" / "cpu" / "_boot"
if str(_BOOT) not in sys.path:
    sys.path.insert(0, str(_BOOT))

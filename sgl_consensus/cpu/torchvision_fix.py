"""Make a CUDA build of torchvision importable next to CPU torch.

The registry only ships CUDA builds of torchvision. Next to ``torch==2.13.0+cpu`` its ``_C.so``
fails to load, and ``torchvision/_meta_registrations.py`` then registers fake kernels for
``torchvision::nms``/``qnms`` ops that were never defined, so ``import torchvision`` raises. That in
turn breaks ``transformers`` (image utilities) and so SGLang. Defining the two schemas first lets the
import finish; the ops stay unusable (nothing on the text-model path calls them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # kept alive for the life of the process: dropping it would drop the schemas


def _torchvision_extension_loads(package_dir: Path) -> bool:
    import torch

    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError, ImportError):
        return False
    return True


def apply() -> bool:
    """Define the missing schemas if torchvision's extension cannot load. Returns True if applied.

    Must run before torchvision is first imported; harmless (and a no-op) otherwise.
    """
    global _library
    if _library is not None:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    if _torchvision_extension_loads(Path(spec.origin).parent):
        return False
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        _library.define(name + schema)
    return True

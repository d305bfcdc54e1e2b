"""The demo's quiet console: start-up noise goes to a log, real errors are still shown."""

from __future__ import annotations

import io
import subprocess
import sys

from sgl_consensus.console import engine_output_to, meaningful_lines, show_engine_output

NOISY_START = """\
/x/sglang/srt/layers/quantization/awq/awq.py:53: UserWarning: Only CUDA, HIP and XPU support AWQ currently.
  warnings.warn(f"Only CUDA, HIP and XPU support AWQ currently.")
/x/sglang/kernels/ops/attention/fla/utils.py:223: UserWarning: Triton is not supported on current platform, roll back to CPU.
  warnings.warn(
[2026-11-30 10:08:45] Using custom SIGQUIT handler: <function _launch_phase_sigquit at 0x7f>
Multi-thread loading shards:   0% Completed | 0/1\rMulti-thread loading shards: 100% Completed | 1/1
"""


def test_start_up_noise_is_dropped_and_errors_are_kept():
    assert meaningful_lines(NOISY_START) == []
    error = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: out of memory\n"
    assert meaningful_lines(NOISY_START + error) == error.splitlines()


def test_child_processes_write_to_the_log_and_the_console_is_restored(tmp_path, capfd):
    log = tmp_path / "engine.log"
    with engine_output_to(log):
        subprocess.run([sys.executable, "-c", "import sys; print('from a child', file=sys.stderr)"], check=True)
    print("after", file=sys.stderr)
    assert "from a child" in log.read_text()
    assert "after" in capfd.readouterr().err
    shown = io.StringIO()
    assert show_engine_output(log, shown) and "from a child" in shown.getvalue()

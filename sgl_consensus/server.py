"""Launch ``sgl-consensus serve`` as a child process and wait until it is healthy."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        import psutil

        try:
            procs = [*psutil.Process(self.process.pid).children(recursive=True), psutil.Process(self.process.pid)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=60)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def launch_server(model_path: str | Path, server_args: list[str], device: str = "cpu",
                  timeout_s: float = 300, env: dict | None = None) -> ServerHandle:
    """Start the server on a free loopback port; raises RuntimeError with the log tail if it fails."""
    port = free_port()
    cmd = [sys.executable, "-m", "sgl_consensus.cli", "serve", "--device", device, "--",
           "--model-path", str(model_path), "--host", "127.0.0.1", "--port", str(port), *server_args]
    return start_and_wait(cmd, port, "server", _answers_health, timeout_s, env)


def start_and_wait(cmd: list[str], port: int, what: str, ready: Callable[[str], bool], timeout_s: float,
                   env: dict | None = None) -> ServerHandle:
    """Run ``cmd`` (serving on loopback ``port``) with its output in a log; return once ``ready(url)``.
    Raises RuntimeError with the log tail if it exits or is not ready within ``timeout_s``."""
    log_path = Path(tempfile.mkstemp(prefix=f"sgl-consensus-{what}-", suffix=".log")[1])
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    handle = ServerHandle(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} exited with code {proc.returncode}:\n{handle.log_tail()}")
        if ready(handle.url):
            return handle
        time.sleep(0.5)
    handle.close()
    raise RuntimeError(f"the {what} did not become ready within {timeout_s:.0f} s:\n{handle.log_tail()}")


def _answers_health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False

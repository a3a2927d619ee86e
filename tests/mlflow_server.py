"""A real ``mlflow server`` for tests that compare with MLflow or need its auth: started on a free
loopback port over a given tracking DB, stopped with its whole process group.

Shared by tests/test_access_control.py (basic-auth app) and tests/test_trace_metrics.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.disposable_servers import free_port

SERVER_START_TIMEOUT_S = 180


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            # The server runs uvicorn workers in its own process group: stop them all.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def wait_until_up(server: MlflowServer, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within {timeout_s}s:\n{server.log_tail()}")


def start_mlflow_server(
    backend_store_uri: str,
    workdir: Path,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> MlflowServer:
    """``mlflow server`` (one worker) on ``backend_store_uri``, logging to ``workdir``; call
    ``wait_until_up`` before using it and ``stop`` when done."""
    port = free_port()
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    child_env.pop("MLFLOW_TRACKING_URI", None)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", *extra_args),
                *("--backend-store-uri", backend_store_uri),
                *("--default-artifact-root", str(workdir / "artifacts")),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            ],
            cwd=workdir,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return MlflowServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)

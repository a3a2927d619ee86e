"""Run the service as a real uvicorn process on loopback, and measure it from outside."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_status_kb(pid: int, field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` style field of /proc/<pid>/status, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mb(self) -> float | None:
        kb = read_status_kb(self.pid, "VmHWM")
        return None if kb is None else kb / 1024

    def rss_mb(self) -> float | None:
        kb = read_status_kb(self.pid, "VmRSS")
        return None if kb is None else kb / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(
    db_url: str,
    *,
    port: int | None = None,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> ServiceProcess:
    """Start ``insights-server`` (one uvicorn worker) and wait until /ready says 200."""
    port = port or free_port()
    server = Path(sys.executable).with_name("insights-server")
    command = [str(server), "--backend-store-uri", db_url, "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    # The service of this checkout (the venv may have another one installed in editable mode).
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    environment = {
        **os.environ,
        "INSIGHTS_LOG_LEVEL": "warning",
        "INSIGHTS_STORE": "off",  # bench.run and bench.load turn it on with a path of their own
        **(env or {}),
        "PYTHONPATH": python_path,
    }
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"insights-server exited ({process.returncode}); see {log_path}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return ServiceProcess(url, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"insights-server not ready after {timeout_s} s; see {log_path}")


def wait_for_store(url: str, *, timeout_s: float, log: Callable[[str], None] = print) -> float:
    """Wait until ``/ready`` says the analytics store answers; returns the seconds waited."""
    started = time.monotonic()
    last_report = 0.0
    while True:
        waited = time.monotonic() - started
        try:
            store = httpx.get(f"{url}/ready", timeout=10).json().get("store", {})
        except httpx.TimeoutException:  # the sync's last DuckDB commit runs on the event loop
            store = {"state": "not answering /ready within 10 s"}
        if store.get("state") == "ready":
            return waited
        if store.get("state") == "off":
            raise RuntimeError("the service runs with its analytics store off")
        if waited > timeout_s:
            raise RuntimeError(f"analytics store not ready after {timeout_s:.0f} s: {store}")
        if waited - last_report >= 30:
            last_report = waited
            log(f"waiting for the analytics store ({waited:.0f} s): {store}")
        time.sleep(1.0)

"""Real HTTP servers for the trading tests: uvicorn on free loopback ports, in a thread or as a `krx` subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

SECRET = "x" * 48  # the test's signing secret (>= 32 bytes)
ENV = {"EXECUTION_JWT_SECRET": SECRET, "EXECUTION_SERVICE_CREDENTIAL": "service-credential-for-tests",
       "KIS_APP_KEY": "test-app-key", "KIS_APP_SECRET": "test-app-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen | None = None, limit_s: float = 60) -> None:
    """Wait until something accepts on 127.0.0.1:port (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class ThreadServer:
    """An ASGI app served by a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_listening(self.port)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ProcessServer:
    """`krx <args>` as a real subprocess that serves on `port`."""

    def __init__(self, args: list[str], port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("KRX__", "SLACK_", "EXECUTION_", "KIS_"))}
        full.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "faces.cli", *args], env=full, cwd=env["KRX_HOME"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_listening(port, self.proc)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def broker_calls(broker_url: str) -> dict:
    return httpx.get(f"{broker_url}/mock/calls", timeout=10).json()

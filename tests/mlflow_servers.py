"""A real `mlflow server` on 127.0.0.1 for the tests: started, killed and restarted on the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Server:
    """A real `mlflow server` in its own process group (it starts a uvicorn worker), on a sqlite store."""

    def __init__(self, store: Path, port: int):
        store.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # GenAI job runner: not needed here
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
        command += ["--artifacts-destination", str(store / "mlartifacts"), "--workers", "1"]
        with (store / "server.log").open("ab") as log_file:
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.uri = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(self.uri + "/health") or self.process.poll() is not None, 90, "mlflow server")
        assert self.process.poll() is None, (store / "server.log").read_text()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

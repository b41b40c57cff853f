"""Starting real pretraining runs for the tests: `launch/pretrain.sh` under the deepspeed launcher with
DeepSpeed's CPU accelerator and gloo, or `bertpipe pretrain` as a single process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_SH = ROOT / "launch" / "pretrain.sh"
TINY = ROOT / "launch" / "configs" / "tiny"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR="cpu", BERTPIPE_PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    env.update(extra)
    return env


def start_launcher(dataset: Path, output: Path, *args: str, ranks: int = 2, log: Path | None = None, **env: str):
    """`launch/pretrain.sh --phase tiny` with `ranks` CPU ranks on this machine; returns the Popen."""
    command = [str(PRETRAIN_SH), "--phase", "tiny", "--gpus-per-node", str(ranks)]
    command += ["--master-port", str(free_port()), "--dataset", str(dataset), "--output", str(output), *args]
    handle = (log or output.with_suffix(".log")).open("w")
    return subprocess.Popen(command, cwd=ROOT, env=cpu_env(**env), stdout=handle, stderr=subprocess.STDOUT)


def run_launcher(dataset: Path, output: Path, *args: str, ranks: int = 2, timeout: float = 300, **env: str):
    process = start_launcher(dataset, output, *args, ranks=ranks, **env)
    code = process.wait(timeout=timeout)
    return code, output.with_suffix(".log").read_text()


def run_single(dataset: Path, output: Path, *args: str, config: Path = TINY, timeout: float = 300, **env: str):
    """`bertpipe pretrain` in one process (a world of one, no launcher)."""
    command = [sys.executable, "-m", "pipeline.cli", "pretrain", "--config", str(config)]
    command += ["--dataset", str(dataset), "--output", str(output), *args]
    return subprocess.run(command, cwd=ROOT, env=cpu_env(**env), capture_output=True, text=True, timeout=timeout)


def metrics(output: Path) -> list[dict]:
    path = output / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            records.append(json.loads(line))
    return records


def training_steps(output: Path) -> list[dict]:
    return [r for r in metrics(output) if "loss" in r]


def wait_for_step(process: subprocess.Popen, output: Path, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["step"] >= step for r in training_steps(output)):
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before step {step}")
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


def rank_processes(launcher: subprocess.Popen) -> dict[int, psutil.Process]:
    """The trainer processes (not DataLoader workers) under a launcher, by global rank."""
    found = {}
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            is_trainer = "pipeline.cli" in " ".join(child.cmdline())
            if is_trainer and "pipeline.cli" not in " ".join(child.parent().cmdline()):  # not a loader worker
                found[int(child.environ()["RANK"])] = child
        except (psutil.Error, KeyError):
            continue
    return found


def fingerprints(output: Path, rank: int) -> dict[int, str]:
    path = output / "fingerprints" / f"rank{rank}.jsonl"
    return {r["step"]: r["batches"] for r in map(json.loads, path.read_text().splitlines())}


def status(output: Path) -> dict:
    return json.loads((output / "run_status.json").read_text())


@contextlib.contextmanager
def busy_cpu(processes: int | None = None):
    """Processes that spin on every core (one more than there are cores by default) while the block runs: a
    machine kept busy by other jobs, for the races that only show under load."""
    count = processes if processes is not None else (os.cpu_count() or 1) + 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()

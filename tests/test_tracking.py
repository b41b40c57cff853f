"""pipeline/handoff/tracking.py and launch/mlflow_server.sh against real MLflow stores: the embedded sqlite one and
`mlflow server` processes on 127.0.0.1, started, killed and restarted here."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from pipeline.handoff.tracking import MAX_PARAM_VALUE, TRUNCATED, RunTracker, flatten_params, tracking_uri
from tests.mlflow_servers import answers, wait_for
from tests.pretrain_runs import free_port

ROOT = Path(__file__).resolve().parents[1]
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
FAST = {"flush_interval_s": 0.2, "retry_max_s": 1.0}  # a test's patience, not the trainer's defaults


@pytest.fixture
def http_env() -> Iterator[None]:
    """No HTTP timeout or retry count exported by the environment the suite runs in: the test sees MLflow's
    defaults and the tracker's own."""
    saved = {name: os.environ.pop(name, None) for name in HTTP_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def messages(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    ours = [r for r in caplog.records if r.name == "pipeline.handoff.tracking" and r.levelno == level]
    return [r.getMessage() for r in ours if text in r.getMessage()]


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


# -- no store needed ---------------------------------------------------------------------------------------


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri(tmp_path) == "http://tracking:5000"
    assert tracking_uri(tmp_path, "http://explicit:5000") == "http://explicit:5000"


def test_flatten_params_dots_and_truncates():
    flat = flatten_params({"train": {"lr": 1e-4, "sched": {"warmup": 10}}, "tags": [1, 2], "empty": {}, "x": None})
    assert flat == {"train.lr": "0.0001", "train.sched.warmup": "10", "tags": "[1, 2]", "empty": "{}", "x": "None"}
    long = flatten_params({"long": "y" * (MAX_PARAM_VALUE + 10)})["long"]
    assert len(long) == MAX_PARAM_VALUE and long.endswith(TRUNCATED)


def test_queue_skips_missing_values_and_drops_the_oldest_when_full(caplog):
    tracker = RunTracker("http://127.0.0.1:9", max_pending=100, system_metrics_interval_s=None)
    tracker.log_metrics(1, {"step": 1, "loss": 2.0, "mfu": None, "nan": math.nan, "inf": math.inf, "name": "x"})
    assert tracker.pending == 1
    for step in range(2, 152):
        tracker.log_metrics(step, {"loss": 1.0})
    assert tracker.pending == 100
    assert len(messages(caplog, "backlog is full")) == 1
    assert tracker.finish() == 151  # never started: nothing was sent


# -- embedded sqlite store ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_store_logs_and_a_second_tracker_continues_the_run(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.handoff.tracking")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"train": {"lr": 1e-4, "train_steps": 8}, "model": {"hidden": 64}, "note": "z" * 7000}
    tracker = RunTracker.for_output(tmp_path, system_metrics_interval_s=0.1, **FAST)
    assert tracker.uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    run_id = tracker.start("bert-tiny", run_name="phase1", tags={"phase": "1"})
    assert run_id is not None and tracker.run_id == run_id
    tracker.log_params(config)
    for step in range(1, 5):
        tracker.log_metrics(step, {"step": step, "loss": 10.0 / step, "lr": 1e-4, "mfu": None, "bad": math.nan})
    tracker.log_metrics(4, {"eval_mlm_loss": 2.5})
    time.sleep(0.3)  # a system metrics sample or two
    tracker.set_tags({"state": "checkpointed"})
    assert tracker.finish() == 0

    client = MlflowClient(tracker.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "phase1"
    assert run.data.params["train.lr"] == "0.0001" and run.data.params["model.hidden"] == "64"
    assert len(run.data.params["note"]) == MAX_PARAM_VALUE and run.data.params["note"].endswith(TRUNCATED)
    assert run.data.tags["phase"] == "1" and run.data.tags["state"] == "checkpointed"
    assert steps(client, run_id, "loss") == [1, 2, 3, 4]
    assert [m.value for m in client.get_metric_history(run_id, "eval_mlm_loss")] == [2.5]
    assert "bad" not in run.data.metrics and "mfu" not in run.data.metrics and "step" not in run.data.metrics
    assert "system/cpu_utilization_percentage" in run.data.metrics
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()

    # The resumed trainer: same run, steps go on, the same config logged again is no error.
    caplog.clear()
    resumed = RunTracker.for_output(tmp_path, system_metrics_interval_s=None, **FAST)
    assert resumed.start("bert-tiny", run_id=run_id) == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed.log_params(config)
    resumed.log_params({"train": {"train_steps": 16}, "resume": {"from_step": 4}})
    for step in range(5, 9):
        resumed.log_metrics(step, {"loss": 10.0 / step})
    assert resumed.finish("KILLED") == 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert steps(client, run_id, "loss") == list(range(1, 9))
    assert run.data.params["train.train_steps"] == "8" and run.data.params["resume.from_step"] == "4"
    changed = messages(caplog, "is not logged")
    assert len(changed) == 1 and "train.train_steps" in changed[0]


# -- a real server ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_registration_waits_for_a_store_that_is_still_being_created(tmp_path):
    """Under load a new sqlite store takes seconds to create: the trainer's start does not wait that long, and
    a registration right after used to take "no run yet" for "MLflow unavailable"."""
    uri = f"sqlite:///{tmp_path}/new.db"
    tracker = RunTracker(uri, system_metrics_interval_s=None, **FAST)
    tracker.start("created-late", run_name="r", wait_s=0.0)  # returns before the store exists
    run_id = tracker.wait_for_run(timeout_s=120)
    assert run_id is not None
    assert MlflowClient(uri).get_run(run_id).info.run_name == "r"
    assert tracker.finish(timeout_s=60) == 0


def test_an_unreachable_store_is_reported_after_its_first_attempt(tmp_path, http_env):
    tracker = RunTracker(f"http://127.0.0.1:{free_port()}", system_metrics_interval_s=None, **FAST)
    tracker.start("never", wait_s=0.0)
    began = time.monotonic()
    assert tracker.wait_for_run(timeout_s=120) is None
    assert time.monotonic() - began < 30  # the first attempt failed: no waiting out the timeout
    tracker.finish(timeout_s=1)


def test_the_trackers_short_http_timeout_is_its_threads_alone(tmp_path, http_env, monkeypatch):
    """A server that accepts and never answers: the tracker's thread gives up after its own 5 s, while every
    other thread of the process (a registry upload, say) keeps MLflow's default, and a value the user
    exported is used by both."""
    import socket
    import threading

    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    from pipeline.handoff.tracking import HTTP_TIMEOUT_S, THREAD_HTTP

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel and never answered
    try:
        tracker = RunTracker(f"http://127.0.0.1:{silent.getsockname()[1]}", system_metrics_interval_s=None, **FAST)
        tracker.start("silent", wait_s=0.0)
        began = time.monotonic()
        assert tracker.wait_for_run(timeout_s=120) is None
        assert HTTP_TIMEOUT_S <= time.monotonic() - began < 30  # its own timeout, not MLflow's 120 s
        tracker.finish(timeout_s=1)
    finally:
        silent.close()
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 120 and MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 7  # this thread
    assert not {"MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"} & set(os.environ)

    seen = {}

    def as_the_trackers_thread() -> None:
        THREAD_HTTP.timeout = HTTP_TIMEOUT_S
        seen["own"] = MLFLOW_HTTP_REQUEST_TIMEOUT.get()
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
        seen["exported"] = MLFLOW_HTTP_REQUEST_TIMEOUT.get()

    thread = threading.Thread(target=as_the_trackers_thread)
    thread.start()
    thread.join()
    assert seen == {"own": HTTP_TIMEOUT_S, "exported": 7} and MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7


def test_server_down_at_start(tmp_path, servers, http_env, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.handoff.tracking")
    port = free_port()
    tracker = RunTracker(f"http://127.0.0.1:{port}", system_metrics_interval_s=None, **FAST)
    assert not {"MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"} & set(os.environ)
    assert tracker.start("down-at-start", run_name="late", tags={"phase": "1"}) is None
    tracker.log_params({"train": {"lr": 1e-4}})
    for step in range(1, 10_001):
        tracker.log_metrics(step, {"loss": 1.0 / step})
    assert tracker.pending == 10_000 + 2  # the metrics, the param, the tag: all waiting in memory
    assert tracker.run_id is None

    server = servers(tmp_path / "store", port)
    wait_for(lambda: tracker.run_id is not None, 30, "the run to be created")
    assert tracker.finish(timeout_s=60) == 0
    client = MlflowClient(server.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "late"
    assert run.data.params == {"train.lr": "0.0001"} and run.data.tags["phase"] == "1"
    history = sorted(client.get_metric_history(tracker.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, 10_001))
    assert history[9].value == pytest.approx(0.1)
    assert len(messages(caplog, "unavailable")) == 1
    assert len(messages(caplog, "logging resumed", logging.INFO)) == 1


@pytest.mark.slow
def test_server_killed_mid_run_and_restarted(tmp_path, servers, http_env, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.handoff.tracking")
    port, store = free_port(), tmp_path / "store"
    server = servers(store, port)
    tracker = RunTracker(server.uri, system_metrics_interval_s=None, **FAST)
    run_id = tracker.start("killed", tags={"phase": "1"})
    assert run_id is not None
    client = MlflowClient(server.uri)
    for step in range(1, 51):
        tracker.log_metrics(step, {"loss": 1.0 / step})
    wait_for(lambda: tracker.pending == 0, 30, "the first records to be sent")

    server.kill(signal.SIGKILL)
    gap_logged_ms = int(time.time() * 1000)
    for step in range(51, 101):
        tracker.log_metrics(step, {"loss": 1.0 / step, "lr": 1e-4})
    wait_for(lambda: messages(caplog, "stopped answering"), 30, "the outage warning")
    assert tracker.pending == 100

    server = servers(store, port)
    restarted_ms = int(time.time() * 1000)
    wait_for(lambda: messages(caplog, "logging resumed", logging.INFO), 30, "the resume message")
    for step in range(101, 111):
        tracker.log_metrics(step, {"loss": 1.0 / step})
    assert tracker.finish(timeout_s=60) == 0

    assert client.get_run(run_id).info.status == "FINISHED"
    assert steps(client, run_id, "loss") == list(range(1, 111))
    gap = [m for m in client.get_metric_history(run_id, "lr")]
    assert sorted(m.step for m in gap) == list(range(51, 101))
    assert all(gap_logged_ms - 1000 <= m.timestamp < restarted_ms for m in gap)  # when logged, not when sent
    assert len(messages(caplog, "stopped answering")) == 1


# -- launch/mlflow_server.sh -------------------------------------------------------------------------------


def all_gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    """Exited (a zombie counts: an orphan waits for whatever reaps it)."""

    def gone(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + timeout_s
    while not all(gone(p) for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def running_in_group(group: int) -> list[psutil.Process]:
    """The processes of process group `group` that have not exited."""
    running = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return running


def launch(*args: str, stderr_path: Path, **env: str) -> subprocess.Popen:
    environment = dict(os.environ, BERTPIPE_PYTHON=sys.executable, **env)
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            [str(ROOT / "launch" / "mlflow_server.sh"), *args],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def use(uri: str) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("from-script")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 1.5, step=3)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 1.5}


@pytest.mark.slow
def test_launch_script_serves_in_the_foreground_and_stops_on_sigterm(tmp_path):
    port = free_port()
    process = launch(
        "--port", str(port), "--dir", str(tmp_path / "srv"), "--workers", "1", stderr_path=tmp_path / "err"
    )
    try:
        uri = process.stdout.readline().strip()
        assert uri == f"http://127.0.0.1:{port}", (tmp_path / "err").read_text()
        use(uri)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert workers  # mlflow server, its uvicorn worker, its job runner (whose consumers start later)
        group = os.getpgid(workers[0].pid)
        assert group != os.getpgid(process.pid)  # the server leads a group of its own
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "err").read_text()
        # the script exits once every process of the server's group has: none is left behind
        assert all_gone(workers, 0)
        assert not running_in_group(group)
        assert not answers(uri + "/health")
        assert (tmp_path / "srv" / "mlflow.db").is_file()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_launch_script_in_the_background(tmp_path):
    port, pid_file = free_port(), tmp_path / "mlflow.pid"
    args = ["--background", "--port", str(port), "--dir", str(tmp_path / "srv"), "--pid-file", str(pid_file)]
    process = launch(*args, "--workers", "1", stderr_path=tmp_path / "err", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, (tmp_path / "err").read_text()
    server = psutil.Process(int(pid_file.read_text()))
    try:
        assert out.strip() == f"http://127.0.0.1:{port}"
        use(out.strip())
        again = launch("--port", str(port), "--dir", str(tmp_path / "other"), stderr_path=tmp_path / "err2")
        assert again.wait(timeout=60) == 2 and "is taken" in (tmp_path / "err2").read_text()
        workers = server.children(recursive=True)
        server.terminate()
        assert all_gone([server, *workers], 30)
    finally:
        if not all_gone([server], 0):
            os.killpg(server.pid, signal.SIGKILL)

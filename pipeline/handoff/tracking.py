"""MLflow tracking for rank 0 that never stops or stalls training.

Every call only puts records in memory; one daemon thread sends them with `MlflowClient.log_batch`, creates
or resumes the run, and rides out a tracking server that is down at the start or goes away mid-run: records
wait in a bounded backlog and are sent later with their original steps and timestamps. The trainer's
metrics.jsonl stays the complete record; MLflow is the view of it.

    tracker = RunTracker.for_output(output_dir, explicit_uri)
    tracker.start("bert-large", run_id=checkpoint_run_id, run_name=None, tags={"phase": "1"})
    tracker.log_params(resolved_config)
    tracker.log_metrics(step, record)          # every log step; microseconds
    run_id = tracker.run_id                    # into the checkpoint (None until the run exists)
    tracker.finish("FINISHED")                 # bounded wait; returns the records that could not be sent
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.handoff.redaction import redact_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow itself is imported where a run is tracked (the sending thread of rank 0): importing it takes seconds,
# which every other rank and every run without tracking would spend for nothing.

log = logging.getLogger(__name__)

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_TAG_VALUE = 8000
TRUNCATED = "...[truncated]"
BATCH_METRICS = 1000  # MLflow's per-request limits for log_batch
BATCH_PARAMS_TAGS = 100
HTTP_TIMEOUT_S = 5
HTTP_MAX_RETRIES = 0  # the thread retries with its own backoff; urllib3 retries would only hold it longer

Status = Literal["FINISHED", "KILLED", "FAILED"]


class _ThreadHttpSettings(threading.local):
    installed = False  # class-wide: MLflow's two settings ask the thread (install_thread_http_settings)
    timeout: int | None = None
    max_retries: int | None = None


THREAD_HTTP = _ThreadHttpSettings()  # what a tracker's thread sets for its own requests
_install_lock = threading.Lock()


def install_thread_http_settings() -> None:
    """MLflow reads its HTTP timeout and retry count from the environment at every request and has no
    per-client setting. Setting them in the environment would hand a tracker's short timeout to every other
    MLflow call of the process too (a registry upload of a large model among them). Instead the two settings
    ask the calling thread first: a tracker's thread answers with its own values; every other thread, and any
    value the user exported, get what MLflow would give."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    with _install_lock:
        if _ThreadHttpSettings.installed:
            return
        for variable, attribute in (
            (MLFLOW_HTTP_REQUEST_TIMEOUT, "timeout"),
            (MLFLOW_HTTP_REQUEST_MAX_RETRIES, "max_retries"),
        ):
            from_environment = variable.get

            def get(variable=variable, attribute=attribute, from_environment=from_environment):
                value = getattr(THREAD_HTTP, attribute)
                return from_environment() if value is None or variable.is_set() else value

            variable.get = get
        _ThreadHttpSettings.installed = True


def tracking_uri(output_dir: str | Path, explicit: str | None = None) -> str:
    """The explicit URI, else MLFLOW_TRACKING_URI, else a sqlite store inside the run's output directory,
    so that a run without a server still has its MLflow history next to its checkpoints."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(output_dir).resolve() / EMBEDDED_DB}"


def default_artifact_location(uri: str) -> str | None:
    """For a sqlite store, `mlartifacts` beside the database file; None for a server, which decides. (A
    client on a sqlite store would otherwise put artifacts under ./mlruns of whatever the cwd is.)"""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / EMBEDDED_ARTIFACTS).as_uri()


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values become strings, without a URI's password, cut to MLflow's
    length limit with a marker (MLflow refuses longer values, and a refused batch would lose its neighbours)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = _truncate(redact_credentials(str(value)), MAX_PARAM_VALUE)
    return flat


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _is_transient(error: BaseException) -> bool:
    """Worth retrying: no answer (connection refused, timeout, server error) rather than a refusal (4xx),
    which would be refused again."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status in (408, 429)
    return True


# MLflow 3's UI shows an experiment of this kind as a table of training runs (its default for a new experiment
# is the GenAI view, where these runs sit under "Evaluation runs").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# How long work that needs the run (a registration) waits for the first attempt to reach the store.
RUN_WAIT_S = 300.0
# The exit code of a run that trained and saved its model, but whose registration (asked for) did not happen.
EXIT_NOT_REGISTERED = 3
MODEL_TRAINING = "custom_model_development"


class TrackingOff(Exception):
    """A refusal that retrying cannot fix (deleted experiment, bad credentials): tracking stops for the run."""


@dataclass
class _Start:
    experiment: str
    run_id: str | None
    run_name: str | None
    start_ms: int


@dataclass
class _Batch:
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


class _SystemSampler:
    """CPU and memory (psutil) and NVIDIA GPU (pynvml, when installed), under MLflow's system/ metric names
    so that the UI's system metrics view shows them."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        psutil.cpu_percent(None)  # the first call only sets the reference point
        self.gpus: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no pynvml, no driver, no GPU: CPU and memory only
            self.gpus = []

    def sample(self) -> dict[str, float]:
        memory = self.psutil.virtual_memory()
        values = {
            "system/cpu_utilization_percentage": self.psutil.cpu_percent(None),
            "system/system_memory_usage_megabytes": memory.used / 1e6,
            "system/system_memory_usage_percentage": memory.used / memory.total * 100,
        }
        for index, handle in enumerate(self.gpus):
            try:
                gpu_memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                values[f"system/gpu_{index}_utilization_percentage"] = self.nvml.nvmlDeviceGetUtilizationRates(
                    handle
                ).gpu
                values[f"system/gpu_{index}_memory_usage_megabytes"] = gpu_memory.used / 1e6
                values[f"system/gpu_{index}_memory_usage_percentage"] = gpu_memory.used / gpu_memory.total * 100
            except Exception:  # a GPU that stops answering must not stop the thread
                continue
        return values


class RunTracker:
    """One MLflow run fed from the training loop. Calls only enqueue; a daemon thread does all the I/O."""

    def __init__(
        self,
        uri: str,
        *,
        artifact_location: str | None = None,
        max_pending: int = 1_000_000,
        flush_interval_s: float = 1.0,
        retry_max_s: float = 30.0,
        system_metrics_interval_s: float | None = 10.0,
    ) -> None:
        self.uri = uri
        self.shown_uri = redact_credentials(uri)  # for messages: never the password
        self.artifact_location = artifact_location
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self.system_metrics_interval_s = system_metrics_interval_s
        self._http = uri.startswith(("http://", "https://"))
        if self._http:
            install_thread_http_settings()
        self._lock = threading.Lock()
        self._metrics: deque[tuple[str, float, int, int]] = deque(maxlen=max_pending)
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._inflight: _Batch | None = None
        self._last_step = 0
        self._dropped = 0
        self._rejected = 0
        self._sent = 0
        self._off = False
        self._run_id: str | None = None
        self._request: _Start | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._attempted = threading.Event()
        self._finishing = threading.Event()
        self._deadline = math.inf
        self._status: Status = "FINISHED"
        self._terminated = False
        self._up: bool | None = None  # None until the first attempt
        self._known_params: dict[str, str] = {}
        self._logged_through: dict[str, int] = {}  # per metric, the last step a continued run already holds
        self._unsent: int | None = None

    @classmethod
    def for_output(cls, output_dir: str | Path, explicit_uri: str | None = None, **options: Any) -> RunTracker:
        """A tracker on `tracking_uri(output_dir, explicit_uri)`; a sqlite store keeps its artifacts beside it."""
        uri = tracking_uri(output_dir, explicit_uri)
        return cls(uri, artifact_location=default_artifact_location(uri), **options)

    # -- the trainer's side: all of it only touches memory ---------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The run's id: the resumed one at once, a new one once the store has created it (None before)."""
        return self._run_id

    @property
    def pending(self) -> int:
        """Records waiting to be sent."""
        with self._lock:
            inflight = len(self._inflight) if self._inflight else 0
            return len(self._metrics) + len(self._params) + len(self._tags) + inflight

    def start(
        self,
        experiment: str,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        wait_s: float = 10.0,
    ) -> str | None:
        """Create the run, or continue `run_id` (from a checkpoint) so its steps go on. Waits at most `wait_s`
        for the first attempt; with the store unreachable it returns None and the run is created later."""
        if self._thread is not None:
            raise RuntimeError("RunTracker.start was already called")
        self._request = _Start(experiment, run_id, run_name, int(time.time() * 1000))
        self._run_id = run_id
        if tags:
            self.set_tags(tags)
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()
        self._attempted.wait(wait_s)
        return self._run_id

    def wait_for_run(self, timeout_s: float = RUN_WAIT_S) -> str | None:
        """The run's id for work that needs the run (a registration): while the first attempt to reach the
        store is still going (creating a new store takes seconds on a busy machine), wait for it, at most
        `timeout_s`. None when the store was tried and is unavailable, or tracking is off."""
        if self._run_id is None and not self._off and not self._attempted.is_set():
            log.info("waiting for MLflow at %s to create the run (at most %.0f s)", self.shown_uri, timeout_s)
            self._attempted.wait(timeout_s)
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested dicts flatten to dotted keys. A param the run already has with the same value is skipped
        (a resumed run logs its config again); a changed one is kept as it was, with a warning, because
        MLflow refuses to change a logged param."""
        if self._off:
            return
        flat = flatten_params(params)
        with self._lock:
            self._params.update(flat)

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Queue one step's values; None, non-numbers and non-finite values are skipped, and a "step" key is
        ignored so that the trainer's metrics.jsonl record can be passed as it is."""
        if self._off:
            return
        now = int(time.time() * 1000)
        records = []
        for key, value in metrics.items():
            number = _finite(value)
            if number is not None and key != "step":
                records.append((key, number, now, step))
        with self._lock:
            self._last_step = step
            overflow = len(self._metrics) + len(records) - (self._metrics.maxlen or 0)
            self._metrics.extend(records)
            if overflow > 0:
                if not self._dropped:
                    log.warning(
                        "MLflow backlog is full (%d records): dropping the oldest (metrics.jsonl keeps them all)",
                        self._metrics.maxlen,
                    )
                self._dropped += overflow

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags can change during the run; the last value set wins."""
        if self._off:
            return
        with self._lock:
            self._tags.update(
                {str(key): _truncate(redact_credentials(str(value)), MAX_TAG_VALUE) for key, value in tags.items()}
            )

    def finish(self, status: Status = "FINISHED", timeout_s: float = 30.0) -> int:
        """Send what is pending and end the run with `status`, waiting at most `timeout_s`. Returns the number
        of records that could not be sent (still pending, dropped from a full backlog, or refused)."""
        if self._unsent is not None:
            return self._unsent
        if self._thread is None:  # never started: nothing could be sent
            self._unsent = self.pending + self._dropped
            return self._unsent
        self._status = status
        self._deadline = time.monotonic() + timeout_s
        self._finishing.set()
        self._wake.set()
        self._thread.join(timeout_s + 1.0)
        pending = 0 if self._off else self.pending
        self._unsent = pending + self._dropped + self._rejected
        if self._unsent:
            log.warning(
                "%d MLflow records could not be sent to %s (%d pending, %d dropped from a full backlog, "
                "%d refused); metrics.jsonl has them%s",
                self._unsent,
                self.shown_uri,
                pending,
                self._dropped,
                self._rejected,
                "" if self._terminated else f"; the run was not marked {status}",
            )
        elif self._terminated:
            log.info("MLflow run %s %s: %d records sent", self._run_id, status, self._sent)
        return self._unsent

    # -- the thread --------------------------------------------------------------------------------

    def _work(self) -> None:
        if self._http:  # this thread's requests only: MLflow's defaults hold one for minutes when the server is gone
            THREAD_HTTP.timeout, THREAD_HTTP.max_retries = HTTP_TIMEOUT_S, HTTP_MAX_RETRIES
        sampler = self._system_sampler()
        next_sample = time.monotonic() + (self.system_metrics_interval_s or 0.0)
        client: MlflowClient | None = None
        opened = False
        backoff = min(1.0, self.retry_max_s)
        final_sample = sampler is not None
        while True:
            finishing = self._finishing.is_set()
            if finishing and final_sample:  # one sample at the end, so that a short run has one too
                self.log_metrics(self._last_step, sampler.sample())
                final_sample = False
            wait = self.flush_interval_s
            try:
                if client is None:
                    from mlflow import MlflowClient

                    client = MlflowClient(self.uri)
                if not opened:
                    self._open_run(client)
                    opened = True
                self._send_pending(client)
                if finishing:
                    client.set_terminated(self._run_id, status=self._status)
                    self._terminated = True
                self._mark_up()
                backoff = min(1.0, self.retry_max_s)
            except TrackingOff as error:
                self._turn_off(str(error))
                return
            except Exception as error:
                if opened or _is_transient(error):
                    self._mark_down(error)
                    wait, backoff = backoff, min(backoff * 2, self.retry_max_s)
                else:
                    self._turn_off(f"{type(error).__name__}: {error}")
                    return
            finally:
                self._attempted.set()
            if finishing and (self._terminated or time.monotonic() >= self._deadline):
                return
            if sampler is not None and time.monotonic() >= next_sample:
                self.log_metrics(self._last_step, sampler.sample())
                next_sample = time.monotonic() + (self.system_metrics_interval_s or math.inf)
            if finishing:
                wait = min(wait, 0.5, max(self._deadline - time.monotonic(), 0.0))
            elif sampler is not None:
                wait = min(wait, max(next_sample - time.monotonic(), 0.0))
            self._wake.wait(wait)
            self._wake.clear()

    def _system_sampler(self) -> _SystemSampler | None:
        """Sampled here rather than by MLflow's own monitor: that one needs the run to exist when it starts,
        polls the run over HTTP at every sample, and stops for good at the first failed request; here the
        samples join the backlog and survive an outage like every other metric."""
        if not self.system_metrics_interval_s:
            return None
        try:
            return _SystemSampler()
        except ImportError:
            log.info("psutil is not installed: no system metrics in MLflow")
            return None

    def _open_run(self, client: MlflowClient) -> None:
        request = self._request
        assert request is not None
        if request.run_id is not None:
            run = self._existing_run(client, request.run_id)
            if run is not None:
                if run.info.status != "RUNNING":
                    client.update_run(run.info.run_id, status="RUNNING")
                self._known_params = dict(run.data.params)
                # A resumed run recomputes the steps after its checkpoint (bit-exactly): the ones the
                # interrupted run had sent already are not sent again, so each step has one value.
                self._logged_through = {
                    key: max((m.step for m in client.get_metric_history(run.info.run_id, key)), default=-1)
                    for key in run.data.metrics
                }
                log.info("MLflow: continuing run %s at %s", run.info.run_id, self.shown_uri)
                return
        experiment_id = self._experiment_id(client, request.experiment)
        tags = {"bertpipe.resumed_from_run_id": request.run_id} if request.run_id else {}
        try:
            from mlflow.tracking.context.registry import resolve_tags

            tags = resolve_tags(tags)  # user, source, git commit: what mlflow.start_run would add
        except Exception:
            pass
        run = client.create_run(experiment_id, start_time=request.start_ms, tags=tags, run_name=request.run_name)
        self._run_id = run.info.run_id
        log.info(
            "MLflow: run %s (%s) in experiment %r at %s",
            run.info.run_id,
            run.info.run_name,
            request.experiment,
            self.shown_uri,
        )

    def _existing_run(self, client: MlflowClient, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if _is_transient(error):
                raise
            log.warning("MLflow run %s is not in %s (%s): starting a new run", run_id, self.shown_uri, error.message)
            return None
        if run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s was deleted: starting a new run", run_id)
            return None
        return run

    def _experiment_id(self, client: MlflowClient, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name, artifact_location=self.artifact_location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it meanwhile
                    raise
                experiment = client.get_experiment_by_name(name)
                assert experiment is not None
        if experiment.lifecycle_stage == "deleted":
            raise TrackingOff(f"experiment {name!r} is deleted; restore it or choose another experiment name")
        return experiment.experiment_id

    def _send_pending(self, client: MlflowClient) -> None:
        from mlflow.entities import Metric, Param, RunTag

        while (batch := self._inflight or self._next_batch()) is not None:
            self._inflight = batch
            try:
                client.log_batch(
                    self._run_id,
                    metrics=[
                        Metric(key, value, ts, step)
                        for key, value, ts, step in batch.metrics
                        if step > self._logged_through.get(key, -1)
                    ],
                    params=[Param(key, value) for key, value in batch.params],
                    tags=[RunTag(key, value) for key, value in batch.tags],
                    synchronous=True,
                )
                self._sent += len(batch)
            except Exception as error:
                if _is_transient(error):
                    raise
                self._rejected += len(batch)
                log.warning("MLflow refused %d records, which are dropped: %s", len(batch), error)
            with self._lock:
                self._inflight = None

    def _next_batch(self) -> _Batch | None:
        """Params and tags travel apart from metrics, so that a refused param cannot take metrics with it."""
        while True:
            with self._lock:
                if not self._params:
                    break
                params = [(key, self._params.pop(key)) for key in list(self._params)[:BATCH_PARAMS_TAGS]]
            if new := self._new_params(params):
                return _Batch(params=new)
        with self._lock:
            if self._tags:
                return _Batch(tags=[(key, self._tags.pop(key)) for key in list(self._tags)[:BATCH_PARAMS_TAGS]])
            if self._metrics:
                return _Batch(metrics=[self._metrics.popleft() for _ in range(min(len(self._metrics), BATCH_METRICS))])
        return None

    def _new_params(self, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Params the run does not have yet; a changed value is reported and left as the run has it."""
        new = []
        for key, value in params:
            known = self._known_params.get(key)
            if known is None:
                new.append((key, value))
                self._known_params[key] = value
            elif known != value:
                log.warning(
                    "MLflow param %r is %r on run %s; the new value %r is not logged (MLflow params cannot change)",
                    key,
                    known,
                    self._run_id,
                    value,
                )
        return new

    def _mark_up(self) -> None:
        if self._up is False:
            log.info("MLflow tracking at %s answers again: logging resumed", self.shown_uri)
        self._up = True

    def _mark_down(self, error: BaseException) -> None:
        if self._up is None:
            log.warning(
                "MLflow tracking at %s is unavailable (%s); training goes on, records wait in memory and the run "
                "is created when it answers",
                self.shown_uri,
                _short(error),
            )
        elif self._up:
            log.warning(
                "MLflow tracking at %s stopped answering (%s); records wait in memory (up to %d) and are retried",
                self.shown_uri,
                _short(error),
                self._metrics.maxlen,
            )
        self._up = False

    def _turn_off(self, reason: str) -> None:
        log.warning("MLflow tracking is off for this run (%s); metrics.jsonl still has everything", reason)
        self._off = True
        with self._lock:
            self._rejected += len(self._metrics) + len(self._params) + len(self._tags)
            self._metrics.clear()
            self._params.clear()
            self._tags.clear()


def _short(error: BaseException) -> str:
    text = redact_credentials(str(error).splitlines()[0]) if str(error) else type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def open_run(
    output_dir: str | Path,
    explicit_uri: str | None,
    experiment: str,
    run_id: str | None,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
) -> RunTracker:
    """A training loop's tracker: the run (named after the output directory; `run_id` continues one) started
    with its tags and params. Waits at most 5 s for the store; an unreachable one is retried in the background."""
    tracker = RunTracker.for_output(output_dir, explicit_uri)
    started = tracker.start(experiment, run_id, Path(output_dir).name, tags, wait_s=5.0)
    tracker.log_params(params)
    if started is not None:
        log.info("MLflow run %s at %s", started, tracker.shown_uri)
    return tracker


def code_version() -> dict[str, str]:
    """The package version and, in a git checkout, the commit (with "-dirty" for local changes)."""
    from importlib import metadata

    version: dict[str, str] = {}
    with contextlib.suppress(metadata.PackageNotFoundError):
        version["bertpipe"] = metadata.version("bertpipe")
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            version["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version

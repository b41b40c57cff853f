"""The run harness both training loops (pretraining and fine-tuning) use: the run directory and its files, the
status file that pollers and the launcher read, the stop that SIGTERM/SIGINT request, and the reporter that sends
metrics to metrics.jsonl and MLflow from rank 0."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from model.checkpoint import atomic_write_bytes
from pipeline.handoff.tracking import RunTracker, Status, open_run
from pipeline.logs import announce
from pipeline.training import checkpointing
from pipeline.training.metrics import JsonLines

log = logging.getLogger(__name__)

STATUS_FILE = "run_status.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RUN_CONFIG_FILE = "run_config.json"
TRACKING_OFF = "off"  # --tracking-uri off: no MLflow

# The states a run's status can hold; `running` until the run ends one of the other ways.
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"
# How MLflow records a run that ended in each state; any other (a crash while `running`) is FAILED.
MLFLOW_STATUS: dict[str, Status] = {FINISHED: "FINISHED", INTERRUPTED: "KILLED"}


def write_status(output: Path, state: str, step: int, checkpoint: str | None, message: str = "") -> None:
    """`<output>/run_status.json`, replaced whole: a reader never sees half of it."""
    record = {"state": state, "step": step, "checkpoint": checkpoint, "message": message}
    atomic_write_bytes(output / STATUS_FILE, (json.dumps(record) + "\n").encode("utf-8"))


def failure_message(error: BaseException) -> str:
    """The status message of a run that an error ended: its type and text, cut to a size a poller can show."""
    return f"{type(error).__name__}: {error}"[:2000]


class RunDirectory:
    """Where a run keeps its files: `--output`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics = path / METRICS_FILE
        self.status = path / STATUS_FILE
        self.checkpoints = path / CHECKPOINTS
        self.run_config = path / RUN_CONFIG_FILE

    def latest_checkpoint(self) -> str | None:
        """The tag of the newest complete checkpoint, if any."""
        return checkpointing.latest_tag(self.checkpoints) if self.checkpoints.is_dir() else None

    def present(self, names: tuple[str, ...]) -> list[str]:
        """Which of these files or directories an earlier run left here."""
        return [name for name in names if (self.path / name).exists()]

    def write_run_config(self, resolved: Mapping[str, Any]) -> None:
        """The settings the run resolved (config files, defaults, world size), for whoever reads the run later."""
        atomic_write_bytes(self.run_config, (json.dumps(resolved, indent=2) + "\n").encode())


class StopRequest:
    """SIGTERM/SIGINT set a flag the loop reads at the next step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._handle)

    def _handle(self, number: int, _frame: Any) -> None:
        if self.requested and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(number).name

    def reason(self) -> str:
        """`stopped by SIGTERM`; a rank that saw no signal itself learnt of it from another."""
        return f"stopped by {self.signal_name or 'a signal on another rank'}"


class Reporter:
    """On rank 0, writes each record to metrics.jsonl and sends it to MLflow (when tracking is on); on the other
    ranks every method does nothing, so a loop reports without asking which rank it is."""

    def __init__(self, directory: RunDirectory, metrics: JsonLines | None) -> None:
        self.directory = directory
        self.metrics = metrics
        self.tracker: RunTracker | None = None

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id if self.tracker is not None else None

    def track(
        self,
        uri: str | None,
        experiment: str,
        run_id: str | None,
        tags: Mapping[str, Any],
        params: Callable[[], Mapping[str, Any]],
    ) -> None:
        """Open the MLflow run (`run_id` continues one); `params` is only computed where it is sent."""
        if self.metrics is None or uri == TRACKING_OFF:
            return
        announce(f"opening the MLflow run (experiment {experiment!r})")
        self.tracker = open_run(self.directory.path, uri, experiment, run_id, tags, params())

    def record(self, record: Mapping[str, Any]) -> None:
        """One record, `step` included, to the metrics file and MLflow."""
        self.to_file(record)
        self.to_mlflow(record["step"], record)

    def to_file(self, record: Mapping[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(dict(record))

    def to_mlflow(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(step, metrics)

    def close(self, state: str) -> None:
        """Close the metrics file and end the MLflow run as the run's last `state` says."""
        if self.metrics is not None:
            self.metrics.close()
        if self.tracker is not None:
            unsent = self.tracker.finish(MLFLOW_STATUS.get(state, "FAILED"))
            if unsent:
                log.warning("%d MLflow records were not sent; %s has them", unsent, self.directory.metrics)


class RunHarness:
    """One rank's view of its run: the directory, the status (written by rank 0, never fatal), the stop request
    and the reporter."""

    def __init__(self, output: Path, rank: int) -> None:
        self.directory = RunDirectory(output)
        self.rank = rank
        self.state = RUNNING  # the last status set, on every rank: how MLflow records the run's end
        self.stop: StopRequest | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def set_status(self, state: str, step: int, message: str = "", checkpoint: str | None = None) -> None:
        """Rank 0 replaces run_status.json. A status that cannot be written (a full disk) is logged, not raised:
        it must not end a run, nor hide the error that is ending one."""
        self.state = state
        if not self.is_main:
            return
        try:
            self.directory.path.mkdir(parents=True, exist_ok=True)
            write_status(self.directory.path, state, step, checkpoint, message)
        except OSError as error:
            log.error("cannot write %s: %s", self.directory.status, error)

    def fail(self, step: int, error: BaseException, checkpoint: str | None = None) -> None:
        """`failed`, with the error: whoever polls the status must not read `running`, or an earlier run's state."""
        self.set_status(FAILED, step, failure_message(error), checkpoint)

    def catch_stop_signals(self) -> StopRequest:
        """From here on SIGTERM/SIGINT ask the loop to stop at its next step instead of killing the process."""
        self.stop = StopRequest()
        return self.stop

    def open_reporter(self, resume_step: int | None) -> Reporter:
        """metrics.jsonl on rank 0 (a resumed run keeps the records up to `resume_step`); nothing elsewhere."""
        metrics = JsonLines(self.directory.metrics, resume_step) if self.is_main else None
        return Reporter(self.directory, metrics)

"""The run harness both training loops use: the status file, the reporter on rank 0 and on the other ranks,
the run directory's layout and the stop request's reason."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.training.run import METRICS_FILE, STATUS_FILE, RunDirectory, RunHarness


class RecordingTracker:
    """Stands in for RunTracker: keeps what the reporter sends."""

    run_id = "run-1"

    def __init__(self, unsent: int = 0) -> None:
        self.metrics: list[tuple[int, dict[str, Any]]] = []
        self.finished: list[str] = []
        self.unsent = unsent

    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        self.metrics.append((step, dict(metrics)))

    def finish(self, status: str) -> int:
        self.finished.append(status)
        return self.unsent


def read_status(output: Path) -> dict[str, Any]:
    return json.loads((output / STATUS_FILE).read_text())


def test_rank_0_writes_the_status_and_every_rank_remembers_the_state(tmp_path):
    output = tmp_path / "run"
    main, other = RunHarness(output, 0), RunHarness(tmp_path / "other", 1)
    main.set_status("running", 0, checkpoint="global_step0")
    other.set_status("finished", 7, "done")
    assert read_status(output) == {"state": "running", "step": 0, "checkpoint": "global_step0", "message": ""}
    assert not (tmp_path / "other").exists()
    assert (main.state, other.state) == ("running", "finished")


def test_a_status_that_cannot_be_written_is_logged_and_the_run_goes_on(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    harness = RunHarness(blocker / "run", 0)  # no directory can be made under a file, whoever runs the test
    with caplog.at_level(logging.ERROR, logger="pipeline.training.run"):
        harness.set_status("finished", 3, "done")
    assert harness.state == "finished"
    assert [
        record.getMessage().startswith(f"cannot write {blocker / 'run' / STATUS_FILE}: ") for record in caplog.records
    ] == [True]


def test_a_failure_is_recorded_with_the_error_cut_to_2000_characters(tmp_path):
    harness = RunHarness(tmp_path, 0)
    harness.fail(12, ValueError("x" * 3000), "global_step10")
    status = read_status(tmp_path)
    assert (status["state"], status["step"], status["checkpoint"]) == ("failed", 12, "global_step10")
    assert status["message"].startswith("ValueError: xxx") and len(status["message"]) == 2000


def test_rank_0_reports_to_the_metrics_file_and_mlflow(tmp_path):
    harness = RunHarness(tmp_path, 0)
    reporter = harness.open_reporter(None)
    tracker = RecordingTracker()
    reporter.tracker = tracker  # type: ignore[assignment]
    reporter.record({"step": 1, "loss": 7.5})
    reporter.to_file({"step": 2, "best_epoch": 1})
    reporter.to_mlflow(2, {"test_f1": 0.5})
    harness.set_status("interrupted", 2)
    reporter.close(harness.state)
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 7.5}, {"step": 2, "best_epoch": 1}]
    assert tracker.metrics == [(1, {"step": 1, "loss": 7.5}), (2, {"test_f1": 0.5})]
    assert tracker.finished == ["KILLED"]
    assert reporter.run_id == "run-1"


@pytest.mark.parametrize(
    ("state", "mlflow_status"), [("finished", "FINISHED"), ("failed", "FAILED"), ("running", "FAILED")]
)
def test_mlflow_records_how_the_run_ended(tmp_path, state, mlflow_status):
    reporter = RunHarness(tmp_path, 0).open_reporter(None)
    tracker = RecordingTracker()
    reporter.tracker = tracker  # type: ignore[assignment]
    reporter.close(state)
    assert tracker.finished == [mlflow_status]


def test_unsent_mlflow_records_point_to_the_metrics_file(tmp_path, caplog):
    reporter = RunHarness(tmp_path, 0).open_reporter(None)
    reporter.tracker = RecordingTracker(unsent=3)  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="pipeline.training.run"):
        reporter.close("finished")
    assert [r.getMessage() for r in caplog.records] == [
        f"3 MLflow records were not sent; {tmp_path / METRICS_FILE} has them"
    ]


def test_other_ranks_report_nothing_and_open_no_mlflow_run(tmp_path):
    reporter = RunHarness(tmp_path, 1).open_reporter(None)

    def params() -> dict[str, Any]:
        raise AssertionError("the params are only computed where they are sent")

    reporter.track("sqlite:///never-opened.db", "experiment", None, {}, params)
    reporter.record({"step": 1, "loss": 7.5})
    reporter.to_file({"step": 1})
    reporter.to_mlflow(1, {"loss": 7.5})
    reporter.close("finished")
    assert reporter.tracker is None and reporter.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_tracking_off_opens_no_mlflow_run_on_rank_0(tmp_path):
    reporter = RunHarness(tmp_path, 0).open_reporter(None)
    reporter.track("off", "experiment", None, {}, dict)
    reporter.close("finished")
    assert reporter.tracker is None
    assert sorted(path.name for path in tmp_path.iterdir()) == [METRICS_FILE]


def test_a_resumed_run_keeps_the_records_up_to_its_checkpoint(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')
    reporter = RunHarness(tmp_path, 0).open_reporter(2)
    reporter.record({"step": 3, "loss": 1.0})
    reporter.close("finished")
    steps = [json.loads(line)["step"] for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_the_run_directory_names_its_files_and_finds_the_newest_checkpoint(tmp_path):
    directory = RunDirectory(tmp_path)
    assert directory.latest_checkpoint() is None
    (directory.checkpoints / "global_step4").mkdir(parents=True)
    (directory.checkpoints / "latest").write_text("global_step4")
    directory.metrics.write_text("")
    assert directory.latest_checkpoint() == "global_step4"
    assert directory.present(("checkpoints", "metrics.jsonl", "run_status.json")) == ["checkpoints", "metrics.jsonl"]
    directory.write_run_config({"world_size": 2})
    assert json.loads((tmp_path / "run_config.json").read_text()) == {"world_size": 2}


def test_a_signal_asks_the_loop_to_stop_and_names_itself(tmp_path):
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = RunHarness(tmp_path, 0).catch_stop_signals()
        assert not stop.requested and stop.reason() == "stopped by a signal on another rank"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.reason() == "stopped by SIGTERM"
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)

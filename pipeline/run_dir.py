"""What both training loops (pretraining and fine-tuning) share about a run: the names in its directory, the
status file that pollers and the launcher read, and the stop request that SIGTERM/SIGINT set."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from model.checkpoint import atomic_write_bytes

STATUS_FILE = "run_status.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TRACKING_OFF = "off"  # --tracking-uri off: no MLflow

# The states a run's status can hold; `running` until the run ends one of the other ways.
RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"


def write_status(output: Path, state: str, step: int, checkpoint: str | None, message: str = "") -> None:
    """`<output>/run_status.json`, replaced whole: a reader never sees half of it."""
    record = {"state": state, "step": step, "checkpoint": checkpoint, "message": message}
    atomic_write_bytes(output / STATUS_FILE, (json.dumps(record) + "\n").encode("utf-8"))


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

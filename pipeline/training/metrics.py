"""What rank 0 reports while training: the metrics file (JSON Lines) and the progress (a bar, or lines in a log
file), plus the per-rank batch fingerprints that prove a resumed run saw the batches an uninterrupted one would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import atomic_write_bytes
from preprocessing.errors import BertpipeError

FINGERPRINT_FIELDS = ("input_ids", "masked_lm_positions", "masked_lm_labels", "next_sentence_label")


def batch_fingerprint(batches: Iterable[dict[str, torch.Tensor]]) -> str:
    """A short hash of what a step trained on (ids, masks and labels of all its micro-batches)."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in FINGERPRINT_FIELDS:
            digest.update(batch[name].contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class MetricsWriteError(BertpipeError, RuntimeError):
    """metrics.jsonl could not be appended to; the message names the file, the cause and what to do."""

    exit_code = 1


class JsonLines:
    """An append-only JSON Lines file. A resumed run first drops the records past its checkpoint's step,
    so the file tells one history, with the steps the interrupted run repeated appearing once."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step(line) <= resume_step]
            atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode("utf-8"))
        elif resume_step is None and path.is_file():
            path.unlink()
        self.handle = path.open("ab", buffering=0)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line. A line that cannot be written whole (a full disk, a quota) is cut
        off again, so the file keeps only whole records, and the error says what happened."""
        line = (json.dumps(record, allow_nan=True) + "\n").encode("utf-8")
        start = os.fstat(self.handle.fileno()).st_size
        try:
            written = 0
            while written < len(line):
                written += self.handle.write(line[written:])
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self.handle.fileno(), start)
            raise MetricsWriteError(
                f"cannot append to {self.path}: {error.strerror or error} (step {record.get('step')}); the run "
                f"stops here: free space and continue with --resume auto"
            ) from error

    def close(self) -> None:
        self.handle.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return math.inf  # a torn last line from a killed run is dropped


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Throughput:
    """Over the interval since the last report: sequences, real tokens and padded tokens per second, the share
    of the padded tokens that are padding (compute spent on nothing), and the share of the time spent waiting
    for the next batch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.sequences = 0
        self.tokens = 0
        self.padded_tokens = 0
        self.waiting_s = 0.0

    def add(self, sequences: int, tokens: int, padded_tokens: int) -> None:
        self.sequences += sequences
        self.tokens += tokens
        self.padded_tokens += padded_tokens

    def add_wait(self, seconds: float) -> None:
        self.waiting_s += seconds

    def report(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        result = {
            "sequences_per_s": self.sequences / elapsed,
            "tokens_per_s": self.tokens / elapsed,
            "padded_tokens_per_s": self.padded_tokens / elapsed,
            "padding_share": 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0,
            "data_wait_share": min(1.0, self.waiting_s / elapsed),
            "mean_padded_length": self.padded_tokens / max(self.sequences, 1),
        }
        self.__init__()
        return result


def progress_bar(total: int, initial: int, enabled: bool, stream: Any = None) -> Any:
    """A bar on a terminal; where the output goes to a file, one progress line per interval instead (a bar
    there would be one line of carriage returns)."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, mininterval=1.0)
    return ProgressLines(total, initial, stream)


class ProgressLines:
    """The progress bar's interface (update, set_postfix, close) as a plain line every `interval_s` seconds and
    at the end: `step 500/2000 (25%), 2.1 steps/s, 12:05 left; loss=5.678 lr=1.61e-03 ...`."""

    def __init__(self, total: int, initial: int, stream: Any, interval_s: float = 60.0) -> None:
        self.total, self.step, self.stream, self.interval_s = total, initial, stream, interval_s
        self.start_step, self.start = initial, time.monotonic()
        self.last_shown = self.start
        self.shown_step = initial
        self.postfix: dict[str, str] = {}

    def update(self, steps: int = 1) -> None:
        self.step += steps
        now = time.monotonic()
        if now - self.last_shown >= self.interval_s or self.step >= self.total:
            self.show(now)

    def set_postfix(self, postfix: dict[str, str], refresh: bool = False) -> None:
        self.postfix = dict(postfix)

    def show(self, now: float) -> None:
        rate = (self.step - self.start_step) / max(now - self.start, 1e-9)
        left = (self.total - self.step) / rate if rate > 0 else float("inf")
        eta = "?" if math.isinf(left) else f"{int(left) // 60}:{int(left) % 60:02d}"
        details = " ".join(f"{name}={value}" for name, value in self.postfix.items())
        line = f"step {self.step}/{self.total} ({self.step / max(self.total, 1):.0%}), {rate:.2f} steps/s, {eta} left"
        print(line + (f"; {details}" if details else ""), file=self.stream, flush=True)
        self.last_shown, self.shown_step = now, self.step

    def close(self) -> None:
        if self.step != self.shown_step:
            self.show(time.monotonic())


def postfix(record: dict[str, Any]) -> dict[str, str]:
    shown = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}"}
    shown["seq/s"] = f"{record['sequences_per_s']:.1f}"
    shown["tok/s"] = f"{record['tokens_per_s']:.0f}"
    if record.get("mfu") is not None:
        shown["mfu"] = f"{record['mfu']:.1%}"
    return shown

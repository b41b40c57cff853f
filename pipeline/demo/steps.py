"""The demo's steps: the project's own entry points (`bertpipe`, `launch/*.sh`) run one after another as
subprocesses, each writing its output to `<demo>/logs/<step>.log`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.demo.layout import (
    CLASSIFY_TRAIN,
    CLASSIFY_VALIDATION,
    CORPUS,
    DEMO_CONFIG,
    MAX_SEQ_LENGTH,
    REGISTERED_MODEL,
    ROOT,
    DemoLayout,
    DemoSize,
)
from pipeline.distributed import free_port
from pipeline.metrics import read_json_lines

PRETRAIN_RANKS = 2
BEAM_WORKERS = 2
FINETUNE_BATCH_SIZE = 32
LOG_TAIL_LINES = 40
POLL_S = 20.0


class StepFailed(RuntimeError):
    """A step exited with an error; the message names the step and its log."""


@dataclass(frozen=True)
class Step:
    name: str  # also the log's name
    title: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    metrics: Path | None = None  # a metrics.jsonl to report progress from while the step runs
    total_steps: int | None = None


# What would send the launch scripts to other machines: the demo runs on this one.
MULTI_NODE_VARIABLES = ("HOSTFILE", "SLURM_JOB_NODELIST", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def step_environment(layout: DemoLayout, base: dict[str, str]) -> dict[str, str]:
    """`base` for the steps: on CPU, with this interpreter, registry downloads kept in the demo directory,
    and nothing that would make a launch script start ranks on other machines."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in base.items() if k not in MULTI_NODE_VARIABLES}
    env.update(DS_ACCELERATOR="cpu", BERTPIPE_PYTHON=sys.executable, BERTPIPE_CACHE=str(layout.cache.resolve()))
    if (bin_dir / "bertpipe").is_file():
        env["BERTPIPE"] = str(bin_dir / "bertpipe")
    env["PATH"] = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"
    return env


def demo_steps(layout: DemoLayout, size: DemoSize) -> list[Step]:
    tracking = ["--tracking-uri", layout.tracking_uri]
    vocabulary = [sys.executable, "-m", "pipeline.cli", "tokenizer", "train", "--input", str(CORPUS)]
    vocabulary += ["--vocab-size", str(size.vocab_size), "--out", str(layout.tokenizer)]

    preprocess = [str(ROOT / "launch" / "preprocess.sh"), "--phase", "1", "--input", str(CORPUS)]
    preprocess += ["--tokenizer", str(layout.tokenizer), "--output", str(layout.data)]
    preprocess += ["--dupe-factor", str(size.dupe_factor), "--validation-fraction", "0.02", "--shard-mb", "8"]
    preprocess += [f"--direct_num_workers={BEAM_WORKERS}"]

    pretrain = [str(ROOT / "launch" / "pretrain.sh"), "--config", str(DEMO_CONFIG)]
    pretrain += ["--gpus-per-node", str(PRETRAIN_RANKS), "--master-port", str(free_port())]
    pretrain += ["--dataset", str(layout.dataset), "--output", str(layout.pretrain), *tracking]
    pretrain += ["--set", f"train_steps={size.pretrain_steps}", "--set", f"eval_every={size.eval_every}"]
    pretrain += ["--set", f"checkpoint_every={size.eval_every}"]

    finetune = [str(ROOT / "launch" / "finetune.sh"), "classify", "--model", f"models:/{REGISTERED_MODEL}@champion"]
    finetune += ["--train", str(CLASSIFY_TRAIN), "--validation", str(CLASSIFY_VALIDATION), *tracking]
    finetune += ["--epochs", str(size.finetune_epochs), "--learning-rate", str(size.finetune_learning_rate)]
    finetune += ["--batch-size", str(FINETUNE_BATCH_SIZE), "--max-seq-length", str(MAX_SEQ_LENGTH), "--log-every", "1"]
    finetune_steps = size.finetune_epochs * -(-count_lines(CLASSIFY_TRAIN) // FINETUNE_BATCH_SIZE)
    return [
        Step("vocabulary", f"WordPiece vocabulary of {size.vocab_size:,} tokens from {CORPUS.name}", vocabulary),
        Step(
            "preprocess",
            f"Beam job on {BEAM_WORKERS} local workers: sentences, NSP pairs, masks, WebDataset shards",
            preprocess,
        ),
        Step(
            "pretrain",
            f"pretraining with DeepSpeed: {PRETRAIN_RANKS} CPU ranks, ZeRO-2, {size.pretrain_steps} steps",
            pretrain,
            env={"OMP_NUM_THREADS": "1"},  # one core per rank
            metrics=layout.pretrain / "metrics.jsonl",
            total_steps=size.pretrain_steps,
        ),
        Step(
            "finetune-pretrained",
            f"classifier fine-tuned from models:/{REGISTERED_MODEL}@champion",
            [*finetune, "--output", str(layout.finetune_pretrained)],
            metrics=layout.finetune_pretrained / "metrics.jsonl",
            total_steps=finetune_steps,
        ),
        Step(
            "finetune-scratch",
            "the same classifier from random weights (baseline)",
            [*finetune, "--from-scratch", "--no-register", "--output", str(layout.finetune_scratch)],
            metrics=layout.finetune_scratch / "metrics.jsonl",
            total_steps=finetune_steps,
        ),
    ]


def count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def progress_line(metrics: Path, total_steps: int | None) -> str | None:
    """The latest training and evaluation figures in a metrics.jsonl, or None before there are any."""
    try:
        records = read_json_lines(metrics)
    except (OSError, ValueError):  # not written yet, or a line being written
        return None
    train = [r for r in records if "loss" in r]
    evaluations = [r for r in records if any(k.startswith("eval_") for k in r)]
    if not train:
        return None
    line = f"step {train[-1]['step']}" + (f"/{total_steps}" if total_steps else "") + f", loss {train[-1]['loss']:.3f}"
    if evaluations:
        latest = evaluations[-1]
        shown = {k: v for k, v in latest.items() if k.startswith("eval_") and k.endswith(("accuracy", "_loss"))}
        line += f"; held out (step {latest['step']}): " + ", ".join(
            f"{k.removeprefix('eval_').replace('_', ' ')} {v:.3f}" for k, v in shown.items()
        )
    return line


def run_step(step: Step, layout: DemoLayout, env: dict[str, str], echo: Callable[[str], None] = print) -> float:
    """Runs one step to completion; returns its wall time. A failure raises StepFailed with the log's tail."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    log_path = layout.logs / f"{step.name}.log"
    start = time.monotonic()
    last_shown = None
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            step.command, cwd=ROOT, env={**env, **step.env}, stdout=log, stderr=subprocess.STDOUT
        )
        while True:
            try:
                code = process.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                line = progress_line(step.metrics, step.total_steps) if step.metrics else None
                if line and line != last_shown:
                    echo(f"      {line}")
                    last_shown = line
    seconds = time.monotonic() - start
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise StepFailed(
            f"step '{step.name}' failed (exit code {code}) after {seconds:.0f} s; its last lines:\n"
            + "\n".join(tail)
            + f"\nThe whole log: {log_path}"
        )
    return seconds

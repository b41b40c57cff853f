"""The demo's steps: the project's own entry points (`bertpipe`, `launch/*.sh`) run one after another as
subprocesses, each writing its output to `<demo>/logs/<step>.log`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.checkpoint import atomic_write_bytes
from pipeline.demo.downstream import (
    FinetuneRun,
    FoldSplit,
    assign_folds,
    corpus_without,
    epochs_for_subset,
    percent,
    plan_runs,
    split_fold,
    subset_indices,
    subset_size,
)
from pipeline.demo.layout import (
    CLASSIFIER_MODEL,
    CLASSIFY_TRAIN,
    CORPUS,
    DEMO_CONFIG,
    FOLDS,
    MAX_SEQ_LENGTH,
    REGISTERED_MODEL,
    ROOT,
    SPLIT_SEED,
    VALIDATION_FRACTION,
    DemoLayout,
    DemoSize,
    fold_of_seed,
)
from pipeline.training.distributed import free_port
from pipeline.training.metrics import read_json_lines

PRETRAIN_RANKS = 2
BEAM_WORKERS = 2
FINETUNE_BATCH_SIZE = 32
LOG_TAIL_LINES = 40
POLL_S = 1.0  # how often the step's log and metrics are read
PROGRESS_INTERVAL_S = 20.0  # between two training-progress lines


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
    run: FinetuneRun | None = None  # for the fine-tuning steps


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
    """Vocabulary, Beam job, pretraining, then one fine-tuning step per (seed, fraction, arm)."""
    tracking = ["--tracking-uri", layout.tracking_uri]
    vocabulary = [sys.executable, "-m", "pipeline.cli", "tokenizer", "train", "--input", str(layout.corpus)]
    vocabulary += ["--vocab-size", str(size.vocab_size), "--out", str(layout.tokenizer)]

    preprocess = [str(ROOT / "launch" / "preprocess.sh"), "--phase", "1", "--input", str(layout.corpus)]
    preprocess += ["--tokenizer", str(layout.tokenizer), "--output", str(layout.data)]
    preprocess += ["--dupe-factor", str(size.dupe_factor), "--validation-fraction", "0.02", "--shard-mb", "8"]
    preprocess += [f"--direct_num_workers={BEAM_WORKERS}"]

    pretrain = [str(ROOT / "launch" / "pretrain.sh"), "--config", str(DEMO_CONFIG)]
    pretrain += ["--gpus-per-node", str(PRETRAIN_RANKS), "--master-port", str(free_port())]
    pretrain += ["--dataset", str(layout.dataset), "--output", str(layout.pretrain), *tracking]
    pretrain += ["--set", f"train_steps={size.pretrain_steps}", "--set", f"eval_every={size.eval_every}"]
    pretrain += ["--set", f"checkpoint_every={size.eval_every}"]

    steps = [
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
    ]
    splits = fold_splits(labelled_examples(CLASSIFY_TRAIN)[1])
    for run in plan_runs(size.finetune_fractions, size.finetune_seeds, size.finetune_learning_rates):
        full = len(splits[fold_of_seed(run.seed)].train)
        examples = subset_size(full, run.fraction)
        epochs = epochs_for_subset(examples, full, size.finetune_epochs, FINETUNE_BATCH_SIZE)
        steps.append(
            Step(
                run.name,
                finetune_title(run, examples),
                finetune_command(layout, run, epochs),
                metrics=layout.finetune_run(run) / "metrics.jsonl",
                total_steps=epochs * -(-examples // FINETUNE_BATCH_SIZE),
                run=run,
            )
        )
    return steps


def labelled_examples(source: Path) -> tuple[list[str], list[str]]:
    """The labelled file's non-empty lines and their labels."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines, [json.loads(line)["label"] for line in lines]


def fold_splits(labels: list[str]) -> list[FoldSplit]:
    """Every fold's training, validation and test indices: the demo's one way of splitting the task."""
    fold_of = assign_folds(labels, FOLDS, SPLIT_SEED)
    return [split_fold(fold_of, labels, fold, VALIDATION_FRACTION) for fold in range(FOLDS)]


def finetune_title(run: FinetuneRun, examples: int) -> str:
    start = f"models:/{REGISTERED_MODEL}@champion" if run.arm == "pretrained" else "random weights (baseline)"
    title = (
        f"classifier from {start}, {percent(run.fraction)}% of the training examples ({examples}), learning rate "
        f"{run.learning_rate:g}, seed {run.seed}"
    )
    return title + (f", registered as {CLASSIFIER_MODEL}" if run.registered else "")


def finetune_command(layout: DemoLayout, run: FinetuneRun, epochs: int) -> list[str]:
    """`launch/finetune.sh classify` for `epochs` (`epochs_for_subset`): the epoch chosen on the carved
    validation split, then scored once on the carved test split. Every run is tracked in the demo's store;
    only the registered run registers."""
    command = [str(ROOT / "launch" / "finetune.sh"), "classify", "--model", f"models:/{REGISTERED_MODEL}@champion"]
    fold = fold_of_seed(run.seed)
    command += ["--train", str(layout.task_subset(run.fraction, run.seed))]
    command += ["--validation", str(layout.task_validation(fold)), "--test", str(layout.task_test(fold))]
    command += ["--tracking-uri", layout.tracking_uri, "--seed", str(run.seed)]
    command += ["--epochs", str(epochs), "--learning-rate", str(run.learning_rate)]
    command += ["--batch-size", str(FINETUNE_BATCH_SIZE), "--max-seq-length", str(MAX_SEQ_LENGTH), "--log-every", "1"]
    if run.arm == "scratch":
        command.append("--from-scratch")
    if not run.registered:
        command.append("--no-register")
    return [*command, "--output", str(layout.finetune_run(run))]


@dataclass(frozen=True)
class TaskFiles:
    folds: list[FoldSplit]  # each fold's training, validation and test examples (indices into the source)
    subsets: dict[tuple[float, int], int]  # training examples of each (fraction, seed)
    corpus_lines_dropped: int  # lines of the corpus that held a labelled paragraph


def write_task_files(
    layout: DemoLayout, size: DemoSize, source: Path = CLASSIFY_TRAIN, corpus: Path = CORPUS
) -> TaskFiles:
    """`source` dealt into FOLDS stratified folds; for each fold its test file (the fold), its validation file
    (VALIDATION_FRACTION of the other folds) and its training file (the rest), and each seed's subsets for the
    fractions below 1, all under `layout.tasks` (lines copied unchanged); and `corpus` less the lines that hold
    a labelled paragraph, as `layout.corpus`. All splits come from the same files, so the test measures the
    task the classifier was trained for; the pretraining corpus holds none of the labelled text, so no
    model is pretrained on the text it is tested on, in any fold."""
    lines, labels = labelled_examples(source)
    folds = fold_splits(labels)

    def write(path: Path, indexes: list[int]) -> None:
        atomic_write_bytes(path, "".join(lines[i] + "\n" for i in indexes).encode("utf-8"))

    layout.tasks.mkdir(parents=True, exist_ok=True)
    for fold, split in enumerate(folds):
        write(layout.task_test(fold), split.test)
        write(layout.task_train(fold), split.train)
        write(layout.task_validation(fold), split.validation)
    corpus_lines, dropped = corpus_without(
        corpus.read_text(encoding="utf-8").splitlines(), [json.loads(line)["text"] for line in lines]
    )
    atomic_write_bytes(layout.corpus, "".join(line + "\n" for line in corpus_lines).encode("utf-8"))
    subsets = {}
    for fraction in size.finetune_fractions:
        for seed in range(size.finetune_seeds):
            train = folds[fold_of_seed(seed)].train
            chosen = subset_indices([labels[i] for i in train], fraction, seed)
            if fraction < 1.0:
                write(layout.task_subset(fraction, seed), [train[i] for i in chosen])
            subsets[(fraction, seed)] = len(chosen)
    return TaskFiles(folds, subsets, dropped)


def count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def progress_line(metrics: Path, total_steps: int | None) -> str | None:
    """The latest training step and loss in a metrics.jsonl, or None before there is one."""
    train = [r for r in metrics_records(metrics) if "loss" in r]
    if not train:
        return None
    return f"step {train[-1]['step']}" + (f"/{total_steps}" if total_steps else "") + f", loss {train[-1]['loss']:.3f}"


def evaluation_lines(metrics: Path, shown: int) -> list[str]:
    """One line per held-out evaluation in a metrics.jsonl, from the `shown`-th on."""
    evaluations = [r for r in metrics_records(metrics) if any(k.startswith("eval_") for k in r)]
    return [f"held out (step {r['step']}): {held_out_figures(r)}" for r in evaluations[shown:]]


def metrics_records(metrics: Path) -> list[dict]:
    try:
        return read_json_lines(metrics)
    except (OSError, ValueError):  # not written yet, or a line being written
        return []


# What a step's log says it starts doing next (pipeline.logs.announce, the launcher, DeepSpeed's op build).
ANNOUNCEMENT = re.compile(
    r"^\S+ \S+ INFO pipeline\.phase: (.*)$|^((?:pretrain|finetune)\.sh: starting .*?):|^(building .*)$"
)


class StepProgress:
    """What the demo shows while a step runs, each thing once: the step's announcements from its log as they
    appear, its training step and loss every `interval_s`, and each held-out evaluation when it is written."""

    def __init__(self, log_path: Path, metrics: Path | None, total_steps: int | None, interval_s: float) -> None:
        self.log_path, self.metrics, self.total_steps, self.interval_s = log_path, metrics, total_steps, interval_s
        self.log_offset = 0
        self.evaluations_shown = 0
        self.last_training: str | None = None
        self.last_training_at = -math.inf

    def new_lines(self, now: float) -> list[str]:
        lines = self._announcements()
        if self.metrics is None:
            return lines
        if now - self.last_training_at >= self.interval_s:
            training = progress_line(self.metrics, self.total_steps)
            if training and training != self.last_training:
                lines.append(training)
                self.last_training, self.last_training_at = training, now
        evaluations = evaluation_lines(self.metrics, self.evaluations_shown)
        self.evaluations_shown += len(evaluations)
        return lines + evaluations

    def _announcements(self) -> list[str]:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                chunk = log.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        found = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            match = ANNOUNCEMENT.match(line)
            if match:
                found.append(next(group for group in match.groups() if group))
        return found


def held_out_figures(record: dict) -> str:
    """A pretraining evaluation as the [MASK] loss against the unigram guess there, [MASK] accuracy and NSP
    against its majority share; any other evaluation as its losses and accuracies."""
    if "eval_mask_gain" in record:
        return (
            f"[MASK] loss {record['eval_mask_loss']:.3f} (unigram guess {record['eval_mask_unigram_loss']:.3f}, "
            f"gain {record['eval_mask_gain']:.3f} nats), [MASK] accuracy {record['eval_mask_accuracy']:.3f}, "
            f"NSP accuracy {record['eval_nsp_accuracy']:.3f} (majority {record['eval_nsp_majority']:.3f})"
        )
    shown = {k: v for k, v in record.items() if k.startswith("eval_") and k.endswith(("accuracy", "_loss"))}
    return ", ".join(f"{k.removeprefix('eval_').replace('_', ' ')} {v:.3f}" for k, v in shown.items())


def run_step(step: Step, layout: DemoLayout, env: dict[str, str], echo: Callable[[str], None] = print) -> float:
    """Runs one step to completion; returns its wall time. A failure raises StepFailed with the log's tail."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    log_path = layout.logs / f"{step.name}.log"
    start = time.monotonic()
    progress = StepProgress(log_path, step.metrics, step.total_steps, PROGRESS_INTERVAL_S)
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            step.command, cwd=ROOT, env={**env, **step.env}, stdout=log, stderr=subprocess.STDOUT
        )
        while True:
            try:
                code = process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                code = None
            for line in progress.new_lines(time.monotonic()):
                echo(f"      {line}")
            if code is not None:
                break
    seconds = time.monotonic() - start
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise StepFailed(
            f"step '{step.name}' failed (exit code {code}) after {seconds:.0f} s; its last lines:\n"
            + "\n".join(tail)
            + f"\nThe whole log: {log_path}"
        )
    return seconds

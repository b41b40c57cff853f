"""How well pretraining teaches a model language: ours against transformers' `Trainer`, on the bundled corpus.

Both arms train the same architecture (the config's preset, `tiny` in the demo config: 2 layers, hidden 128,
vocab 8,192) on the same NSP pairs for the same number of sequences (`--steps` x `--batch`), and both are
scored by the same code on the same held-out positions:

- **ours**: `launch/pretrain.sh --config CONFIG` with DeepSpeed on 2 CPU ranks (one thread each), the shards'
  static masks, the config's optimizer and schedule; `metrics.jsonl` gives the evaluations, and the
  benchmark notes the wall-clock moment each record appears (polling the file). The final checkpoint is
  exported with `bertpipe export`.
- **peer**: `transformers.BertForPreTraining` (random init, transformers' defaults) trained by
  `transformers.Trainer` on the same pairs (our train shards, un-masked to the original tokens) with
  dynamic masking by `DataCollatorForLanguageModeling(mlm_probability=0.15)`: the run_mlm recipe a user
  would pick, with AdamW, lr, betas, eps, weight decay and gradient clipping from the config's
  deepspeed.json, the same warmup steps and linear decay, the same batch and steps, default dropout, fp32,
  no DataLoader workers, 2 torch threads. A `TrainerCallback` evaluates it at the steps ours evaluates.
- **random**: transformers' random initialisation, evaluated once (step 0).

Evaluation is `pipeline.training.evaluate.evaluate` on our validation shards (the peer's model behind a thin
adapter), with the unigram baseline of `pipeline.data.loader.target_counts` over the train split, as the
trainer computes it. The headline is the held-out loss at `[MASK]` positions against that context-free
guess. Downstream, each arm's final model (and random weights, `--from-scratch`) is fine-tuned on the
bundled classification task with `launch/finetune.sh classify`, split as the demo splits it
(`pipeline.demo.steps.write_task_files`: the labelled paragraphs dealt into 3 stratified folds; seed s is
tested on fold s % 3, chooses the epoch and the learning rate on 20% of the other folds and trains on the
rest, or on the demo's subset of 10% or 30% of it), and scored once on its fold; the gap to random weights is
taken per seed at each amount of labelled data, as the demo takes it. As in the demo, the vocabulary and the
pretraining data are made from the corpus less the lines that hold a labelled paragraph.

Wall time: each arm's clock starts when the arm starts (ours: launching `pretrain.sh`, so it includes
starting the launcher and the ranks; the peer: reading the shards in this already-running process) and
includes the evaluations. Time per training step leaves out start-up and evaluations: the time between
the first and the last logged step, less the evaluations between them, over the steps between them.

    python benchmarks/learning.py                        # the demo's 2,000 steps, 3 seeds: ~3 hours on 2 cores
    python benchmarks/learning.py --steps 20 --eval-every 10 --seeds 1 --finetune-epochs 1
    python benchmarks/learning.py --workdir /tmp/learning  # keeps the dataset (and the runs) for a rerun
    python benchmarks/learning.py --workdir /tmp/learning --seeds 1            # a seed at a time (~1 hour each);
    python benchmarks/learning.py --workdir /tmp/learning --seeds 3 --resume   # then seeds 2 and 3, seed 1 reused
    python benchmarks/learning.py --workdir /tmp/learning --seeds 3 --extend benchmarks/results/learning.json

Each seed's finished arms are kept in the work directory (`runs/seedN/seed.json`, written after each arm, with
what their results depend on: the settings, the config's files, the dataset); `--resume` takes
them instead of running them again when those are the same; an arm cut short runs again from its start.
Which other arms ran does not matter: seeds run with `--skip-peer` take the peer on with `--resume` alone.
A result records the same inputs (`seed_inputs`), and `--extend` adds seeds to it later when they are the
same, in any work directory and on any machine: the dataset is compared by its manifest (vocabulary, shards'
hashes, settings) less where its input lay, and the same corpus and settings give the same vocabulary and
shards. The code is not compared: resume or extend with the code that ran the arms. Each run notes the machine
it ran on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_description, cpu_model
from model.heads import IGNORE_INDEX
from pipeline.data.dataset_check import load_manifest
from pipeline.demo.downstream import (
    RunResult,
    Spread,
    choose_learning_rates,
    compare,
    epochs_for_subset,
    percent,
    signed_points,
)
from pipeline.demo.layout import FOLDS, SIZES, DemoLayout, fold_of_seed
from pipeline.demo.report import read_labels
from pipeline.demo.steps import write_task_files
from pipeline.handoff.registry import file_sha256
from pipeline.training.deepspeed_config import resolve_batch_sizes
from pipeline.training.distributed import free_port
from pipeline.training.train_config import LoadedConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
# how many updates a classifier on a fraction of the training examples gets (`epochs_for_subset`); a seed
# fine-tuned under another rule is fine-tuned again by --resume
FINETUNE_UPDATES = "as many as --finetune-epochs over all the training examples"
PYDOCS = ROOT / "tests" / "data" / "pydocs"
CORPUS = PYDOCS / "demo_corpus.txt"
CLASSIFY_TRAIN = PYDOCS / "tasks" / "classify_train.jsonl"  # the demo carves test, validation and training from it
DEMO_CONFIG = ROOT / "launch" / "configs" / "demo"
VOCAB_SIZE = 8192
RANKS = 2  # ours: DeepSpeed CPU ranks, one core each
PEER_THREADS = 2  # the peer: one process, torch on both cores
POLL_S = 0.05
FINETUNE = {"batch_size": 32, "max_seq_length": 128}
ARMS = ("ours", "peer", "random")
# The held-out figures kept per evaluation (EvalResult.as_metrics without its "eval_" prefix).
HEADLINE = ("mask_loss", "mask_unigram_loss", "mask_gain", "mask_accuracy", "nsp_accuracy", "nsp_majority")
MULTI_NODE_VARIABLES = ("HOSTFILE", "SLURM_JOB_NODELIST", "RANK", "LOCAL_RANK", "WORLD_SIZE")


# -- pure: metric bookkeeping and aggregation over seeds ---------------------------------------------------


def eval_figures(record: dict[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The numeric evaluation figures of a metrics record, without their prefix."""
    return {k.removeprefix(prefix): float(v) for k, v in record.items() if k.startswith(prefix)}


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None with fewer than two values; NaN stays NaN)."""
    numbers = [math.nan if v is None else float(v) for v in values]
    count = len(numbers)
    if count == 0:
        return {"mean": None, "std": None, "n": 0}
    if count == 1:
        return {"mean": numbers[0], "std": None, "n": 1}
    std = statistics.stdev(numbers) if all(map(math.isfinite, numbers)) else math.nan
    return {"mean": math.fsum(numbers) / count, "std": std, "n": count}


def aggregate_figures(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Per figure, mean and std over the runs (figures every run has)."""
    keys = [k for k in runs[0] if all(k in run for run in runs)] if runs else []
    return {key: mean_std([run[key] for run in runs]) for key in keys}


def aggregate_curves(curves: Sequence[Sequence[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per step that every curve has: mean and std over the curves of each figure."""
    if not curves:
        return []
    shared = set.intersection(*({point["step"] for point in curve} for curve in curves))
    points = []
    for step in sorted(shared):
        at_step = [next(p for p in curve if p["step"] == step) for curve in curves]
        figures = aggregate_figures([{k: v for k, v in p.items() if k != "step"} for p in at_step])
        points.append({"step": step, **figures})
    return points


def training_seconds_per_step(step_times: dict[int, float], eval_seconds: dict[int, float]) -> float | None:
    """Seconds per training step between the first and the last timed step, evaluations left out.

    `step_times[s]`: when step s had finished (before any evaluation at s); `eval_seconds[s]`: how long the
    evaluation after step s took. Evaluations at the first step up to (not including) the last fall in between.
    """
    if len(step_times) < 2:
        return None
    first, last = min(step_times), max(step_times)
    evaluations = math.fsum(seconds for step, seconds in eval_seconds.items() if first <= step < last)
    return (step_times[last] - step_times[first] - evaluations) / (last - first)


def startup_seconds(step_times: dict[int, float], seconds_per_step: float | None) -> float | None:
    """The wall time before the first step began: the first timed step's moment less its steps' share."""
    if not step_times or seconds_per_step is None:
        return None
    first = min(step_times)
    return step_times[first] - first * seconds_per_step


def evaluation_steps(steps: int, every: int) -> list[int]:
    """Where ours evaluates: every `every` steps before the end, and at the end."""
    return [s for s in range(every, steps, every)] + [steps]


def logged_steps(steps: int, every: int) -> list[int]:
    """Where ours writes a training record: every `every` steps, and at the end."""
    return sorted({*range(every, steps + 1, every), steps})


def count_examples(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def majority_share(labels: Iterable[Any]) -> float:
    labels = list(labels)
    return max(labels.count(label) for label in set(labels)) / len(labels)


def number(value: float | None, default: float = math.nan) -> float:
    """`value` as a float for plotting; None and NaN become `default`."""
    return default if value is None or not math.isfinite(value) else float(value)


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN/inf float replaced by None, so that the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


# -- settings shared by the arms --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    config: Path
    steps: int
    eval_every: int
    log_every: int
    batch: int
    finetune_epochs: int
    finetune_learning_rates: tuple[float, ...]  # each arm is fine-tuned at every one and scored at its best
    finetune_fractions: tuple[float, ...]  # of the labelled training examples, increasing, 1.0 last
    dataset: Path
    work: Path

    def overrides(self, seed: int) -> dict[str, Any]:
        """The train.json fields the benchmark sets for both arms."""
        return {"train_steps": self.steps, "eval_every": self.eval_every, "seed": seed}

    def loaded(self, seed: int) -> LoadedConfig:
        return load_config(self.config, self.overrides(seed))


def log_every_for(config_log_every: int, eval_every: int) -> int:
    """A training-record interval that divides the evaluation interval (so an evaluation's duration is the
    gap between the record and the evaluation at the same step), no coarser than the config's."""
    return math.gcd(config_log_every, eval_every)


def deepspeed_for_batch(ds_config: dict[str, Any], batch: int, ranks: int) -> dict[str, Any] | None:
    """A copy of the DeepSpeed config with a global batch of `batch`, or None when it already has it."""
    if resolve_batch_sizes(ds_config, ranks).global_batch == batch:
        return None
    if batch % ranks:
        raise SystemExit(f"--batch {batch} must be a multiple of the {ranks} ranks ours runs on")
    changed = {k: v for k, v in ds_config.items() if k not in ("train_micro_batch_size_per_gpu",)}
    changed.update(train_batch_size=batch, gradient_accumulation_steps=1)
    return changed


# -- data -------------------------------------------------------------------------------------------------


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Runs `command` from the repository root with its output in `log`; returns its wall time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {code}); the end of {log}:\n{tail}")
    return time.monotonic() - start


def cpu_env(**extra: str) -> dict[str, str]:
    """The environment of the project's entry points here: DeepSpeed on CPU, this Python, this machine only."""
    env = {k: v for k, v in os.environ.items() if k not in MULTI_NODE_VARIABLES}
    env.update(DS_ACCELERATOR="cpu", BERTPIPE_PYTHON=sys.executable, **extra)
    return env


DEMO_DUPE_FACTOR = SIZES["full"].dupe_factor  # masking passes over the corpus, as `make demo` makes them


def demo_split(work: Path, fractions: Sequence[float] = (1.0,), seeds: Sequence[int] = ()) -> DemoLayout:
    """The demo's task files, the training subsets of `fractions` for `seeds`, and the demo's corpus without
    the labelled paragraphs; written when one of them is missing (the same files each time: the splits are
    seeded)."""
    layout = DemoLayout(work / "demo")
    wanted = [layout.corpus, *(layout.task_subset(fraction, seed) for fraction in fractions for seed in seeds)]
    if not all(path.is_file() for path in wanted):
        size = replace(SIZES["full"], finetune_fractions=tuple(sorted({*fractions, 1.0})))
        write_task_files(layout, replace(size, finetune_seeds=max(seeds, default=0) + 1))
    return layout


def build_data(work: Path, dupe_factor: int = DEMO_DUPE_FACTOR) -> tuple[Path, dict[str, float]]:
    """The demo's vocabulary and shards (`bertpipe tokenizer train`, `launch/preprocess.sh --phase 1`) from
    the demo's corpus, built once per work directory: a later run finds them and builds nothing."""
    corpus = demo_split(work).corpus
    tokenizer, data = work / "tokenizer", work / "data"
    dataset = data / "seq128"
    seconds = {}
    if not (tokenizer / "vocab.txt").is_file():
        command = [sys.executable, "-m", "pipeline.cli", "tokenizer", "train", "--input", str(corpus)]
        command += ["--vocab-size", str(VOCAB_SIZE), "--out", str(tokenizer)]
        seconds["vocabulary_s"] = run_logged(command, work / "logs" / "vocabulary.log", cpu_env())
    if (dataset / "manifest.json").is_file():
        built_with = load_manifest(dataset).parameters.get("dupe_factor")
        if built_with != dupe_factor:
            raise SystemExit(
                f"{work} holds shards made with --dupe-factor {built_with}, not {dupe_factor}: "
                "give another --workdir, or the same --dupe-factor"
            )
    else:
        command = [str(ROOT / "launch" / "preprocess.sh"), "--phase", "1", "--input", str(corpus)]
        command += ["--tokenizer", str(tokenizer), "--output", str(data), "--dupe-factor", str(dupe_factor)]
        command += ["--validation-fraction", "0.02", "--shard-mb", "8", "--direct_num_workers=2"]
        seconds["preprocess_s"] = run_logged(command, work / "logs" / "preprocess.log", cpu_env())
    return dataset, seconds


@dataclass(frozen=True)
class HeldOut:
    """What the peer and the random arm are scored on, as the trainer builds it."""

    batches: list[dict[str, torch.Tensor]]
    mask_id: int
    unigram: torch.Tensor


def held_out(settings: Settings) -> HeldOut:
    from pipeline.data.loader import SplitSpec, evaluation_batches, target_counts
    from pipeline.training.evaluate import unigram_log_probs
    from pipeline.training.pretrain import UNIGRAM_SAMPLES  # the trainer's own sample count for the baseline

    manifest = load_manifest(settings.dataset)
    train = settings.loaded(seed=0).train
    special = manifest.tokenizer.special_token_ids
    vocab = manifest.tokenizer.vocab_size
    train_spec = SplitSpec.from_manifest(settings.dataset, manifest, "train")
    validation_spec = SplitSpec.from_manifest(settings.dataset, manifest, "validation")
    counts = target_counts(train_spec, vocab, UNIGRAM_SAMPLES, train.verify_checksums)
    batches = evaluation_batches(
        validation_spec, settings.batch, 0, 1, train.eval_samples or None, train.verify_checksums
    )
    return HeldOut(batches, int(special["[MASK]"]), unigram_log_probs(counts, special.values()))


# -- ours: launch/pretrain.sh, timed by polling its metrics.jsonl -----------------------------------------


class MetricsFollower:
    """Reads the records a running trainer appends to metrics.jsonl, noting when each appeared."""

    def __init__(self, path: Path, clock: Callable[[], float]):
        self.path, self.clock = path, clock
        self.offset = 0
        self.records: list[tuple[float, dict[str, Any]]] = []

    def poll(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(complete)
        now = self.clock()
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                self.records.append((now, json.loads(line)))


def ours_timings(records: list[tuple[float, dict[str, Any]]]) -> tuple[dict[int, float], dict[int, float]]:
    """(when each training record appeared, by step; how long each evaluation took, by step)."""
    step_times = {r["step"]: t for t, r in records if "loss" in r}
    eval_seconds = {
        r["step"]: t - step_times[r["step"]] for t, r in records if "eval_mask_loss" in r and r["step"] in step_times
    }
    return step_times, eval_seconds


def arm_record(
    curve: list[dict[str, Any]],
    step_times: dict[int, float],
    eval_seconds: dict[int, float],
    pretrain_s: float,
    export_s: float,
    model_dir: Path,
) -> dict[str, Any]:
    """What a pretraining arm reports: its curve, time per step without start-up and evaluations, its model."""
    per_step = training_seconds_per_step(step_times, eval_seconds)
    return {
        "curve": curve,
        "seconds_per_step": per_step,
        "startup_s": startup_seconds(step_times, per_step),
        "eval_s": eval_seconds,
        "pretrain_wall_s": pretrain_s,
        "export_s": export_s,
        "model_dir": model_dir,
    }


def run_ours(settings: Settings, seed: int, run_dir: Path) -> dict[str, Any]:
    config = settings.loaded(seed)
    output = run_dir / "pretrain"
    command = [str(ROOT / "launch" / "pretrain.sh"), "--config", str(settings.config)]
    command += ["--gpus-per-node", str(RANKS), "--master-port", str(free_port())]
    command += ["--dataset", str(settings.dataset), "--output", str(output), "--tracking-uri", "off"]
    sets = {
        **settings.overrides(seed),
        "log_every": settings.log_every,
        "checkpoint_every": settings.steps,  # the peer saves nothing: one checkpoint, at the end, for the export
        "register": "false",
        "register_on_best_eval": "false",
    }
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    changed = deepspeed_for_batch(config.deepspeed, settings.batch, RANKS)
    if changed is not None:
        ds_path = run_dir / "deepspeed.json"
        ds_path.write_text(json.dumps(changed, indent=2) + "\n")
        command += ["--deepspeed-config", str(ds_path)]

    log = run_dir / "pretrain.log"
    start = time.monotonic()
    follower = MetricsFollower(output / "metrics.jsonl", lambda: time.monotonic() - start)
    with log.open("w", encoding="utf-8") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=cpu_env(OMP_NUM_THREADS="1"), stdout=handle, stderr=subprocess.STDOUT
        )
        try:
            while process.poll() is None:
                follower.poll()
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
    follower.poll()
    pretrain_s = time.monotonic() - start
    if process.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise RuntimeError(f"ours (seed {seed}) failed, exit {process.returncode}; the end of {log}:\n{tail}")

    export = run_dir / "model"
    command = [sys.executable, "-m", "pipeline.cli", "export", "--checkpoint", str(output), "--out", str(export)]
    export_s = run_logged(command, run_dir / "export.log", cpu_env())

    step_times, eval_seconds = ours_timings(follower.records)
    curve = [{"step": r["step"], "wall_s": t, **eval_figures(r)} for t, r in follower.records if "eval_mask_loss" in r]
    return arm_record(curve, step_times, eval_seconds, pretrain_s, export_s, export)


# -- the peer: transformers' BertForPreTraining under transformers' Trainer -------------------------------


class PretrainingAdapter(torch.nn.Module):
    """A transformers BertForPreTraining behind the interface `pipeline.training.evaluate.evaluate` calls: our batch
    keys in, MLM logits at the predicted slots and NSP counts out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        masked_lm_positions: torch.Tensor,
        masked_lm_labels: torch.Tensor,
        next_sentence_label: torch.Tensor,
    ) -> SimpleNamespace:
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        slots = masked_lm_positions.unsqueeze(-1).expand(-1, -1, out.prediction_logits.shape[-1])
        labelled = next_sentence_label != IGNORE_INDEX
        guessed = out.seq_relationship_logits.argmax(dim=-1)
        return SimpleNamespace(
            mlm_logits=torch.gather(out.prediction_logits, 1, slots),
            nsp_correct=((guessed == next_sentence_label) & labelled).sum(),
            nsp_count=labelled.sum(),
        )


def pair_examples(dataset: Path, verify: bool = True) -> list[dict[str, Any]]:
    """Our training pairs as a transformers user feeds them to the MLM collator: the original tokens (masks
    undone), segment ids, attention mask, special-tokens mask, and the NSP label."""
    from pipeline.data.loader import SplitSpec
    from pipeline.data.shard_reader import read_shard_members
    from preprocessing.masking import unmask
    from preprocessing.shards import decode_sample

    manifest = load_manifest(dataset)
    spec = SplitSpec.from_manifest(dataset, manifest, "train")
    special = np.array(sorted(manifest.tokenizer.special_token_ids.values()))
    dtype = np.dtype(spec.token_dtype)
    examples = []
    for shard, size in enumerate(spec.shard_sizes):
        sha256 = spec.shard_sha256[shard] if verify else None
        for member in read_shard_members(spec.url(shard), size, sha256):
            sample = decode_sample(member, dtype)
            tokens = unmask(sample.input_ids, sample.masked_lm_positions, sample.masked_lm_ids).astype(np.int64)
            examples.append(
                {
                    "input_ids": tokens.tolist(),
                    "token_type_ids": sample.segment_ids.tolist(),
                    "attention_mask": [1] * len(tokens),
                    "special_tokens_mask": np.isin(tokens, special).astype(np.int64).tolist(),
                    "next_sentence_label": int(sample.next_sentence_label),
                }
            )
    return examples


class NspMlmCollator:
    """`DataCollatorForLanguageModeling` for the token fields, with the NSP label passed through."""

    def __init__(self, mlm_collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]):
        self.mlm_collator = mlm_collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([f["next_sentence_label"] for f in features], dtype=torch.long)
        batch = self.mlm_collator([{k: v for k, v in f.items() if k != "next_sentence_label"} for f in features])
        batch["next_sentence_label"] = labels
        return batch


def peer_config(settings: Settings, vocab_size: int) -> Any:
    """transformers' BertConfig at our preset's size, every other field transformers' default."""
    import transformers

    from model import BertConfig

    ours = BertConfig.from_preset(settings.loaded(seed=0).train.model, vocab_size=vocab_size)
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    fields = {name: getattr(ours, name) for name in sizes}
    return transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **fields)


def peer_arguments(settings: Settings, seed: int, output: Path) -> Any:
    """The run_mlm recipe with the config's optimizer settings and schedule."""
    from transformers import TrainingArguments

    loaded = settings.loaded(seed)
    params = loaded.deepspeed["optimizer"]["params"]
    if str(loaded.deepspeed["optimizer"].get("type", "")).lower() not in ("adam", "adamw"):
        raise SystemExit("the peer runs AdamW: give a config whose deepspeed.json optimizer is AdamW")
    decay = {"linear": "linear", "constant": "constant_with_warmup"}.get(loaded.train.lr_decay)
    if decay is None:
        raise SystemExit(f"the peer has linear or constant decay, not the config's {loaded.train.lr_decay!r}")
    beta1, beta2 = params.get("betas", (0.9, 0.999))
    return TrainingArguments(
        output_dir=str(output),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch,
        learning_rate=float(params["lr"]),
        adam_beta1=float(beta1),
        adam_beta2=float(beta2),
        adam_epsilon=float(params.get("eps", 1e-8)),
        weight_decay=float(params.get("weight_decay", 0.0)),
        max_grad_norm=float(loaded.deepspeed.get("gradient_clipping", 0.0)),
        warmup_steps=loaded.train.warmup,  # an int: a step count, as ours rounds the warmup proportion
        lr_scheduler_type=decay,
        seed=seed,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # the collator takes the special-tokens mask and the NSP label itself
        eval_strategy="no",  # evaluated by the callback, on our held-out split with our metric code
        save_strategy="no",
        logging_strategy="no",  # the callback times the steps; the evaluations are what is compared
        report_to="none",
        disable_tqdm=True,
    )


def run_peer(settings: Settings, seed: int, run_dir: Path, evaluation: HeldOut) -> dict[str, Any]:
    import transformers
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback

    from pipeline.training.evaluate import evaluate

    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731
    torch.set_num_threads(PEER_THREADS)
    manifest = load_manifest(settings.dataset)
    examples = pair_examples(settings.dataset, settings.loaded(seed).train.verify_checksums)
    tokenizer = transformers.AutoTokenizer.from_pretrained(settings.dataset)
    collator = NspMlmCollator(DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15))
    transformers.set_seed(seed)
    model = transformers.BertForPreTraining(peer_config(settings, manifest.tokenizer.vocab_size))
    evaluated = set(evaluation_steps(settings.steps, settings.eval_every))
    timed = set(logged_steps(settings.steps, settings.log_every))
    step_times: dict[int, float] = {}
    eval_seconds: dict[int, float] = {}
    curve: list[dict[str, float]] = []

    class HeldOutEvaluation(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            step, now = state.global_step, clock()
            if step in timed:
                step_times[step] = now
            if step in evaluated:
                adapter = PretrainingAdapter(model)
                result = evaluate(
                    adapter, evaluation.batches, torch.device("cpu"), evaluation.mask_id, evaluation.unigram
                )
                eval_seconds[step] = clock() - now
                curve.append({"step": step, "wall_s": clock(), **eval_figures(result.as_metrics())})

    trainer = Trainer(
        model=model,
        args=peer_arguments(settings, seed, run_dir / "trainer"),
        train_dataset=examples,
        data_collator=collator,
        callbacks=[HeldOutEvaluation()],
    )
    trainer.train()
    pretrain_s = clock()
    model_dir = run_dir / "model"
    model.save_pretrained(model_dir)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(settings.dataset / name, model_dir / name)
    return {
        **arm_record(curve, step_times, eval_seconds, pretrain_s, clock() - pretrain_s, model_dir),
        "train_examples": len(examples),
    }


def run_random(settings: Settings, seed: int, evaluation: HeldOut) -> dict[str, Any]:
    """transformers' random initialisation, scored once."""
    import transformers

    from pipeline.training.evaluate import evaluate

    start = time.monotonic()
    manifest = load_manifest(settings.dataset)
    transformers.set_seed(seed)
    model = transformers.BertForPreTraining(peer_config(settings, manifest.tokenizer.vocab_size))
    adapter = PretrainingAdapter(model)
    result = evaluate(adapter, evaluation.batches, torch.device("cpu"), evaluation.mask_id, evaluation.unigram)
    curve = [{"step": 0, "wall_s": 0.0, **eval_figures(result.as_metrics())}]
    return {"curve": curve, "eval_wall_s": time.monotonic() - start}


# -- downstream: launch/finetune.sh classify --------------------------------------------------------------


def finetune(
    work: Path,
    model_dir: Path,
    output: Path,
    seed: int,
    fraction: float,
    full_epochs: int,
    learning_rate: float,
    from_scratch: bool,
) -> dict[str, Any]:
    """The classifier trained on `fraction` of the fold's training examples (the demo's subset for the seed)
    for as many updates as `full_epochs` over all of them take (the demo's rule, `epochs_for_subset`), its
    epoch chosen on the validation split and scored once on the test split."""
    task, fold = demo_split(work, (fraction,), (seed,)), fold_of_seed(seed)
    train = task.task_subset(fraction, seed)
    examples = count_examples(train)
    epochs = epochs_for_subset(examples, count_examples(task.task_train(fold)), full_epochs, FINETUNE["batch_size"])
    command = [str(ROOT / "launch" / "finetune.sh"), "classify", "--model", str(model_dir)]
    command += ["--train", str(train), "--validation", str(task.task_validation(fold))]
    command += ["--test", str(task.task_test(fold))]
    command += ["--output", str(output)]
    command += ["--epochs", str(epochs), "--learning-rate", str(learning_rate)]
    command += ["--batch-size", str(FINETUNE["batch_size"]), "--max-seq-length", str(FINETUNE["max_seq_length"])]
    command += ["--tracking-uri", "off", "--no-register", "--seed", str(seed)]
    command += ["--from-scratch"] if from_scratch else []
    wall = run_logged(command, output.with_name(f"{output.name}.log"), cpu_env())
    summary = json.loads((output / "finetune_summary.json").read_text())
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_epoch = sorted((r for r in records if "eval_accuracy" in r and "epoch" in r), key=lambda r: r["epoch"])
    return {
        "fraction": fraction,
        "train_examples": examples,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "accuracy_test": summary["test"]["accuracy"],
        "accuracy_validation": summary["evaluation"]["accuracy"],
        "best_epoch": summary["best_epoch"],
        "accuracy_by_epoch": [r["eval_accuracy"] for r in by_epoch],
        "wall_s": wall,
    }


# -- the benchmark --------------------------------------------------------------------------------------


def run_seed(
    settings: Settings,
    seed: int,
    arms: Sequence[str],
    evaluation: HeldOut,
    finished: dict[str, dict[str, Any]],
    save: Callable[[dict[str, dict[str, Any]]], None],
) -> dict[str, dict[str, Any]]:
    """Each arm of one seed but the `finished` ones; `save` gets the seed's runs after every arm. A finished
    arm without downstream results (`finished_arms`: the fine-tuning settings changed) is only fine-tuned."""
    runs: dict[str, dict[str, Any]] = {}
    for arm in arms:
        run_dir = settings.work / "runs" / f"seed{seed}" / arm
        if arm in finished and "downstream_by_rate" in finished[arm]:
            runs[arm] = finished[arm]
            print(f"  seed {seed} {arm:6s}: finished earlier, taken as it was (--resume, --extend)", flush=True)
            continue
        if arm in finished:
            run = runs[arm] = finished[arm]
            for earlier in run_dir.glob("finetune-*"):
                shutil.rmtree(earlier) if earlier.is_dir() else earlier.unlink()
            run["downstream_by_rate"] = fine_tune_arm(settings, seed, arm, Path(run["model_dir"]), run_dir)
            print(
                f"  seed {seed} {arm:6s}: pretrained earlier, fine-tuned again (--resume); downstream "
                f"{downstream_line(run)}",
                flush=True,
            )
            save(runs)
            continue
        shutil.rmtree(run_dir, ignore_errors=True)  # the benchmark's own scratch from an earlier run
        run_dir.mkdir(parents=True)
        started = time.monotonic()
        if arm == "ours":
            run = run_ours(settings, seed, run_dir)
        elif arm == "peer":
            run = run_peer(settings, seed, run_dir, evaluation)
        else:
            run = run_random(settings, seed, evaluation)
        # --from-scratch takes the architecture and the tokenizer from ours' export
        model_dir = run["model_dir"] if "model_dir" in run else runs["ours"]["model_dir"]
        run["downstream_by_rate"] = fine_tune_arm(settings, seed, arm, Path(model_dir), run_dir)
        run["arm_wall_s"] = time.monotonic() - started
        run["machine"] = cpu_description()  # seeds reused by --resume may have run elsewhere
        run["final"] = {k: v for k, v in run["curve"][-1].items() if k not in ("step", "wall_s")}
        run["model_dir"] = str(model_dir)
        runs[arm] = run
        final = run["final"]
        per_step = f", {run['seconds_per_step']:.3f} s/step" if run.get("seconds_per_step") else ""
        print(
            f"  seed {seed} {arm:6s}: [MASK] loss {final['mask_loss']:.3f} (unigram {final['mask_unigram_loss']:.3f}), "
            f"[MASK] acc {final['mask_accuracy']:.3f}, NSP {final['nsp_accuracy']:.3f}; downstream "
            f"{downstream_line(run)}"
            f"{per_step}; arm {run['arm_wall_s']:.0f} s",
            flush=True,
        )
        save(runs)
    return runs


def downstream_line(run: dict[str, Any]) -> str:
    return ", ".join(
        f"{percent(t['fraction'])}% lr {t['learning_rate']:g} {t['accuracy_test']:.3f} "
        f"(validation {t['accuracy_validation']:.3f})"
        for t in run["downstream_by_rate"]
    )


def fine_tune_arm(settings: Settings, seed: int, arm: str, model_dir: Path, run_dir: Path) -> list[dict[str, Any]]:
    """The arm's classifier at every fraction and learning rate of the settings (`finetune`)."""
    return [
        finetune(
            settings.work,
            model_dir,
            run_dir / f"finetune-{percent(fraction)}pct-lr{rate:g}",
            seed,
            fraction,
            settings.finetune_epochs,
            rate,
            from_scratch=arm == "random",
        )
        for fraction in settings.finetune_fractions
        for rate in settings.finetune_learning_rates
    ]


def run_results(runs: Sequence[dict[str, Any]], as_arm: str) -> list[RunResult]:
    """Every fine-tuning of the runs (one arm's seeds), named `as_arm` for the demo's comparison."""
    return [
        RunResult(as_arm, t["fraction"], run["seed"], t["learning_rate"], t["accuracy_validation"], t["accuracy_test"])
        for run in runs
        for t in run["downstream_by_rate"]
    ]


def choose_downstream(runs: Sequence[dict[str, Any]], arm: str) -> float:
    """Each run's `downstream`: its fine-tuning on every training example at the learning rate whose mean
    validation accuracy over the arm's seeds is best (the demo's rule, `choose_learning_rates`). Returns that
    rate."""
    rate = choose_learning_rates(run_results(runs, arm))[(arm, 1.0)]
    for run in runs:
        run["downstream"] = next(
            t for t in run["downstream_by_rate"] if t["learning_rate"] == rate and t["fraction"] == 1.0
        )
    return rate


def downstream_gaps(result_arms: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """For each pretrained arm (ours, the peer), the demo's comparison with random weights at each fraction
    (`pipeline.demo.downstream.compare`): test accuracy of both, each at the learning rate its validation
    accuracy prefers, and the gap in points over the per-seed differences (the seeds share folds and subsets)."""
    if "random" not in result_arms:
        return {}
    scratch = run_results(result_arms["random"]["runs"], "scratch")
    gaps = {}
    for arm in ("ours", "peer"):
        if arm not in result_arms:
            continue
        runs = result_arms[arm]["runs"]
        examples = {t["fraction"]: t["train_examples"] for t in runs[0]["downstream_by_rate"]}
        gaps[arm] = [
            {
                "fraction": c.fraction,
                "train_examples": c.train_examples,  # the first seed's (the folds differ by one at most)
                "pretrained": asdict(c.pretrained),
                "random": asdict(c.scratch),
                "gap_points": asdict(c.gap_points),
                "gap_over_twice_std": c.clear,
                "learning_rates": {arm: c.learning_rates["pretrained"], "random": c.learning_rates["scratch"]},
            }
            for c in compare([*run_results(runs, "pretrained"), *scratch], examples)
        ]
    return gaps


def summarize_arm(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    summary = {
        "final": aggregate_figures([r["final"] for r in runs]),
        "downstream": aggregate_figures(
            [
                {k: v for k, v in r["downstream"].items() if k not in ("accuracy_by_epoch", "learning_rate")}
                for r in runs
            ]
        ),
        "curve": aggregate_curves([r["curve"] for r in runs]),
    }
    for key in ("seconds_per_step", "startup_s", "pretrain_wall_s", "arm_wall_s"):
        if all(r.get(key) is not None for r in runs):
            summary[key] = mean_std([r[key] for r in runs])
    return summary


def without(figures: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k not in keys}


def dataset_facts(dataset: Path) -> dict[str, Any]:
    manifest = load_manifest(dataset)
    return {
        "corpus": f"{CORPUS.relative_to(ROOT)} less the lines that hold a test paragraph",
        "vocab_size": manifest.tokenizer.vocab_size,
        "parameters": manifest.parameters,
        "train_samples": manifest.splits["train"].samples,
        "validation_samples": manifest.splits["validation"].samples,
    }


def seed_inputs(settings: Settings, arms: Sequence[str]) -> dict[str, Any]:
    """What a seed's results depend on besides the code: a finished seed is reused (`--resume`) only by a run
    whose inputs are the same."""
    config_files = {p.name: file_sha256(p) for p in sorted(settings.config.glob("*.json"))}
    return {
        "arms": list(arms),
        "steps": settings.steps,
        "eval_every": settings.eval_every,
        "log_every": settings.log_every,
        "batch": settings.batch,
        "finetune_epochs": settings.finetune_epochs,
        "finetune_updates": FINETUNE_UPDATES,
        "finetune_learning_rates": list(settings.finetune_learning_rates),
        "finetune_fractions": list(settings.finetune_fractions),
        "config_files": config_files,
        "dataset": dataset_identity(settings.dataset),
    }


def dataset_identity(dataset: Path) -> str:
    """The sha256 of the dataset's manifest with each input named by its file name instead of its path: the
    vocabulary's and every shard's hash, the settings and the counts, wherever the dataset was built."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["inputs"] = [{**entry, "path": Path(entry["path"]).name} for entry in manifest["inputs"]]
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def seed_file(settings: Settings, seed: int) -> Path:
    return settings.work / "runs" / f"seed{seed}" / "seed.json"


def save_seed(path: Path, inputs: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_or_none({"inputs": inputs, "runs": runs}), allow_nan=False) + "\n")


def finished_arms(path: Path, inputs: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The results of the arms a seed finished, left at `path` after each arm, or None when there are none or
    they came from other inputs (steps, batch, config files, dataset). When only the fine-tuning settings
    differ, the arms come without their downstream results: their pretrained models are fine-tuned again."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    earlier = record.get("inputs", {})
    if without_arms(earlier) == without_arms(inputs):
        return record["runs"]
    if pretraining_inputs(earlier) != pretraining_inputs(inputs):
        return None
    return {arm: {k: v for k, v in run.items() if k != "downstream_by_rate"} for arm, run in record["runs"].items()}


def without_arms(inputs: dict[str, Any]) -> dict[str, Any]:
    """An arm's results do not depend on which other arms run: a seed run without the peer takes it on later."""
    return {k: v for k, v in inputs.items() if k != "arms"}


def pretraining_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in without_arms(inputs).items() if not k.startswith("finetune_")}


class ExtendError(ValueError):
    """An earlier result that cannot be extended; the message says why."""


def seeds_of_result(path: Path, inputs: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """The runs of each seed of an earlier result (`learning.json`), arm by arm, when it was made with the same
    inputs as this run (settings, arms, config files, dataset); otherwise an ExtendError saying what differs."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExtendError(f"cannot read the result to extend, {path}: {error}") from error
    earlier = result.get("seed_inputs")
    if earlier is None:
        raise ExtendError(
            f"{path} does not record what its seeds depend on (it predates `seed_inputs`); rerun its seeds"
        )
    if earlier != inputs:
        differ = sorted(k for k in inputs.keys() | earlier.keys() if inputs.get(k) != earlier.get(k))
        raise ExtendError(
            f"{path} was made with other {', '.join(differ)} than this run; run with the same settings, config "
            f"and corpus (a dataset built from them is the same anywhere), or run without --extend"
        )
    seeds: dict[int, dict[str, dict[str, Any]]] = {}
    for arm, entry in result["arms"].items():
        for run in entry["runs"]:
            seeds.setdefault(run["seed"], {})[arm] = {k: v for k, v in run.items() if k != "seed"}
    return seeds


def run(
    settings: Settings,
    seeds: Sequence[int],
    skip_peer: bool,
    resume: bool = False,
    extend: Path | None = None,
) -> dict[str, Any]:
    """Every arm of every seed; with `resume`, the arms the work directory finished are taken from it, and
    with `extend`, the seeds an earlier result holds are taken from it."""
    import deepspeed
    import transformers

    arms = [a for a in ARMS if not (skip_peer and a == "peer")]
    inputs = seed_inputs(settings, arms)
    earlier = seeds_of_result(extend, inputs) if extend is not None else {}
    evaluation = held_out(settings)
    per_seed = []
    for seed in seeds:
        path = seed_file(settings, seed)
        finished = earlier.get(seed) or (finished_arms(path, inputs) if resume else None) or {}
        # the arms finished earlier that this run leaves out (the peer, under --skip-peer) stay in the seed's file
        kept = {arm: runs for arm, runs in finished.items() if arm not in arms}
        save = lambda runs, path=path, kept=kept: save_seed(path, inputs, {**kept, **runs})  # noqa: E731
        per_seed.append(run_seed(settings, seed, arms, evaluation, finished, save))
    result_arms = {}
    for arm in arms:
        runs = [{"seed": seed, **runs[arm]} for seed, runs in zip(seeds, per_seed, strict=True)]
        rate = choose_downstream(runs, arm)
        result_arms[arm] = {"runs": runs, "summary": {**summarize_arm(runs), "finetune_learning_rate": rate}}
    gaps = downstream_gaps(result_arms)
    ratio = None
    if "peer" in result_arms:
        ours = result_arms["ours"]["summary"].get("seconds_per_step", {}).get("mean")
        peer = result_arms["peer"]["summary"].get("seconds_per_step", {}).get("mean")
        ratio = ours / peer if ours and peer else None
    loaded = settings.loaded(seed=seeds[0])
    task = demo_split(settings.work)
    folds = sorted({fold_of_seed(seed) for seed in seeds})
    labels = [label for fold in folds for label in read_labels(task.task_test(fold))]
    return {
        "benchmark": "learning",
        "seed_inputs": inputs,  # what --extend compares
        "machine": " + ".join(sorted({r["machine"] for a in result_arms.values() for r in a["runs"]})),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deepspeed": deepspeed.__version__,
        "config": str(settings.config.relative_to(ROOT) if settings.config.is_relative_to(ROOT) else settings.config),
        "model": loaded.train.model,
        "steps": settings.steps,
        "eval_every": settings.eval_every,
        "log_every": settings.log_every,
        "batch": settings.batch,
        "sequences": settings.steps * settings.batch,
        "seeds": list(seeds),
        "ours_ranks": RANKS,
        "peer_threads": PEER_THREADS,
        "optimizer": {
            **loaded.deepspeed["optimizer"],
            "gradient_clipping": loaded.deepspeed.get("gradient_clipping"),
            "warmup_steps": loaded.train.warmup,
            "lr_decay": loaded.train.lr_decay,
        },
        "dataset": dataset_facts(settings.dataset),
        "held_out": {"batches": len(evaluation.batches), "eval_samples": loaded.train.eval_samples},
        "finetune": {
            "task": f"{CLASSIFY_TRAIN.relative_to(ROOT)}, split as the demo splits it",
            "folds": FOLDS,
            "tested_folds": folds,
            "train_examples": count_examples(task.task_train(folds[0])),
            "validation_examples": count_examples(task.task_validation(folds[0])),
            "epochs": settings.finetune_epochs,  # over all the training examples; a subset runs more
            "updates": FINETUNE_UPDATES,
            "learning_rates": list(settings.finetune_learning_rates),
            "fractions": list(settings.finetune_fractions),
            **FINETUNE,
            "test_examples": len(labels),  # over the folds the seeds were tested on
            "majority_share": majority_share(labels),
        },
        "arms": result_arms,
        "downstream_gaps": gaps,  # pretrained minus random weights, per fraction of the training examples
        "wall_per_step_ratio_ours_to_peer": ratio,
    }


# -- the plot -------------------------------------------------------------------------------------------


def finetune_budget(finetune: dict[str, Any]) -> str:
    """`64 updates each`, or `best of 8 epochs` for a result from before every subset got the same updates."""
    if not finetune.get("updates"):
        return f"best of {finetune['epochs']} epochs"
    full = finetune["epochs"] * -(-finetune["train_examples"] // finetune["batch_size"])
    return f"best epoch of {full}+ updates"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    colours = {"ours": "tab:blue", "peer": "tab:orange", "random": "tab:grey"}
    labels = {"ours": "ours (DeepSpeed)", "peer": "transformers Trainer", "random": "random weights"}
    figure, (by_step, by_wall, downstream) = plt.subplots(1, 3, figsize=(16, 4.8), dpi=100)
    for arm in ("ours", "peer"):
        if arm not in arms:
            continue
        for index, run in enumerate(arms[arm]["runs"]):
            steps = [p["step"] for p in run["curve"]]
            walls = [p["wall_s"] for p in run["curve"]]
            losses = [p["mask_loss"] for p in run["curve"]]
            label = labels[arm] if index == 0 else None
            for axes, xs in ((by_step, steps), (by_wall, walls)):
                axes.plot(xs, losses, "o-", color=colours[arm], alpha=0.35, linewidth=1, markersize=3)
            if index == 0:
                by_step.plot([], [], "o-", color=colours[arm], label=label)
                by_wall.plot([], [], "o-", color=colours[arm], label=label)
        mean = arms[arm]["summary"]["curve"]
        ys = np.array([number(p["mask_loss"]["mean"]) for p in mean])
        spread = np.array([number(p["mask_loss"]["std"], 0.0) for p in mean])
        for axes, key in ((by_step, "step"), (by_wall, "wall_s")):
            xs = [p[key] if key == "step" else number(p[key]["mean"]) for p in mean]
            axes.fill_between(xs, ys - spread, ys + spread, color=colours[arm], alpha=0.15, linewidth=0)
            axes.plot(xs, ys, "-", color=colours[arm], linewidth=2.5)
    if "random" in arms:  # where both start from, roughly: the loss of random weights
        losses = [r["final"]["mask_loss"] for r in arms["random"]["runs"]]
        by_step.plot([0] * len(losses), losses, "x", color=colours["random"], label=labels["random"])
    unigram = [r["final"]["mask_unigram_loss"] for a in ("ours", "peer") if a in arms for r in arms[a]["runs"]]
    unigram = [u for u in unigram if u is not None and math.isfinite(u)]
    for axes in (by_step, by_wall):
        if unigram:
            axes.axhline(float(np.mean(unigram)), color="black", linestyle="--", label="unigram guess (no context)")
        axes.set_ylabel("held-out loss at [MASK] (nats)")
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    by_step.set(title="Held-out [MASK] loss by step", xlabel="training step")
    by_wall.set(title="Held-out [MASK] loss by wall time", xlabel="seconds since the arm started")

    for arm, comparisons in result["downstream_gaps"].items():
        curves = [(arm, "pretrained")] + ([("random", "random")] if arm == "ours" else [])
        for name, key in curves:
            xs = [c["train_examples"] for c in comparisons]
            ys = [c[key]["mean"] for c in comparisons]
            errors = [number(c[key]["std"], 0.0) for c in comparisons]
            downstream.errorbar(xs, ys, yerr=errors, fmt="o-", capsize=4, color=colours[name], label=labels[name])
    downstream.axhline(result["finetune"]["majority_share"], color="grey", linestyle=":", label="majority class")
    downstream.set_xscale("log")
    downstream.set(
        title=f"Fine-tuned classifier, test accuracy ({finetune_budget(result['finetune'])})",
        xlabel="labelled training examples",
        ylabel="accuracy",
    )
    downstream.set_ylim(0, 1)
    downstream.legend(fontsize=8)
    figure.suptitle(
        f"{result['model']} preset, {result['steps']} steps of {result['batch']} sequences, "
        f"{len(result['seeds'])} seed(s); {result['machine']}",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def print_summary(result: dict[str, Any]) -> None:
    def figure(stats: dict[str, Any] | None, digits: int = 3) -> str:
        if not stats or stats["mean"] is None:
            return "n/a"
        std = f" ± {stats['std']:.{digits}f}" if stats.get("std") is not None else ""
        return f"{stats['mean']:.{digits}f}{std}"

    print(
        f"{result['machine']} | {result['model']}, {result['steps']} steps x {result['batch']} sequences, "
        f"seeds {result['seeds']}"
    )
    for arm, values in result["arms"].items():
        summary = values["summary"]
        final, tune = summary["final"], summary["downstream"]
        line = (
            f"  {arm:6s} [MASK] loss {figure(final['mask_loss'])} (unigram {figure(final['mask_unigram_loss'])}, "
            f"gain {figure(final['mask_gain'])}), [MASK] acc {figure(final['mask_accuracy'])}, "
            f"NSP {figure(final['nsp_accuracy'])} (majority {figure(final['nsp_majority'])}); "
            f"downstream test {figure(tune['accuracy_test'])}"
        )
        if "seconds_per_step" in summary:
            line += f"; {figure(summary['seconds_per_step'])} s/step, arm {figure(summary['arm_wall_s'], 0)} s"
        print(line)
    for arm, comparisons in result["downstream_gaps"].items():
        gaps = "; ".join(
            f"{percent(c['fraction'])}% ({c['train_examples']}) {signed_points(Spread(**c['gap_points']))}"
            for c in comparisons
        )
        print(f"  classifier, {arm} minus random weights, test accuracy points: {gaps}")
    if result["wall_per_step_ratio_ours_to_peer"] is not None:
        print(f"  wall time per step, ours / peer: {result['wall_per_step_ratio_ours_to_peer']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="training steps of each arm (the demo's)")
    parser.add_argument("--eval-every", type=int, default=500, help="steps between held-out evaluations")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (1, 2, ...)")
    parser.add_argument("--batch", type=int, default=64, help="sequences per step (global)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="our config directory")
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=8,
        help="epochs over all of a fold's training examples; a smaller fraction runs as many updates (more epochs)",
    )
    parser.add_argument(
        "--finetune-learning-rates",
        type=float,
        nargs="+",
        default=[3e-4, 1e-3],
        help="each arm is fine-tuned at every one and scored at the one its validation accuracy prefers",
    )
    parser.add_argument(
        "--finetune-fractions",
        type=float,
        nargs="+",
        default=[0.1, 0.3, 1.0],
        help="shares of the labelled training examples each arm is fine-tuned on (the demo's; 1 among them)",
    )
    parser.add_argument(
        "--dupe-factor",
        type=int,
        default=DEMO_DUPE_FACTOR,
        help=f"masking passes over the corpus (the demo's: {DEMO_DUPE_FACTOR})",
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--skip-peer", action="store_true", help="ours and random weights only")
    parser.add_argument("--workdir", type=Path, help="dataset and runs (default: a temporary directory, removed)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the arms and seeds an earlier run of the same code finished in --workdir with the same "
        "settings (a benchmark of several hours can be run a seed at a time: --seeds 1, then --seeds 2 --resume)",
    )
    parser.add_argument(
        "--extend",
        type=Path,
        metavar="LEARNING_JSON",
        help="take the seeds an earlier result holds from it (made with the same settings, config and dataset, "
        "in any work directory) and run only the others: --seeds 3 --extend benchmarks/results/learning.json",
    )
    args = parser.parse_args()
    if args.steps < 1 or args.eval_every < 1 or args.seeds < 1 or args.finetune_epochs < 1:
        parser.error("--steps, --eval-every, --seeds and --finetune-epochs must be at least 1")
    if args.resume and args.workdir is None:
        parser.error("--resume needs the --workdir of the runs to resume")
    fractions = tuple(sorted(set(args.finetune_fractions)))
    if fractions[-1] != 1.0 or fractions[0] <= 0:
        parser.error(f"--finetune-fractions must lie in (0, 1] and include 1, not {args.finetune_fractions}")

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bertpipe-bench-learning-"))).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
        dataset, data_seconds = build_data(work, args.dupe_factor)
        config = args.config.resolve()
        config_log_every = load_config(config).train.log_every
        settings = Settings(
            config=config,
            steps=args.steps,
            eval_every=min(args.eval_every, args.steps),
            log_every=log_every_for(config_log_every, min(args.eval_every, args.steps)),
            batch=args.batch,
            finetune_epochs=args.finetune_epochs,
            finetune_learning_rates=tuple(sorted(set(args.finetune_learning_rates))),
            finetune_fractions=fractions,
            dataset=dataset,
            work=work,
        )
        try:
            result = run(settings, list(range(1, args.seeds + 1)), args.skip_peer, args.resume, args.extend)
        except ExtendError as error:
            sys.exit(f"learning.py: {error}")
        result["data_build_s"] = data_seconds
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "learning.json"
    out.write_text(json.dumps(finite_or_none(result), indent=2, allow_nan=False) + "\n")
    plot(result, args.output_dir / "learning.png")
    print_summary(result)
    print(f"  -> {out}, {args.output_dir / 'learning.png'}")


if __name__ == "__main__":
    main()

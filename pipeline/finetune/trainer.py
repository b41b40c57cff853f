"""`bertpipe finetune classify|ner|qa`: a registered (or local) BERT fine-tuned under DeepSpeed, every weight
updated, one process per rank.

resolve the model -> read and encode the task's files -> engine -> epochs of training, each followed by an
evaluation on the validation file -> the best epoch kept (a DeepSpeed checkpoint, its predictions) -> with a
test file, the best epoch's weights scored once on it -> exported as a Hugging Face directory -> registered
as `<base>-<task>`, tracked in MLflow throughout. The run directory, its status file, the stop on SIGTERM/SIGINT
and the reporting are `pipeline.training.run`'s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from model import PRESETS, BertConfig
from model.checkpoint import atomic_write_bytes, load_weights
from pipeline.finetune.classify import ClassificationTask
from pipeline.finetune.ner import NerTask
from pipeline.finetune.qa import QuestionAnsweringTask
from pipeline.finetune.task import TEST, VALIDATION, ModelInputs, Split, Task, TaskData, TaskOptions, collate_features
from pipeline.handoff.export import export_checkpoint, tokenizer_config
from pipeline.handoff.model_source import ResolvedModel, resolve_model
from pipeline.handoff.tracking import EXIT_NOT_REGISTERED, code_version
from pipeline.logs import announce
from pipeline.training import checkpointing, deepspeed_config
from pipeline.training.distributed import init_distributed, node_count
from pipeline.training.run import (
    CHECKPOINTS,
    FINISHED,
    INTERRUPTED,
    METRICS_FILE,
    RUNNING,
    STATUS_FILE,
    TRACKING_OFF,
    RunDirectory,
    RunHarness,
    StopRequest,
)
from pipeline.training.schedule import Schedule
from pipeline.training.train_config import TrainConfigError
from pipeline.training.weights import consolidated_state_dict
from preprocessing.errors import BertpipeError, MissingInputError, OutputExistsError
from preprocessing.tokenizer import TOKENIZER_CONFIG, load_tokenizer, tokenizer_files

log = logging.getLogger(__name__)

TASKS: dict[str, type[Task]] = {t.name: t for t in (ClassificationTask, NerTask, QuestionAnsweringTask)}
MODEL_DIR = "model"  # the fine-tuned model, Hugging Face format
BASE_DIR = "base_model"  # the export of a DeepSpeed checkpoint given as --model
SUMMARY_FILE = "finetune_summary.json"
OUTPUTS = (MODEL_DIR, BASE_DIR, CHECKPOINTS, METRICS_FILE, SUMMARY_FILE, STATUS_FILE)


class NonFiniteLossError(BertpipeError, RuntimeError):
    """The loss stopped being a number; the message says what to change."""

    exit_code = 1


class CheckpointWriteError(BertpipeError, RuntimeError):
    """The best epoch could not be saved; the message names the directory."""

    exit_code = 1


@dataclass(frozen=True)
class FinetuneRequest:
    task: str
    model: str  # whatever pipeline.handoff.model_source resolves
    train: str
    validation: str
    output: str
    test: str | None = None  # scored once, with the weights of the epoch that was best on validation
    options: TaskOptions = field(default_factory=TaskOptions)
    epochs: int = 3
    learning_rate: float | None = None  # None: 5e-5, or the --deepspeed-config file's
    batch_size: int | None = None  # global; None: 32, or the file's
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    from_scratch: bool = False  # the model's architecture with random weights (a baseline)
    tokenizer: str | None = None  # default: the model's directory
    deepspeed_config: str | None = None
    tracking_uri: str | None = None  # "off": no MLflow; default MLFLOW_TRACKING_URI, else <output>/mlflow.db
    experiment: str = "bert-finetuning"
    registered_name: str | None = None  # default <base>-<task>
    register: bool = True
    keep_checkpoint: bool = False
    overwrite: bool = False
    log_every: int = 10


def default_deepspeed_config(batch_size: int, learning_rate: float, weight_decay: float, on_gpu: bool) -> dict:
    """AdamW, gradient clipping at 1, bf16 and ZeRO-2 on GPUs, fp32 on CPU."""
    return {
        "train_batch_size": batch_size,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": learning_rate, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": weight_decay},
        },
        "zero_optimization": {"stage": 2 if on_gpu else 0},
        "bf16": {"enabled": on_gpu},
        "steps_per_print": 10**9,
    }


def steps_per_epoch(features: int, world_size: int, micro_batch: int, accumulation: int) -> int:
    """Optimizer steps in one pass: each rank sees ceil(features / world) of them (the sampler pads)."""
    per_rank = math.ceil(features / world_size)
    return max(1, math.ceil(per_rank / micro_batch) // accumulation)


def default_registered_name(model: ResolvedModel, task: str) -> str:
    """`<base>-<task>`: the registered model's name; for a checkpoint, the name its run registers under;
    else the model directory's name."""
    if model.registry_version:
        return f"{model.registry_version.split('/')[0]}-{task}"
    if model.kind == "deepspeed":
        from pipeline.handoff.registry import default_model_name
        from pipeline.training.weights import model_states

        train_config = model_states(model.path).get("train_config", {})
        preset = train_config.get("model")
        base = train_config.get("registered_model_name") or default_model_name(preset if preset in PRESETS else None)
        return f"{base}-{task}"
    return f"{Path(model.spec.rstrip('/')).name}-{task}"


def check_output(output: Path, overwrite: bool) -> None:
    present = RunDirectory(output).present(OUTPUTS)
    if present and not overwrite:
        raise OutputExistsError(
            f"{output} already holds a fine-tuning run ({', '.join(present)}); pass --overwrite to replace it or "
            f"choose another --output"
        )


class FineTuner:
    """One rank's fine-tuning run. `run()` returns the process exit code."""

    def __init__(self, request: FinetuneRequest):
        if request.task not in TASKS:
            raise TrainConfigError(f"unknown task {request.task!r}; choose one of {sorted(TASKS)}")
        if request.epochs < 1:
            raise TrainConfigError(f"--epochs must be at least 1, got {request.epochs}")
        if not 0 <= request.warmup_proportion <= 1:
            raise TrainConfigError(f"--warmup-proportion must be in [0, 1], got {request.warmup_proportion}")
        self.request = request
        self.output = Path(request.output)
        check_output(self.output, request.overwrite)
        for path in (request.train, request.validation, request.test):
            if path is not None and not Path(path).is_file():
                raise MissingInputError(f"{path}: no such file")
        registry_uri = None if request.tracking_uri == TRACKING_OFF else request.tracking_uri
        announce(f"finding the model {request.model}")
        self.source = resolve_model(request.model, registry_uri)
        announce(f"joining the other ranks ({os.environ.get('WORLD_SIZE', '1')} in all)")
        self.rank, self.world_size, self.on_gpu = init_distributed()
        self.harness = RunHarness(self.output, self.rank)
        self.nodes = node_count(self.world_size)
        if self.rank == 0:
            if request.overwrite:
                for name in OUTPUTS:
                    path = self.output / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            self.output.mkdir(parents=True, exist_ok=True)
        self.base_dir = self._base_directory()
        self.tokenizer = load_tokenizer(request.tokenizer or self.base_dir)
        base_config = BertConfig.from_pretrained(self.base_dir)
        options = request.options
        if options.max_seq_length > base_config.max_position_embeddings:
            log.warning(
                "--max-seq-length %d exceeds the model's %d positions; inputs are cut at %d",
                options.max_seq_length,
                base_config.max_position_embeddings,
                base_config.max_position_embeddings,
            )
            options = TaskOptions(**{**asdict(options), "max_seq_length": base_config.max_position_embeddings})
        self.options = options
        self.task = TASKS[request.task](options)
        test = Path(request.test) if request.test is not None else None
        announce(f"reading and tokenizing the {request.task} data")
        self.data: TaskData = self.task.prepare(Path(request.train), Path(request.validation), self.tokenizer, test)
        self.config = base_config.replace(id2label=self.data.id2label) if self.data.id2label else base_config
        self.ds_config, self.optimizer_spec, self.batch_sizes = deepspeed_config.prepare(
            self._deepspeed_config(), self.world_size, self.on_gpu
        )
        per_epoch = steps_per_epoch(
            len(self.data.train), self.world_size, self.batch_sizes.micro, self.batch_sizes.accumulation
        )
        self.total_steps = per_epoch * request.epochs
        self.schedule = Schedule(self.total_steps, round(request.warmup_proportion * self.total_steps))
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        dist.barrier()

    # -- building -------------------------------------------------------------------------------------

    def _base_directory(self) -> Path:
        """A Hugging Face directory of the model to start from; a DeepSpeed checkpoint is exported first."""
        if self.source.kind != "deepspeed":
            return self.source.path
        target = self.output / BASE_DIR
        if self.rank == 0:
            export_checkpoint(self.source.path, target, tokenizer=self.request.tokenizer, overwrite=True)
        dist.barrier()
        return target

    def _deepspeed_config(self) -> dict[str, Any]:
        request = self.request
        if request.deepspeed_config is None:
            return default_deepspeed_config(
                request.batch_size or 32, request.learning_rate or 5e-5, request.weight_decay, self.on_gpu
            )
        if request.batch_size is not None or request.learning_rate is not None:
            raise TrainConfigError(
                "--batch-size and --learning-rate set the built-in DeepSpeed config; with --deepspeed-config give "
                "them in the file (train_batch_size, optimizer.params.lr)"
            )
        path = Path(request.deepspeed_config)
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TrainConfigError(f"cannot read the DeepSpeed config {path}: {error}") from error

    def build_engine(self) -> None:

        torch.manual_seed(self.request.seed)  # the same new head on every rank
        model = self.task.model_class(self.config)
        announce(f"building the model ({model.num_parameters():,} parameters) and DeepSpeed's engine")
        if not self.request.from_scratch:
            report = model.load_pretrained_state(load_weights(self.base_dir))
            self.initialized = list(report.initialized)
        else:
            self.initialized = ["(all: --from-scratch)"]
        self.engine, _, self.lr_scheduler = deepspeed_config.initialize_engine(
            model, self.optimizer_spec, self.ds_config, self.schedule.factor, self.on_gpu
        )
        torch.manual_seed(self.request.seed + 1 + self.rank)  # dropout differs per rank

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        self.build_engine()
        self.report = self.harness.open_reporter(None)
        self.harness.set_status(RUNNING, 0)
        self.report.track(self.request.tracking_uri, self.request.experiment, None, self._tags(), self._params)
        stop = self.harness.catch_stop_signals()
        best: dict[str, Any] = {"value": -math.inf, "epoch": None, "step": None, "metrics": {}}
        stopped = ""
        try:
            for epoch in range(1, self.request.epochs + 1):
                announce(f"epoch {epoch}/{self.request.epochs}: training on {len(self.data.train):,} examples")
                if not self._train_epoch(epoch, stop):
                    stopped = (
                        f"{stop.reason()} at step {self.engine.global_steps}, in epoch {epoch} of {self.request.epochs}"
                    )
                    break
                evaluation, predictions = self._evaluate(self.data.validation, VALIDATION)
                step = self.engine.global_steps
                self.report.record({"step": step, "epoch": epoch, **prefixed("eval_", evaluation)})
                value = evaluation[self.task.metric]
                if self.harness.is_main:
                    log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items()))
                if value > best["value"]:
                    best = {"value": value, "epoch": epoch, "step": step, "metrics": evaluation}
                    self._keep_best(step, epoch, evaluation, predictions)
            if stopped and best["epoch"] is None:
                message = f"{stopped}, before any epoch ended: nothing to export"
                self.harness.set_status(INTERRUPTED, self.engine.global_steps, message)
                log.warning("%s, before any epoch ended: nothing was exported", stopped)
                return 1
            test = self._test(best, self.data.test) if self.data.test is not None else None
            if test is not None:
                self.report.to_file(final_record(best, test))
                # MLflow has the validation metrics at this step already
                self.report.to_mlflow(best["step"], prefixed("test_", test))
            summary = self._finish(best, test, stopped)
            state = INTERRUPTED if stopped else FINISHED
            message = f"{stopped}; the best of the epochs that ended ({best['epoch']}) is exported" if stopped else ""
            self.harness.set_status(state, best["step"], message, summary.get("exported"))
        except Exception as error:  # pollers and the launcher must not read "running"
            self.harness.fail(self.engine.global_steps, error)
            raise
        finally:
            self.report.close(self.harness.state)
        if self.harness.is_main:
            print(summary_line(summary))
            if stopped:
                log.warning("%s; the best epoch so far is exported to %s, not registered", stopped, summary["exported"])
            elif self.request.register and self.report.tracker is not None and summary.get("registered") is None:
                return EXIT_NOT_REGISTERED
        return 0

    def _loader(self, epoch: int):
        from torch.utils.data import DataLoader, DistributedSampler

        sampler = DistributedSampler(
            self.data.train, self.world_size, self.rank, shuffle=True, seed=self.request.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        max_length = self.options.max_seq_length
        return DataLoader(
            self.data.train,
            batch_size=self.batch_sizes.micro,
            sampler=sampler,
            collate_fn=lambda features: collate_features(features, self.pad_id, max_length),
        )

    def _train_epoch(self, epoch: int, stop: StopRequest) -> bool:
        """One pass over the training examples; False when a stop was requested (on any rank), which every
        rank sees at the same micro-batch and leaves before its backward pass."""
        engine = self.engine
        engine.train()
        device = engine.device
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, micro-batches
        for batch in self._loader(epoch):
            if engine.global_steps >= self.total_steps:
                break  # the last micro-batches of a pass that does not fill an accumulation
            out = engine(**{name: tensor.to(device) for name, tensor in batch.items()})
            loss = out.loss
            flags = torch.stack(
                [(~torch.isfinite(loss.detach())).to(torch.float32), torch.tensor(float(stop.requested), device=device)]
            )
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            nonfinite, stop_now = (bool(x) for x in flags.tolist())
            if stop_now:
                return False
            if nonfinite:
                raise NonFiniteLossError(
                    f"the loss was not finite at step {engine.global_steps + 1} of epoch {epoch}; lower the learning "
                    f"rate or check the data"
                )
            lr = self.lr_scheduler.get_last_lr()[0]
            engine.backward(loss)
            before = engine.global_steps
            engine.step()
            sums += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=device)])
            step = engine.global_steps
            if step != before and (step % self.request.log_every == 0 or step == self.total_steps):
                dist.all_reduce(sums)
                loss_sum, count = sums.tolist()
                record = {"step": step, "epoch": epoch, "loss": loss_sum / max(count, 1.0), "lr": lr}
                sums.zero_()
                self.report.record(record)
        return True

    def _evaluate(self, features: list[ModelInputs], split: Split) -> tuple[dict[str, float], Any]:
        """Every rank runs an equal share of the features (padded with repeats, so that ZeRO-3's collectives
        line up), the outputs are gathered, and every rank scores them (so all agree on the best)."""
        engine = self.engine
        count = len(features)
        share = math.ceil(count / self.world_size)
        mine = [self.rank + k * self.world_size for k in range(share)]
        micro = self.batch_sizes.micro
        gathered: list[tuple[int, dict[str, np.ndarray]]] = []
        engine.eval()
        with torch.no_grad():
            for begin in range(0, len(mine), micro):
                indexes = mine[begin : begin + micro]
                chunk = [features[i % count] for i in indexes]
                batch = collate_features(chunk, self.pad_id, self.options.max_seq_length)
                inputs = {k: batch[k].to(engine.device) for k in ("input_ids", "token_type_ids", "attention_mask")}
                outputs = self.task.outputs(engine(**inputs), [len(f["input_ids"]) for f in chunk])
                gathered += [(i, o) for i, o in zip(indexes, outputs, strict=True) if i < count]
        engine.train()
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, gathered)
        ordered = sorted((pair for part in everyone for pair in part), key=lambda pair: pair[0])
        return self.task.score([output for _, output in ordered], split)

    # -- the best epoch --------------------------------------------------------------------------------

    def _keep_best(self, step: int, epoch: int, evaluation: dict[str, float], predictions: Any) -> None:
        client_state = {
            "step": step,
            "epoch": epoch,
            "evaluation": evaluation,
            "model_config": self.config.to_dict(),
            "task": self.task.name,
            "world_size": self.world_size,
        }
        checkpoints = self.harness.directory.checkpoints
        if not checkpointing.save(
            self.engine,
            checkpoints,
            step,
            client_state,
            {"rng": checkpointing.rng_states()},
            1,
            self.engine.device,
        ):
            raise CheckpointWriteError(f"the checkpoint of epoch {epoch} could not be written in {checkpoints}")
        if self.rank == 0:
            self.task.write_predictions(predictions, self.output / self.task.predictions_name(VALIDATION))

    def _test(self, best: dict[str, Any], features: list[ModelInputs]) -> dict[str, float]:
        """Collective: the best epoch's checkpoint is loaded back (the engine holds the last epoch's weights)
        and the test file scored once; rank 0 writes its predictions."""
        checkpointing.load(self.engine, self.harness.directory.checkpoints, checkpointing.tag_for(best["step"]))
        test, predictions = self._evaluate(features, TEST)
        if self.rank == 0:
            log.info("test, epoch %d: %s", best["epoch"], ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
            self.task.write_predictions(predictions, self.output / self.task.predictions_name(TEST), TEST)
        return test

    def _finish(self, best: dict[str, Any], test: dict[str, float] | None, stopped: str = "") -> dict[str, Any]:
        """Rank 0 exports the best epoch and registers it (not after a stop: the run was cut short on purpose);
        the other ranks wait."""
        summary: dict[str, Any] = {}
        register = self.request.register and not stopped
        if self.rank == 0:
            announce(f"exporting the best epoch ({best['epoch']})" + (" and registering it" if register else ""))
            tag_dir = self.harness.directory.checkpoints / checkpointing.tag_for(best["step"])
            model_dir = self.export(tag_dir)
            summary = {
                "task": self.task.name,
                "model": self.request.model,
                "base_registry_version": self.source.registry_version,
                "from_scratch": self.request.from_scratch,
                "best_epoch": best["epoch"],
                "metric": self.task.metric,
                "evaluation": best["metrics"],
                "exported": str(model_dir),
                "predictions": str(self.output / self.task.predictions_name(VALIDATION)),
                "counts": self.data.counts,
            }
            if test is not None:
                summary["test"] = test
                summary["test_predictions"] = str(self.output / self.task.predictions_name(TEST))
            if stopped:
                summary["stopped"] = stopped
            summary["registered"] = self._register(model_dir, best, test) if register else None
            atomic_write_bytes(self.output / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
            if not self.request.keep_checkpoint:
                shutil.rmtree(self.harness.directory.checkpoints, ignore_errors=True)
        dist.barrier()
        return summary

    def export(self, tag_dir: Path) -> Path:
        """The best checkpoint in fp32 as a Hugging Face directory with the tokenizer beside it."""
        model = self.task.model_class(self.config)
        model.load_pretrained_state(consolidated_state_dict(tag_dir))
        target = self.output / MODEL_DIR
        staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}.", dir=self.output))
        try:
            model.save_pretrained(staging)
            files = tokenizer_files(self.tokenizer)
            files[TOKENIZER_CONFIG] = tokenizer_config(self.config, files[TOKENIZER_CONFIG])
            for name, data in files.items():
                (staging / name).write_bytes(data)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    # -- MLflow (rank 0) -------------------------------------------------------------------------------

    def _tags(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "base_model": self.request.model,
            "base_registry_version": self.source.registry_version,
            "from_scratch": self.request.from_scratch,
            "world_size": self.world_size,
            "nodes": self.nodes,
        }

    def _params(self) -> dict[str, Any]:
        from pipeline.handoff.registry import file_sha256

        request = self.request
        return {
            "task": self.task.name,
            "model": {"spec": request.model, "path": str(self.base_dir), "config": self.config.to_dict()},
            "from_scratch": request.from_scratch,
            "data": {
                "train": str(Path(request.train).resolve()),
                "train_sha256": file_sha256(Path(request.train)),
                "validation": str(Path(request.validation).resolve()),
                "validation_sha256": file_sha256(Path(request.validation)),
                **(
                    {"test": str(Path(request.test).resolve()), "test_sha256": file_sha256(Path(request.test))}
                    if request.test is not None
                    else {}
                ),
                **self.data.counts,
            },
            "options": asdict(self.options),
            "epochs": request.epochs,
            "total_steps": self.total_steps,
            "warmup_steps": self.schedule.warmup_steps,
            "seed": request.seed,
            "deepspeed": self.ds_config,
            "newly_initialized": self.initialized,
            "world_size": self.world_size,
            "code": code_version(),
        }

    def _register(self, model_dir: Path, best: dict[str, Any], test: dict[str, float] | None) -> str | None:
        tracker = self.report.tracker
        if tracker is None:
            return None
        if tracker.wait_for_run() is None:
            log.warning(
                "MLflow is unavailable, so the model was not registered; run `bertpipe register --model %s --name "
                "NAME` later",
                model_dir,
            )
            return None
        from pipeline.handoff.registry import ChampionRule, register_export

        name = self.request.registered_name or default_registered_name(self.source, self.task.name)
        tags = {
            "task": self.task.name,
            "base_model": self.request.model,
            "base_registry_version": self.source.registry_version,
            "epoch": best["epoch"],
            "step": best["step"],
            "from_scratch": self.request.from_scratch,
        }
        try:
            registration = register_export(
                model_dir,
                tracker.uri,
                name,
                run_id=tracker.run_id,
                tags=tags,
                eval_metrics=reported_metrics(best["metrics"], test),
                rule=ChampionRule(f"eval_{self.task.metric}", higher_is_better=True),
            )
        except Exception as error:  # a registry problem must not lose a finished fine-tuning
            log.warning(
                "registering %s failed (%s: %s); run `bertpipe register --model %s --name %s` later",
                model_dir,
                type(error).__name__,
                error,
                model_dir,
                name,
            )
            return None
        tracker.set_tags({"registered_version": registration.uri})
        return registration.uri + (" (champion)" if registration.champion else "")


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def reported_metrics(validation: dict[str, float], test: dict[str, float] | None) -> dict[str, float]:
    """The best epoch's metrics as recorded with the model: eval_* (which chose it), and test_* beside them
    when a test file was scored (the figure to quote, since validation picked the epoch)."""
    return {**prefixed("eval_", validation), **prefixed("test_", test or {})}


def final_record(best: dict[str, Any], test: dict[str, float]) -> dict[str, Any]:
    """The last metrics.jsonl record of a run with a test file. `best_epoch` rather than `epoch`, so that
    readers of the per-epoch records do not count the best one twice."""
    return {"step": best["step"], "best_epoch": best["epoch"], **reported_metrics(best["metrics"], test)}


def summary_line(summary: dict[str, Any]) -> str:
    evaluation = ", ".join(f"{k} {v:.4f}" for k, v in summary["evaluation"].items())
    if summary.get("test") is not None:
        evaluation += "; test " + ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items())
    registered = f"; registered {summary['registered']}" if summary.get("registered") else ""
    return f"{summary['task']}: best epoch {summary['best_epoch']} ({evaluation}) -> {summary['exported']}{registered}"


def finetune(request: FinetuneRequest) -> int:
    try:
        return FineTuner(request).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

"""`bertpipe pretrain`: BERT pretraining under DeepSpeed, one process per rank.

build the run (config, dataset check, model, engine, loader) -> restore a checkpoint if asked ->
train micro-batch by micro-batch -> at step boundaries: metrics, evaluation, stop requests, checkpoints.
The run directory, its status file, the stop on SIGTERM/SIGINT and the reporting are `pipeline.training.run`'s.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model import PRESETS, BertConfig, BertForPreTraining
from model.flops import peak_bf16_flops, pretraining_step_flops
from model.local_attention_init import init_local_attention
from pipeline.data.dataset_check import check_against_model, check_init_tokenizer, load_manifest
from pipeline.data.loader import SplitSpec, StreamOptions, TrainBatches, evaluation_batches, resume_state, target_counts
from pipeline.handoff.model_source import resolve_model
from pipeline.handoff.tracking import EXIT_NOT_REGISTERED, code_version
from pipeline.logs import announce
from pipeline.training import checkpointing, deepspeed_config
from pipeline.training.distributed import init_distributed, node_count
from pipeline.training.evaluate import evaluate, unigram_log_probs
from pipeline.training.metrics import JsonLines, Throughput, batch_fingerprint, postfix, progress_bar
from pipeline.training.run import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    TRACKING_OFF,
    RunDirectory,
    RunHarness,
    StopRequest,
    failure_message,
)
from pipeline.training.schedule import Schedule
from pipeline.training.train_config import LoadedConfig, TrainConfig, TrainConfigError, load_config
from pipeline.training.weights import checkpoint_tag_dir, load_initial_weights, model_config_of
from preprocessing.errors import BertpipeError
from preprocessing.manifest import Manifest
from preprocessing.storage import absolute

log = logging.getLogger(__name__)

UNIGRAM_SAMPLES = 100_000  # training samples whose targets estimate the unigram baseline


class NonFiniteLossError(BertpipeError, RuntimeError):
    """Too many consecutive non-finite losses; the message names the step."""

    exit_code = 1


@dataclass(frozen=True)
class PretrainRequest:
    """What the command line asks for."""

    config: str
    dataset: str
    output: str
    resume: str = "never"  # "auto": continue from the newest checkpoint in <output>/checkpoints if any
    init_from: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    deepspeed_config: str | None = None
    tracking_uri: str | None = None  # "off": no MLflow; default MLFLOW_TRACKING_URI, else <output>/mlflow.db


def resolve_model_config(train: TrainConfig, manifest: Manifest, init_from: str | None) -> BertConfig:
    """The model to train: from --init-from's stored config, else the preset or directory in train.json.
    A preset's vocabulary follows the dataset's tokenizer unless model_overrides pins vocab_size."""
    stored = model_config_of(Path(init_from)) if init_from else None
    if stored is not None:
        return stored.replace(**train.model_overrides) if train.model_overrides else stored
    if Path(train.model).is_dir():
        return BertConfig.from_pretrained(train.model).replace(**train.model_overrides)
    overrides = {"vocab_size": manifest.tokenizer.vocab_size, **train.model_overrides}
    return BertConfig.from_preset(train.model, **overrides)


def global_heads(train: TrainConfig, config: BertConfig) -> int:
    """The last layer's heads that start global: `global_attention_heads`, -1 meaning all of them."""
    return config.num_attention_heads if train.global_attention_heads == -1 else train.global_attention_heads


def training_model_config(train: TrainConfig, config: BertConfig) -> BertConfig:
    """The model as it trains: `config` with `dropout` in place of its own. Checkpoints and exports keep `config`."""
    if train.dropout is None:
        return config
    return config.replace(hidden_dropout_prob=train.dropout, attention_probs_dropout_prob=train.dropout)


def check_attention_init(train: TrainConfig, config: BertConfig) -> None:
    """`attention_init: local` leaves at most the last layer's heads global and needs sinusoids of an even width."""
    if train.attention_init != "local":
        return
    heads = config.num_attention_heads
    if not -1 <= train.global_attention_heads <= heads:
        raise TrainConfigError(
            f"global_attention_heads must be in 0..{heads} (the model's layers have {heads} heads) or -1 (all), "
            f"not {train.global_attention_heads}"
        )
    if config.hidden_size % 2:
        raise TrainConfigError(f"attention_init 'local' needs an even hidden_size, not {config.hidden_size}")


def check_output(output: Path, resume: str) -> str | None:
    """The checkpoint tag to resume from; refuses to start over a run that exists without --resume auto."""
    directory = RunDirectory(output)
    tag = directory.latest_checkpoint()
    if resume == "auto":
        return tag
    if tag is not None or directory.metrics.exists():
        raise TrainConfigError(
            f"{output} already holds a run; pass --resume auto to continue it, or choose another --output"
        )
    return None


class Trainer:
    """One rank's training run. `run()` returns the process exit code."""

    def __init__(self, request: PretrainRequest):
        self.request = request
        self.output = Path(request.output)
        # Everything that can be checked without compute or communication comes first.
        self.config: LoadedConfig = load_config(request.config, request.overrides, request.deepspeed_config)
        self.train = self.config.train
        self.manifest = load_manifest(request.dataset)
        registry_uri = None if request.tracking_uri == TRACKING_OFF else request.tracking_uri
        # A registry URI becomes a local directory here, once, before any rank starts training.
        self.init_from = str(resolve_model(request.init_from, registry_uri).path) if request.init_from else None
        self.model_config = resolve_model_config(self.train, self.manifest, self.init_from)
        check_against_model(self.manifest, self.model_config)
        check_attention_init(self.train, self.model_config)
        if self.init_from:
            check_init_tokenizer(self.manifest, self.init_from)
        if self.train.init_optimizer_state and not (self.init_from and checkpoint_tag_dir(Path(self.init_from))):
            raise TrainConfigError(
                "init_optimizer_state takes the optimizer state of the --init-from run's checkpoint; give --init-from "
                "a run's output directory or one of its checkpoints (a model directory holds weights only)"
            )
        self.schedule = Schedule(
            self.train.train_steps,
            self.train.warmup,
            self.train.lr_decay,
            self.train.lr_decay_power,
            self.train.lr_end_ratio,
        )
        self.train_spec = SplitSpec.from_manifest(request.dataset, self.manifest, "train")
        self.validation_spec = SplitSpec.from_manifest(request.dataset, self.manifest, "validation")
        self.manifest_sha256 = self.manifest.sha256
        self.resume_tag = check_output(self.output, request.resume)
        announce(f"joining the other ranks ({os.environ.get('WORLD_SIZE', '1')} in all)")
        self.rank, self.world_size, self.on_gpu = init_distributed()
        self.harness = RunHarness(self.output, self.rank)
        self.ds_config, self.optimizer_spec, self.batch_sizes = deepspeed_config.prepare(
            self.config.deepspeed, self.world_size, self.on_gpu
        )
        self.nodes = node_count(self.world_size)
        special = self.manifest.tokenizer.special_token_ids
        self.mask_id = int(special["[MASK]"])
        announce(f"counting the training targets of up to {UNIGRAM_SAMPLES:,} samples (the unigram baseline)")
        counts = target_counts(
            self.train_spec,
            self.model_config.vocab_size,
            UNIGRAM_SAMPLES,
            self.train.verify_checksums,
            self.train.skip_bad_shards,
        )
        self.unigram = unigram_log_probs(counts, special.values())  # the context-free guess evaluations compare to
        self.best_eval_loss = float("inf")
        self.evaluations: dict[int, dict[str, float]] = {}  # by step
        self.unregistered: list[int] = []  # steps whose registration failed
        dist.barrier()  # every rank has passed the checks before anything is written

    # -- building -------------------------------------------------------------------------------------

    def build_engine(self) -> None:
        torch.manual_seed(self.train.seed)  # identical initial weights on every rank
        model = BertForPreTraining(training_model_config(self.train, self.model_config))
        announce(
            f"building the model ({model.num_parameters():,} parameters) and DeepSpeed's engine "
            f"(ZeRO stage {self.ds_config.get('zero_optimization', {}).get('stage', 0)}, {self.world_size} ranks)"
        )
        if self.train.attention_init == "local":
            init_local_attention(model.bert, global_heads=global_heads(self.train, self.model_config))
        if self.train.mlm_bias_init == "unigram":
            model.cls.predictions.init_bias_to_prior(self.unigram.float())
        carry_optimizer = self.init_from and self.resume_tag is None and self.train.init_optimizer_state
        if self.init_from and self.resume_tag is None and not carry_optimizer:
            load_initial_weights(model, self.init_from)
        model.bert.encoder.checkpoint_activations = self.train.activation_checkpointing
        self.engine, self.optimizer, self.lr_scheduler = deepspeed_config.initialize_engine(
            model, self.optimizer_spec, self.ds_config, self.schedule.factor, self.on_gpu
        )
        if carry_optimizer:
            tag_dir = checkpoint_tag_dir(Path(self.init_from))
            checkpointing.load_for_next_phase(self.engine, tag_dir, self.world_size)
            announce(f"initial weights and optimizer state from DeepSpeed checkpoint {tag_dir}")
        # Dropout differs per rank; the data order does not depend on these.
        torch.manual_seed(self.train.seed + 1 + self.rank)

    def build_data(self, saved_data_state: dict[str, Any] | None) -> None:
        train = self.train
        rule = None
        if train.dynamic_masking:
            from preprocessing.tokenizer import load_tokenizer, masking_rule

            parameters = self.manifest.parameters
            rule = masking_rule(
                load_tokenizer(self.request.dataset),
                parameters["masked_lm_prob"],
                parameters["max_predictions_per_seq"],
                parameters["whole_word_mask"],
            )
        options = StreamOptions(
            micro_batch=self.batch_sizes.micro,
            seed=train.seed,
            window_shards=train.shuffle_window_shards,
            verify_checksums=train.verify_checksums,
            skip_bad_shards=train.skip_bad_shards,
            remasking=rule,
            packing=train.packing,
        )
        slots = max(1, train.loader_workers)
        state = resume_state(saved_data_state, self.world_size, slots)
        announce(f"starting the data loader ({train.loader_workers} worker processes per rank)")
        self.batches = TrainBatches(self.train_spec, options, self.rank, state, train.loader_workers, self.on_gpu)
        eval_samples = train.eval_samples or None
        self.eval_batches = evaluation_batches(
            self.validation_spec,
            self.batch_sizes.micro,
            self.rank,
            self.world_size,
            eval_samples,
            train.verify_checksums,
        )

    def restore(self) -> dict[str, Any] | None:
        """Load the checkpoint to resume from; returns the data position saved with it."""
        if self.resume_tag is None:
            return None
        announce(f"loading checkpoint {self.resume_tag}")
        client_state, rank_state = checkpointing.load(self.engine, self.harness.directory.checkpoints, self.resume_tag)
        # Restored only once the data loader is built (`run`): starting its iterator draws from torch's
        # generator, which the interrupted run had done before its first step, not at the checkpoint.
        self.saved_rng_states = rank_state["rng"]
        self.run_id = client_state.get("run_id")
        if client_state.get("dataset_manifest_sha256") != self.manifest_sha256:
            log.warning("resuming on a different dataset than the checkpoint's: the data order restarts")
            return None
        if self.rank == 0:
            log.info("resumed from %s at step %d", self.resume_tag, self.engine.global_steps)
        return rank_state["data"]

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        self.run_id: str | None = None
        self.saved_rng_states: dict[str, Any] | None = None
        try:
            step, fingerprints = self._start()
        except Exception as error:  # a checkpoint that does not load, a loader that cannot start, a full disk
            self._status(FAILED, 0, failure_message(error))
            raise
        stop = self.harness.catch_stop_signals()
        announce(f"training from step {step} to {self.train.train_steps}")
        bar = progress_bar(self.train.train_steps, step, enabled=self.harness.is_main)
        outcome = 1
        try:
            outcome = self._loop(step, stop, fingerprints, bar)
        except NonFiniteLossError as error:
            self._status(FAILED, self.engine.global_steps, str(error))
            log.error("%s", error)
            return 1
        except Exception as error:  # a bad shard, a lost rank, a full disk: pollers must not read "running"
            self._status(FAILED, self.engine.global_steps, failure_message(error))
            raise
        finally:
            bar.close()
            self.batches.close()
            if fingerprints is not None:
                fingerprints.close()
            self.report.close(self.harness.state)
        return outcome

    def _start(self) -> tuple[int, JsonLines | None]:
        """Everything between the checks and the first step: engine, checkpoint, data, files, tracking."""
        self.build_engine()
        saved_data = self.restore()
        self.build_data(saved_data)
        if self.saved_rng_states is not None:
            checkpointing.restore_rng_states(self.saved_rng_states)
        step = self.engine.global_steps
        resumed_step = step if self.resume_tag is not None else None
        self.output.mkdir(parents=True, exist_ok=True)
        self.report = self.harness.open_reporter(resumed_step)
        fingerprints = None
        if self.train.record_batch_fingerprints:
            fingerprints = JsonLines(self.output / "fingerprints" / f"rank{self.rank}.jsonl", resumed_step)
        self.harness.set_status(RUNNING, step, checkpoint=self.resume_tag)
        if self.harness.is_main:
            self.harness.directory.write_run_config(self._resolved_config())
        self.report.track(self.request.tracking_uri, self.train.experiment, self.run_id, self._tags(step), self._params)
        return step, fingerprints

    def _loop(self, step: int, stop: StopRequest, fingerprints: JsonLines | None, bar: Any) -> int:
        engine, train = self.engine, self.train
        device = engine.device
        window = StepWindow(device)
        step_batches: list[dict[str, torch.Tensor]] = []
        consecutive_nonfinite = 0
        # A stop every rank has agreed to. The signal handler sets `stop.requested` on its own rank at any moment;
        # deciding on that flag at the step boundary would let a rank whose signal came after the agreement below
        # go to the checkpoint's collectives while the others wait in the next agreement: a deadlock.
        stopping = False
        self.last_saved = step if self.resume_tag is not None else None
        while step < train.train_steps:
            waited = time.perf_counter()
            batch = next(self.batches)
            window.throughput.add_wait(time.perf_counter() - waited)
            gpu_batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
            out = engine(**gpu_batch)
            flags = torch.stack(
                [
                    (~torch.isfinite(out.loss.detach())).to(torch.float32),
                    torch.tensor(float(stop.requested), device=device),
                ]
            )
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            nonfinite, stop_now = (bool(x) for x in flags.tolist())
            stopping = stopping or stop_now
            if nonfinite:  # every rank drops this micro-batch, so DeepSpeed's state stays in step
                consecutive_nonfinite += 1
                window.skipped += 1
                log.warning("non-finite loss at step %d: the micro-batch is skipped", step + 1)
                if consecutive_nonfinite >= train.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"the loss was not finite for {consecutive_nonfinite} consecutive micro-batches, the last at "
                        f"step {step + 1}; lower the learning rate or warm up longer, check the data, or resume from "
                        f"an earlier checkpoint ({self._latest() or 'none yet'})"
                    )
            else:
                consecutive_nonfinite = 0
                engine.backward(out.loss)
                lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step applies; step() moves it on
                engine.step()
                window.add(out, batch, self.batch_sizes.micro)
                step_batches.append(batch)
            if engine.global_steps == step:  # inside a gradient accumulation: the step goes on to its end
                continue
            # -- a step completed: its boundary work, in this order -----------------------------------------
            step = engine.global_steps
            bar.update(1)
            if fingerprints is not None:
                fingerprints.write({"step": step, "batches": batch_fingerprint(step_batches)})
            step_batches = []
            self._log_step(step, lr, window, bar)
            self._evaluate_between(step)
            if stopping:
                return self._stop(step, stop)
            self._checkpoint(step)
        return self._finish(step)

    # -- step-boundary work: each hook decides whether the step is its turn --------------------------

    def _log_step(self, step: int, lr: float, window: StepWindow, bar: Any) -> None:
        """Every `log_every` steps and at the last: one metrics record of the steps since the previous one."""
        if step % self.train.log_every != 0 and step != self.train.train_steps:
            return
        record = self._step_record(step, lr, window)
        self.report.record(record)
        bar.set_postfix(postfix(record), refresh=False)
        window.reset()

    def _evaluate_between(self, step: int) -> None:
        """Every `eval_every` steps before the last; the run's best evaluation is saved and registered if asked."""
        train = self.train
        if not train.eval_every or step % train.eval_every != 0 or step >= train.train_steps:
            return
        if self._evaluate(step) and train.register_on_best_eval and self._save(step):
            self.last_saved = step
            self._register(step)

    def _stop(self, step: int, stop: StopRequest) -> int:
        """A stop was requested: save where the run stands and end; exit code 0 when that checkpoint is written."""
        saved = self._save(step)
        self._status(INTERRUPTED if saved else FAILED, step, stop.reason())
        log.warning("stopped at step %d by a signal; checkpoint %s", step, "saved" if saved else "FAILED")
        return 0 if saved else 1

    def _checkpoint(self, step: int) -> None:
        if step % self.train.checkpoint_every == 0 and self._save(step):
            self.last_saved = step

    def _finish(self, step: int) -> int:
        """After the last step: a final evaluation and checkpoint, then the registration if asked."""
        self._evaluate(step)
        if self.last_saved != step and not self._save(step):
            message = f"the final checkpoint could not be written; the last usable one is {self._latest()}"
            self._status(FAILED, step, message)
            return 1
        message = self._register(step) if self.train.register else ""
        self._status(FINISHED, step, message)
        return EXIT_NOT_REGISTERED if self.unregistered and self.rank == 0 else 0

    def _step_record(self, step: int, lr: float, window: StepWindow) -> dict[str, Any]:
        dist.all_reduce(window.sums)
        loss, mlm, nsp, mlm_ok, mlm_n, nsp_ok, nsp_n = window.sums.tolist()
        batches = max(window.micro_batches * self.world_size, 1)
        rates = window.throughput.report()
        record: dict[str, Any] = {
            "step": step,
            "loss": loss / batches,
            "mlm_loss": mlm / batches,
            "nsp_loss": nsp / batches,
            "mlm_accuracy": mlm_ok / max(mlm_n, 1.0),
            "nsp_accuracy": nsp_ok / max(nsp_n, 1.0),
            "lr": lr,
            "grad_norm": _number(self.engine.get_global_grad_norm()),
            "loss_scale": _number(getattr(self.optimizer, "cur_scale", None)),
            "skipped_batches": window.skipped,
            "bad_shards_skipped": self._bad_shards_skipped(),
            "sequences_per_s": rates["sequences_per_s"] * self.world_size,
            "tokens_per_s": rates["tokens_per_s"] * self.world_size,  # real tokens
            "padded_tokens_per_s": rates["padded_tokens_per_s"] * self.world_size,  # what the model computes on
            "padding_share": rates["padding_share"],  # of this rank's batches
            "data_wait_share": rates["data_wait_share"],  # of this rank's time, waiting for its next batch
        }
        record["mfu"] = self._mfu(record["sequences_per_s"], rates["mean_padded_length"])
        return record

    def _bad_shards_skipped(self) -> int:
        """Shards skipped under --skip-bad-shards so far, all ranks together (each rank counts its reads)."""
        count = torch.tensor([len(self.batches.skipped_shards)], dtype=torch.int64, device=self.engine.device)
        dist.all_reduce(count)
        return int(count.item())

    def _mfu(self, sequences_per_s: float, padded_length: float) -> float | None:
        if not self.on_gpu:
            return None
        peak = peak_bf16_flops(torch.cuda.get_device_name())
        if peak is None:
            return None
        predictions = self.manifest.max_predictions
        flops = pretraining_step_flops(self.model_config, round(padded_length), predictions)
        return flops * sequences_per_s / (peak * self.world_size)

    def _evaluate(self, step: int) -> bool:
        """Evaluate on every rank (the result is all-reduced); True when the MLM loss is the run's best yet."""
        if not self.eval_batches:
            return False
        samples = self.validation_spec.samples
        announce(f"step {step}: evaluating on {min(samples, self.train.eval_samples or samples):,} validation samples")
        result = evaluate(self.engine, self.eval_batches, self.engine.device, self.mask_id, self.unigram)
        improved = result.mlm_loss < self.best_eval_loss
        self.best_eval_loss = min(self.best_eval_loss, result.mlm_loss)
        self.evaluations[step] = result.as_metrics()  # a registration at this step is tagged with it
        self.report.record({"step": step, **result.as_metrics()})
        if self.rank == 0:
            log.info(
                "step %d evaluation: at [MASK] loss %.4f (unigram guess %.4f: %+.3f nat), accuracy %.4f; "
                "NSP accuracy %.4f (majority %.4f)",
                step,
                result.mask_loss,
                result.kinds["mask"].unigram_loss,
                result.mask_gain,
                result.kinds["mask"].accuracy,
                result.nsp_accuracy,
                result.nsp_majority,
            )
        return improved

    def _save(self, step: int) -> bool:
        client_state = {
            "step": step,
            "run_id": self.report.run_id if self.report.tracker is not None else self.run_id,
            "train_config": self.train.to_dict(),
            "model_config": self.model_config.to_dict(),
            "dataset": absolute(self.request.dataset),
            "dataset_manifest_sha256": self.manifest_sha256,
            "world_size": self.world_size,
        }
        rank_state = {"rng": checkpointing.rng_states(), "data": self.batches.state.to_dict()}
        return checkpointing.save(
            self.engine,
            self.harness.directory.checkpoints,
            step,
            client_state,
            rank_state,
            self.train.keep_checkpoints,
            self.engine.device,
        )

    def _status(self, state: str, step: int, message: str = "") -> None:
        """The status names the newest checkpoint: where a resume would continue."""
        self.harness.set_status(state, step, message, self._latest() if self.harness.is_main else None)

    def _latest(self) -> str | None:
        return self.harness.directory.latest_checkpoint()

    # -- MLflow (rank 0) -----------------------------------------------------------------------------

    def _tags(self, step: int) -> dict[str, Any]:
        tags: dict[str, Any] = {
            "phase": self.train.phase,
            "world_size": self.world_size,
            "nodes": self.nodes,
            "dataset_sha256": self.manifest_sha256,
            "tokenizer_vocab_sha256": self.manifest.tokenizer.vocab_sha256,
            "output": str(self.output.resolve()),
        }
        if self.resume_tag is not None:
            tags["resumed_at_step"] = step
        return tags

    def _params(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "model": self.model_config.to_dict(),
            "train": self.train.to_dict(),
            "deepspeed": self.ds_config,
            "batch": {
                "global": self.batch_sizes.global_batch,
                "micro": self.batch_sizes.micro,
                "accumulation": self.batch_sizes.accumulation,
            },
            "dataset": {
                "path": absolute(self.request.dataset),
                "manifest_sha256": self.manifest_sha256,
                "parameters": manifest.parameters,
                "tokenizer": {k: v for k, v in asdict(manifest.tokenizer).items() if k != "special_token_ids"},
                "totals": manifest.totals,
                "train_samples": manifest.splits["train"].samples,
                "validation_samples": manifest.splits["validation"].samples,
            },
            "init_from": self.request.init_from,
            "world_size": self.world_size,
            "nodes": self.nodes,
            "code": code_version(),
        }

    def _register(self, step: int) -> str:
        """Export the checkpoint at `step` and register it (rank 0); the other ranks wait at the next collective.
        A failure is reported (log, the returned status message, `self.unregistered`) and training goes on:
        `bertpipe register` can do it later."""
        tracker = self.report.tracker
        if tracker is None:  # tracking off, or not rank 0
            return ""
        later = f"run `bertpipe register --checkpoint {self.output} --tag {checkpointing.tag_for(step)}` later"
        run_id = tracker.wait_for_run()
        if run_id is None:
            log.warning("MLflow is unavailable, so step %d was not registered; %s", step, later)
            self.unregistered.append(step)
            return f"not registered (MLflow unavailable); {later}"
        from pipeline.handoff.registry import CheckpointFacts, default_model_name, register_run_checkpoint

        announce(f"step {step}: exporting and registering the checkpoint")
        facts = CheckpointFacts(  # what this run holds: nothing is read back from its files
            step=step,
            phase=self.train.phase or None,
            dataset=absolute(self.request.dataset),
            dataset_manifest_sha256=self.manifest_sha256,
            world_size=self.world_size,
            model_name=self.train.registered_model_name
            or default_model_name(self.train.model if self.train.model in PRESETS else None),
            run_id=run_id,
            evaluation=self.evaluations.get(step, {}),
        )
        tag_dir = self.harness.directory.checkpoints / checkpointing.tag_for(step)
        try:
            registration = register_run_checkpoint(tag_dir, self.output, facts, tracker.uri)
        except Exception as error:  # a registry problem must not fail a finished run
            log.warning("registering step %d failed (%s: %s); %s", step, type(error).__name__, error, later)
            self.unregistered.append(step)
            return f"not registered ({type(error).__name__}); {later}"
        tracker.set_tags({"registered_version": registration.uri})
        champion = " (champion)" if registration.champion else ""
        return f"registered {registration.uri}{champion}"

    def _resolved_config(self) -> dict[str, Any]:
        """run_config.json: the settings as this run resolved them."""
        return {
            "train": self.train.to_dict(),
            "deepspeed": self.ds_config,
            "model": self.model_config.to_dict(),
            "dataset": absolute(self.request.dataset),
            "init_from": self.request.init_from,
            "init_from_path": self.init_from,
            "world_size": self.world_size,
        }


class StepWindow:
    """What this rank trained on since the last metrics record: losses and counts summed over its micro-batches,
    the micro-batches skipped for a non-finite loss, and the throughput."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(7, dtype=torch.float64, device=device)  # loss, mlm, nsp, mlm ok/n, nsp ok/n
        self.micro_batches = 0
        self.skipped = 0
        self.throughput = Throughput()

    def add(self, out: Any, batch: dict[str, torch.Tensor], micro_batch: int) -> None:
        """One trained micro-batch: `out` the model's output, `batch` its inputs (on the CPU)."""
        self.sums += torch.stack(
            [
                out.loss.detach().double(),
                out.mlm_loss.detach().double(),
                out.nsp_loss.detach().double(),
                out.mlm_correct.double(),
                out.mlm_count.double(),
                out.nsp_correct.double(),
                out.nsp_count.double(),
            ]
        )
        self.micro_batches += 1
        real_tokens = int(batch["attention_mask"].sum())
        self.throughput.add(micro_batch, real_tokens, batch["input_ids"].numel())

    def reset(self) -> None:
        """After a record: the throughput's own window restarts when it reports."""
        self.sums.zero_()
        self.micro_batches = self.skipped = 0


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def pretrain(request: PretrainRequest) -> int:
    trainer = Trainer(request)
    try:
        return trainer.run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

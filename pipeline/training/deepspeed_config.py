"""The DeepSpeed JSON config checked and completed for this world size and machine, before
`deepspeed.initialize` would fail on it with a less helpful message (or not fail at all)."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.training.train_config import TrainConfigError

ADAM_TYPES = {"adam", "adamw"}  # both mean decoupled weight decay here (DeepSpeed's adam_w_mode default)
LAMB_TYPES = {"lamb", "onebitlamb"}


@dataclass(frozen=True)
class BatchSizes:
    micro: int  # per rank and forward pass
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro * self.accumulation * self.world_size


def resolve_batch_sizes(ds_config: dict[str, Any], world_size: int) -> BatchSizes:
    """train_batch_size = micro batch x gradient accumulation x world size, from any two of the three."""
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        value = ds_config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise TrainConfigError(f"{key} in the DeepSpeed config must be a positive integer, not {value!r}")
    total = ds_config.get("train_batch_size")
    micro = ds_config.get("train_micro_batch_size_per_gpu")
    accumulation = ds_config.get("gradient_accumulation_steps")
    if micro is None and total is None:
        raise TrainConfigError("the DeepSpeed config needs train_micro_batch_size_per_gpu or train_batch_size")
    if micro is None:
        accumulation = accumulation or 1
        if total % (accumulation * world_size):
            raise TrainConfigError(
                f"train_batch_size {total} does not divide by gradient_accumulation_steps {accumulation} x world "
                f"size {world_size}; make train_batch_size a multiple of {accumulation * world_size}"
            )
        micro = total // (accumulation * world_size)
    elif accumulation is None:
        if total is None:
            accumulation = 1
        elif total % (micro * world_size):
            raise TrainConfigError(
                f"train_batch_size {total} does not divide by train_micro_batch_size_per_gpu {micro} x world size "
                f"{world_size} = {micro * world_size}; make it a multiple of {micro * world_size} or change the "
                f"micro batch"
            )
        else:
            accumulation = total // (micro * world_size)
    sizes = BatchSizes(int(micro), int(accumulation), world_size)
    if total is not None and sizes.global_batch != total:
        raise TrainConfigError(
            f"train_batch_size {total} != train_micro_batch_size_per_gpu {micro} x gradient_accumulation_steps "
            f"{accumulation} x world size {world_size} = {sizes.global_batch}; drop one of the three to have it "
            f"derived"
        )
    if sizes.micro < 1 or sizes.accumulation < 1:
        raise TrainConfigError(f"batch sizes must be positive: {sizes}")
    return sizes


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str  # "adamw" (built here with torch) or "deepspeed" (built by DeepSpeed from its config)
    lr: float
    weight_decay: float
    params: dict[str, Any]


def prepare(
    ds_config: dict[str, Any], world_size: int, on_gpu: bool
) -> tuple[dict[str, Any], OptimizerSpec, BatchSizes]:
    """The config DeepSpeed gets, the optimizer to build, and the batch sizes."""
    config = copy.deepcopy(ds_config)
    sizes = resolve_batch_sizes(config, world_size)
    config.update(
        train_batch_size=sizes.global_batch,
        train_micro_batch_size_per_gpu=sizes.micro,
        gradient_accumulation_steps=sizes.accumulation,
    )
    if "scheduler" in config:
        raise TrainConfigError(
            "remove the DeepSpeed 'scheduler' section: the lr schedule is set in train.json "
            "(warmup_steps or warmup_proportion, lr_decay, lr_decay_power)"
        )
    optimizer = config.get("optimizer") or {"type": "AdamW", "params": {"lr": 1e-4}}
    kind = str(optimizer.get("type", "")).lower()
    params = dict(optimizer.get("params", {}))
    if "lr" not in params:
        raise TrainConfigError("the DeepSpeed optimizer section needs params.lr (the peak learning rate)")
    weight_decay = float(params.get("weight_decay", 0.01))
    if kind in ADAM_TYPES:
        config.pop("optimizer", None)
        spec = OptimizerSpec("adamw", float(params["lr"]), weight_decay, params)
    elif kind in LAMB_TYPES:
        if not on_gpu:
            raise TrainConfigError(
                f"optimizer {optimizer['type']} is DeepSpeed's fused CUDA LAMB and needs a GPU; on CPU set the "
                f"DeepSpeed optimizer type to AdamW"
            )
        spec = OptimizerSpec("deepspeed", float(params["lr"]), weight_decay, params)
    else:
        raise TrainConfigError(f"unsupported optimizer type {optimizer.get('type')!r}; use AdamW, or Lamb on GPU")
    if config.get("fp16", {}).get("enabled") and not on_gpu:
        raise TrainConfigError("fp16 needs a GPU; on CPU use bf16 ('bf16': {'enabled': true}) or fp32")
    if config.get("fp16", {}).get("enabled") and config.get("bf16", {}).get("enabled"):
        raise TrainConfigError("enable one of fp16 and bf16, not both")
    check_known_keys(config)
    return config, spec, sizes


def keys_deepspeed_reads(config: dict[str, Any]) -> set[str]:
    """The top-level keys DeepSpeed's own parser asks `config` for (whether present or not), found by letting
    it parse the config."""
    from deepspeed.runtime.config import DeepSpeedConfig

    asked: set[str] = set()

    class Recording(dict):
        def __getitem__(self, key):
            asked.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            asked.add(key)
            return super().get(key, default)

        def __contains__(self, key):
            asked.add(key)
            return super().__contains__(key)

    # DeepSpeed checks the global batch against the world size it sees (1 before torch.distributed starts, the
    # real one after); `resolve_batch_sizes` has checked it already, so DeepSpeed derives it here.
    without_global_batch = {key: value for key, value in config.items() if key != "train_batch_size"}
    try:
        DeepSpeedConfig(Recording(without_global_batch))
    except (AssertionError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        raise TrainConfigError(f"DeepSpeed refuses the DeepSpeed config: {error}") from None
    return asked


def check_known_keys(config: dict[str, Any]) -> None:
    """DeepSpeed ignores a top-level key it does not know without a word, so a misspelt `zero_optimization`
    would train without ZeRO: refuse such keys, with the closest known one."""
    known = keys_deepspeed_reads(config) | {"train_batch_size"}
    unknown = sorted(set(config) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TrainConfigError(
            f"DeepSpeed does not know the key(s) {', '.join(hints)} in the DeepSpeed config and would ignore "
            f"them; fix or remove them"
        )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights (BERT's recipe); the tied decoder counted once."""
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adamw(groups: list[dict[str, Any]], spec: OptimizerSpec, on_gpu: bool) -> torch.optim.Optimizer:
    params = spec.params
    return torch.optim.AdamW(
        groups,
        lr=spec.lr,
        betas=tuple(params.get("betas", (0.9, 0.999))),
        eps=float(params.get("eps", 1e-6)),
        fused=on_gpu,
    )


def initialize_engine(
    model: nn.Module,
    spec: OptimizerSpec,
    ds_config: dict[str, Any],
    lr_factor: Callable[[int], float],
    on_gpu: bool,
) -> tuple[Any, Any, Any]:
    """The DeepSpeed engine, its optimizer and lr scheduler for `model`: AdamW built here with BERT's
    parameter groups, any other optimizer by DeepSpeed from its config; the lr is the optimizer's peak
    times `lr_factor(step)`. Both training loops build their engine with it."""
    import deepspeed

    groups = parameter_groups(model, spec.weight_decay)
    optimizer = build_adamw(groups, spec, on_gpu) if spec.kind == "adamw" else None
    engine, engine_optimizer, _, lr_scheduler = deepspeed.initialize(
        model=model,
        model_parameters=groups if optimizer is None else None,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_factor),
        config=ds_config,
        dist_init_required=False,
    )
    return engine, engine_optimizer, lr_scheduler

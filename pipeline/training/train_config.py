"""The pretraining run's own settings (`train.json`), beside DeepSpeed's (`deepspeed.json`).

DeepSpeed's file keeps what DeepSpeed owns in its own format (batch sizes, ZeRO stage, precision,
optimizer and its lr, gradient clipping); `train.json` holds the rest. A config *directory* holds both;
`--set key=value` overrides `train.json` fields from the command line, `--set deepspeed.key=value` DeepSpeed's.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.training.schedule import DECAYS
from preprocessing.errors import BertpipeError

TRAIN_JSON = "train.json"
DEEPSPEED_JSON = "deepspeed.json"
# `--set deepspeed.KEY[.SUBKEY]=VALUE` sets a key of the DeepSpeed config instead of train.json.
DEEPSPEED_PREFIX = "deepspeed."
MLM_BIAS_INITS = ("unigram", "zeros")
ATTENTION_INITS = ("local", "bert")


class TrainConfigError(BertpipeError, ValueError):
    """A configuration that cannot run; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tiny"  # a preset (tiny, mini, base, large) or a Hugging Face style model directory
    model_overrides: dict[str, Any] = field(default_factory=dict)  # BertConfig fields on top of `model`
    train_steps: int = 100  # optimizer steps
    warmup_steps: int | None = None  # steps of linear warmup; give this or warmup_proportion
    warmup_proportion: float | None = None  # of train_steps; give this or warmup_steps
    lr_decay: str = "linear"  # linear | polynomial (from the peak) | polynomial_total (NVIDIA's, whole run) | constant
    lr_decay_power: float = 1.0  # exponent of the polynomial decay
    lr_end_ratio: float = 0.0  # the last step's learning rate as a share of the peak
    eval_every: int = 0  # steps; 0: only at the end
    eval_samples: int = 10_000  # first N validation samples (0: all)
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end and on SIGTERM/SIGINT
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    log_every: int = 10  # steps between metrics records (and updates of the progress figures)
    seed: int = 12345  # weights, dropout and the order of the shards
    loader_workers: int = 2  # DataLoader worker processes per rank; 0 reads in the training process
    shuffle_window_shards: int = 2  # shards shuffled together by one loader worker (held in memory)
    # "unigram": the MLM output bias starts at the log-frequencies of the training targets (see
    # BertLMPredictionHead.init_bias_to_prior); "zeros": BERT's original initialisation
    mlm_bias_init: str = "unigram"
    # "local": sinusoidal position embeddings and W_k = W_q, so that attention starts local (see
    # model/local_attention_init.py); "bert": BERT's original N(0, initializer_range) for both
    attention_init: str = "local"
    # with attention_init "local": heads of the last layer left at BERT's near-uniform start, through which [CLS]
    # sees the whole sequence from the first step (next-sentence prediction and classifiers read [CLS]); -1: all
    global_attention_heads: int = -1
    # hidden and attention dropout while pretraining; null: the model's own (BERT's 0.1). The saved and exported
    # model keeps its own, for fine-tuning: a short run over data it sees a few times gains more from every unit
    # than from the regularisation (launch/configs/README.md)
    dropout: float | None = None
    # several instances per row of max_seq_length, with no attention between them (pipeline/data/packing.py): the
    # same losses and gradients as one padded row per instance, with less compute spent on padding
    packing: bool = True
    # with --init-from a run's checkpoint: also take its optimizer state (moments, step counts), as NVIDIA's phase 2
    # does; this run's schedule, step count and data order still start afresh
    init_optimizer_state: bool = False
    # recompute each layer's activations in the backward pass instead of keeping them: for seq 512 and large
    # micro-batches, at about a third more compute per step
    activation_checkpointing: bool = False
    dynamic_masking: bool = False  # re-mask each sample every epoch from its stored original tokens
    verify_checksums: bool = True  # check each shard's sha256 against the manifest when it is read
    skip_bad_shards: bool = False  # skip (and count) unreadable shards instead of stopping
    max_nonfinite_steps: int = 5  # abort after this many consecutive non-finite losses (bf16/fp32)
    record_batch_fingerprints: bool = False  # per-rank file of a hash of every step's batches
    deepspeed_config: str = DEEPSPEED_JSON  # relative to the directory of train.json
    phase: str = ""  # a label for the run's MLflow tags and registered versions (e.g. "1", "2")
    experiment: str = "bert-pretraining"  # MLflow experiment
    register: bool = True  # register the final checkpoint in the MLflow model registry
    register_on_best_eval: bool = False  # also register (and checkpoint) at each evaluation that improves
    registered_model_name: str = ""  # default: bert-<preset>

    def __post_init__(self) -> None:
        for name in ("train_steps", "checkpoint_every", "keep_checkpoints", "log_every", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("eval_every", "eval_samples", "loader_workers"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.shuffle_window_shards < 1:
            raise TrainConfigError(f"shuffle_window_shards must be at least 1, not {self.shuffle_window_shards}")
        if self.mlm_bias_init not in MLM_BIAS_INITS:
            raise TrainConfigError(f"mlm_bias_init must be one of {MLM_BIAS_INITS}, not {self.mlm_bias_init!r}")
        if self.attention_init not in ATTENTION_INITS:
            raise TrainConfigError(f"attention_init must be one of {ATTENTION_INITS}, not {self.attention_init!r}")
        if (self.warmup_steps is None) == (self.warmup_proportion is None):
            raise TrainConfigError("give exactly one of warmup_steps and warmup_proportion")
        if self.warmup_proportion is not None and not 0 <= self.warmup_proportion <= 1:
            raise TrainConfigError(f"warmup_proportion must be in [0, 1], not {self.warmup_proportion}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.train_steps:
            raise TrainConfigError(
                f"warmup_steps must be between 0 and train_steps ({self.train_steps}), not {self.warmup_steps}"
            )
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise TrainConfigError(f"dropout must be in [0, 1) or null (the model's own), not {self.dropout}")
        if self.lr_decay not in DECAYS:
            raise TrainConfigError(f"lr_decay must be one of {DECAYS}, not {self.lr_decay!r}")
        if self.lr_decay_power <= 0:
            raise TrainConfigError(f"lr_decay_power must be greater than 0, not {self.lr_decay_power}")
        if not 0 <= self.lr_end_ratio <= 1:
            raise TrainConfigError(f"lr_end_ratio must be in [0, 1], not {self.lr_end_ratio}")

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_proportion * self.train_steps)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TrainConfigError(f"unknown train config key(s) {unknown}; known keys are {sorted(known)}")
        for name, value in values.items():
            _check_type(name, value, known[name].type)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """JSON values against the field annotations (`int | None` and the like)."""
    options = [part.strip().split("[")[0] for part in str(annotation).split("|")]
    if value is None and "None" in options:
        return
    accepted = tuple(t for option in options for t in _TYPES.get(option, ()))
    if accepted and (not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)):
        raise TrainConfigError(f"train config {name} must be {annotation}, not {value!r}")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings; values are JSON where they parse as JSON (numbers, true/false, null, objects)."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TrainConfigError(f"--set takes key=value, not {pair!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def keys_help() -> str:
    """The `train.json` keys (what `--set KEY=VALUE` takes), each with its default and its comment from the
    class above: the help text and the code cannot disagree."""
    import inspect
    import re

    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(TrainConfig).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
            continue
        declared = re.match(r"(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", stripped)
        if declared:
            comments[declared.group(1)] = " ".join([*pending, declared.group(2) or ""]).strip()
        pending = []
    lines = []
    for item in dataclasses.fields(TrainConfig):
        default = item.default_factory() if item.default is dataclasses.MISSING else item.default
        described = f": {comments[item.name]}" if comments.get(item.name) else ""
        lines.append(f"  {item.name} = {json.dumps(default)}{described}")
    return "\n".join(lines)


@dataclass(frozen=True)
class LoadedConfig:
    train: TrainConfig
    deepspeed: dict[str, Any]
    train_path: Path
    deepspeed_path: Path


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None, deepspeed_path: str | None = None
) -> LoadedConfig:
    """A config directory (train.json + deepspeed.json) or a train.json file, with overrides applied."""
    path = Path(path)
    train_path = path / TRAIN_JSON if path.is_dir() else path
    if not train_path.is_file():
        raise TrainConfigError(f"no training config at {train_path}; pass a directory like launch/configs/tiny")
    overrides = overrides or {}
    values = _read_json(train_path)
    values.update({key: value for key, value in overrides.items() if not key.startswith(DEEPSPEED_PREFIX)})
    train = TrainConfig.from_dict(values)
    ds_path = Path(deepspeed_path) if deepspeed_path else train_path.parent / train.deepspeed_config
    if not ds_path.is_file():
        raise TrainConfigError(f"no DeepSpeed config at {ds_path} (deepspeed_config in {train_path})")
    deepspeed = with_deepspeed_overrides(_read_json(ds_path), overrides)
    return LoadedConfig(train, deepspeed, train_path, ds_path)


def with_deepspeed_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config with each `deepspeed.SECTION.KEY` override set (sections made where missing), so
    that a run can change a DeepSpeed key without a copied file; the file itself is not changed. Keys DeepSpeed
    does not know are refused later, like the file's own."""
    result = copy.deepcopy(config)
    for key, value in overrides.items():
        if not key.startswith(DEEPSPEED_PREFIX):
            continue
        path = key.removeprefix(DEEPSPEED_PREFIX).split(".")
        if not all(path):
            raise TrainConfigError(f"--set {key}: name a DeepSpeed key, e.g. deepspeed.zero_optimization.stage=2")
        section = result
        for depth, name in enumerate(path[:-1]):
            section = section.setdefault(name, {})
            if not isinstance(section, dict):
                where = ".".join(path[: depth + 1])
                raise TrainConfigError(f"--set {key}: {where} is {section!r} in the DeepSpeed config, not a section")
        section[path[-1]] = value
    return result


def _read_json(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TrainConfigError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise TrainConfigError(f"{path} must hold a JSON object")
    return values

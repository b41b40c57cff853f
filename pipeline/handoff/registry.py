"""Hand an exported model to the MLflow model registry.

The Hugging Face directory is logged byte for byte as the artifacts of an MLflow pyfunc model (so
`mlflow.pyfunc.load_model` serves it, and a download gives back every file unchanged), registered as a
new version of `name`, tagged with where it came from, and given the alias `champion` when its
evaluation beats the current champion's.

MLflow reserves the alias name `latest`: the newest version is `models:/<name>/latest` in MLflow itself,
and `pipeline.handoff.model_source` also accepts `models:/<name>@latest` for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.config import PRESETS
from pipeline.handoff.redaction import redact_credentials
from preprocessing.errors import MissingInputError

log = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_ARTIFACT = "model"  # artifact path of the MLflow model inside its run
HF_ARTIFACT = "hf_model"  # the Hugging Face directory inside the MLflow model's artifacts
CHAMPION_METRIC = "eval_mlm_loss"  # lower is better
TAG_PREFIX = "bertpipe."
DIGESTS_FILE = "file_sha256.json"  # beside MLmodel: sha256 of every file of the Hugging Face directory


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    champion: bool
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def default_model_name(preset: str | None) -> str:
    """`bert-<preset>`; a model that is no preset is `bert-custom`."""
    return f"bert-{preset}" if preset else "bert-custom"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path: what "intact" is checked against."""
    return {
        str(path.relative_to(directory)): file_sha256(path) for path in sorted(directory.rglob("*")) if path.is_file()
    }


@dataclass(frozen=True)
class ChampionRule:
    """Which evaluation metric decides the champion, and which way."""

    metric: str = CHAMPION_METRIC
    higher_is_better: bool = False


PRETRAINING_RULE = ChampionRule()


def beats(candidate: float | None, champion: float | None, higher_is_better: bool = False) -> bool:
    """Whether an evaluation takes the champion's place: a finite value beats none and any worse one."""
    if candidate is None or not math.isfinite(candidate):
        return False
    if champion is None:
        return True
    return candidate > champion if higher_is_better else candidate < champion


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def save_mlflow_model(hf_dir: Path, destination: Path) -> None:
    """An MLflow pyfunc model at `destination` whose artifacts hold `hf_dir` unchanged."""
    import mlflow.pyfunc

    with warnings.catch_warnings():
        # MLflow asks for type hints on predict to infer a signature; it takes lists and DataFrames alike.
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(destination),
            python_model=str(Path(__file__).with_name("mlflow_pyfunc.py")),
            artifacts={HF_ARTIFACT: str(hf_dir)},
            # Stated rather than inferred: inference imports the model and runs pip; no index may be reachable.
            pip_requirements=["bertpipe", "torch", "tokenizers", "safetensors"],
        )


def register_export(
    hf_dir: str | Path,
    tracking_uri: str,
    name: str,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    eval_metrics: dict[str, float] | None = None,
    experiment: str = "bertpipe-registry",
    rule: ChampionRule = PRETRAINING_RULE,
) -> Registration:
    """Log `hf_dir` as an MLflow model in `run_id` (a new run in `experiment` when None), register it as a
    new version of `name`, tag it, and move `champion` to it when its evaluation (`rule`: by default a lower
    `eval_mlm_loss`) beats the champion's."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file() or not (hf_dir / "model.safetensors").is_file():
        raise MissingInputError(
            f"{hf_dir} is not an exported model (config.json and model.safetensors); run `bertpipe export`"
        )
    client = MlflowClient(tracking_uri)
    if run_id is not None and not _run_exists(client, run_id):
        log.warning(
            "MLflow run %s is not in %s: the model is logged in a new run", run_id, redact_credentials(tracking_uri)
        )
        run_id = None
    if run_id is None:
        experiment_id = _experiment_id(client, experiment, tracking_uri)
        run_id = client.create_run(experiment_id, run_name=f"register-{name}").info.run_id
        created_run = True
    else:
        created_run = False
    digests = directory_digests(hf_dir)
    with tempfile.TemporaryDirectory(prefix="bertpipe-mlflow-model-") as staging:
        model_dir = Path(staging) / MODEL_ARTIFACT
        save_mlflow_model(hf_dir, model_dir)
        (model_dir / DIGESTS_FILE).write_text(json.dumps(digests, indent=2) + "\n")
        step = _number((tags or {}).get("step"))
        artifact_path = f"{MODEL_ARTIFACT}-step{int(step)}" if step is not None else MODEL_ARTIFACT
        client.log_artifacts(run_id, str(model_dir), artifact_path)
    if created_run:
        client.set_terminated(run_id)

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version_tags = {f"{TAG_PREFIX}{k}": str(v) for k, v in (tags or {}).items() if v is not None}
    version_tags[f"{TAG_PREFIX}model_safetensors_sha256"] = digests["model.safetensors"]
    for key, value in (eval_metrics or {}).items():
        version_tags[f"{TAG_PREFIX}{key}"] = repr(float(value))
    version = client.create_model_version(name, source, run_id=run_id, tags=version_tags)

    candidate = _number((eval_metrics or {}).get(rule.metric))
    current = _champion_value(client, name, rule.metric)
    champion = beats(candidate, current, rule.higher_is_better)
    if champion:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    aliases = tuple(client.get_model_version(name, version.version).aliases)
    log.info(
        "registered %s version %s from %s%s",
        name,
        version.version,
        hf_dir,
        f"; {CHAMPION} ({rule.metric} {candidate:.4f})" if champion else "",
    )
    return Registration(name, version.version, run_id, champion, aliases)


def _run_exists(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException as error:
        if error.get_http_status_code() >= 500:
            raise
        return False


def _champion_value(client: Any, name: str, metric: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no champion yet
    return _number(version.tags.get(f"{TAG_PREFIX}{metric}"))


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    from pipeline.handoff.tracking import default_artifact_location

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))


def evaluation_at(metrics_file: Path, step: int) -> dict[str, float]:
    """The evaluation record a run wrote at `step` (metrics.jsonl), without its step; {} if none."""
    if not metrics_file.is_file():
        return {}
    found: dict[str, float] = {}
    for line in metrics_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step") == step and CHAMPION_METRIC in record:
            found = {k: v for k, v in record.items() if k.startswith("eval_")}
    return found


@dataclass(frozen=True)
class CheckpointFacts:
    """What a registered version of a pretraining checkpoint is tagged with."""

    step: int | None
    phase: str | None
    dataset: str | None
    dataset_manifest_sha256: str | None
    world_size: int | None
    model_name: str  # the registered model's name
    run_id: str | None  # the MLflow run the version is logged in
    evaluation: dict[str, float]  # the held-out evaluation at `step` ({} if none)


def checkpoint_facts(tag_dir: Path, run_dir: Path) -> CheckpointFacts:
    """The facts of a checkpoint read back from its files (its model states and the run's metrics.jsonl):
    for `bertpipe register`, which has nothing else. The trainer passes what it holds instead."""
    from pipeline.training.weights import model_states

    states = model_states(tag_dir)
    train_config = states.get("train_config", {})
    preset = train_config.get("model")
    return CheckpointFacts(
        step=states.get("step"),
        phase=train_config.get("phase") or None,
        dataset=states.get("dataset"),
        dataset_manifest_sha256=states.get("dataset_manifest_sha256"),
        world_size=states.get("world_size"),
        model_name=train_config.get("registered_model_name")
        or default_model_name(preset if preset in PRESETS else None),
        run_id=states.get("run_id"),
        evaluation=evaluation_at(run_dir / "metrics.jsonl", states.get("step")),
    )


def register_checkpoint(
    checkpoint: str | Path,
    tracking_uri: str,
    name: str | None = None,
    tag: str | None = None,
    run_id: str | None = None,
    phase: str | None = None,
) -> Registration:
    """`bertpipe register --checkpoint`: a checkpoint of `bertpipe pretrain` exported and registered with the
    facts its files record (`register_run_checkpoint`); `name`, `run_id` and `phase` override them."""
    from pipeline.handoff.export import select_tag_dir

    tag_dir = select_tag_dir(Path(checkpoint), tag)
    run_dir = tag_dir.parent.parent  # <run>/checkpoints/<tag>
    facts = checkpoint_facts(tag_dir, run_dir)
    facts = replace(
        facts, model_name=name or facts.model_name, run_id=run_id or facts.run_id, phase=phase or facts.phase
    )
    return register_run_checkpoint(tag_dir, run_dir, facts, tracking_uri)


def register_run_checkpoint(tag_dir: Path, run_dir: Path, facts: CheckpointFacts, tracking_uri: str) -> Registration:
    """Export a pretraining checkpoint (into <run>/exports/<tag>, reused when already there) and register it
    with its step, phase, evaluation at that step and dataset/tokenizer digests."""
    from pipeline.handoff.export import export_checkpoint

    exported = run_dir / "exports" / tag_dir.name
    if not (exported / "model.safetensors").is_file():
        export_checkpoint(tag_dir, exported, tag=None)
    tags = {
        "step": facts.step,
        "phase": facts.phase,
        "checkpoint": str(tag_dir.resolve()),
        "dataset": facts.dataset,
        "dataset_manifest_sha256": facts.dataset_manifest_sha256,
        "tokenizer_vocab_sha256": file_sha256(exported / "vocab.txt"),
        "world_size": facts.world_size,
    }
    return register_export(
        exported, tracking_uri, facts.model_name, run_id=facts.run_id, tags=tags, eval_metrics=facts.evaluation
    )

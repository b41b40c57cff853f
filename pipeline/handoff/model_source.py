"""Wherever a model is named (`--init-from`, `--model`, `bertpipe register`), one of:

    models:/NAME@ALIAS      a registry alias (`models:/NAME@latest`: the newest version)
    models:/NAME/VERSION    a registry version number, or `latest`
    DIR                     a Hugging Face style directory (config.json + weights)
    DIR                     a DeepSpeed checkpoint of this trainer (a run's output, its checkpoints/ or a step dir)

`resolve_model` turns the name into a local directory and says which kind it is. Registry versions are
downloaded once into a cache (`$BERTPIPE_CACHE`, default ~/.cache/bertpipe) and checked file by file against
the digests logged with them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from model.config import BertConfig
from pipeline.handoff.redaction import redact_credentials
from pipeline.handoff.registry import DIGESTS_FILE, HF_ARTIFACT, directory_digests
from pipeline.training.weights import checkpoint_tag_dir, model_config_of
from preprocessing.errors import BertpipeError, MissingInputError

REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")

Kind = Literal["registry", "huggingface", "deepspeed"]


class ModelSourceError(BertpipeError, ValueError):
    """A model name that leads nowhere; the message says what was tried."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as the user wrote it
    kind: Kind
    path: Path  # a Hugging Face directory, or the DeepSpeed tag directory
    registry_version: str | None = None  # "name/version" for a registry model

    def config(self) -> BertConfig:
        config = model_config_of(self.path)
        if config is None:
            raise ModelSourceError(f"{self.spec}: no model config in {self.path}")
        return config


def cache_root() -> Path:
    return Path(os.environ.get("BERTPIPE_CACHE", Path.home() / ".cache" / "bertpipe"))


def resolve_model(spec: str, tracking_uri: str | None = None) -> ResolvedModel:
    """The local directory behind `spec`; registry URIs are looked up at `tracking_uri` (default:
    MLFLOW_TRACKING_URI)."""
    match = REGISTRY_URI.match(spec)
    if match:
        return _from_registry(spec, match["name"], match["alias"], match["version"], tracking_uri)
    if spec.startswith("models:/"):
        raise ModelSourceError(f"{spec!r} is not a registry URI; write models:/NAME@ALIAS or models:/NAME/VERSION")
    path = Path(spec)
    if not path.exists():
        raise MissingInputError(f"model {spec}: no such directory (nor a models:/ registry URI)")
    tag_dir = checkpoint_tag_dir(path)
    if tag_dir is not None:
        return ResolvedModel(spec, "deepspeed", tag_dir)
    if (path / "config.json").is_file():
        return ResolvedModel(spec, "huggingface", path)
    raise ModelSourceError(
        f"model {spec} is neither a Hugging Face style directory (config.json + weights) nor a checkpoint of this "
        f"trainer (a run's output directory, its checkpoints/ directory or a step directory)"
    )


def _from_registry(
    spec: str, name: str, alias: str | None, version: str | None, tracking_uri: str | None
) -> ResolvedModel:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ModelSourceError(
            f"{spec} names a registry model but no tracking URI is set: export MLFLOW_TRACKING_URI or pass "
            f"--tracking-uri (a run's embedded store is sqlite:///<output>/mlflow.db)"
        )
    client = MlflowClient(uri)
    shown = redact_credentials(uri)
    try:
        if alias is not None and alias.lower() != "latest":
            found = client.get_model_version_by_alias(name, alias)
        elif (alias or version or "").lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelSourceError(f"{spec}: registered model {name!r} has no versions at {shown}")
            found = max(versions, key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, version)
    except MlflowException as error:
        raise ModelSourceError(f"{spec}: not found at {shown} ({redact_credentials(error.message)})") from None

    # Keyed by the URI without its password: the same models, and no secret in a directory name.
    target = cache_root() / "registry" / quote(shown, safe="") / name / str(found.version)
    if not (target / "config.json").is_file():
        _download(found.source, target, uri)
    return ResolvedModel(spec, "registry", target, f"{name}/{found.version}")


def _download(source: str, target: Path, tracking_uri: str) -> None:
    """The version's MLflow model -> its Hugging Face directory at `target`, checked, then renamed in place."""
    import mlflow.artifacts

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as staging:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=staging, tracking_uri=tracking_uri)
        )
        hf_dir = local / _artifact_path(local)
        if not (hf_dir / "config.json").is_file():
            raise ModelSourceError(f"{source} holds no exported model at {hf_dir.relative_to(local)}")
        expected = json.loads((local / DIGESTS_FILE).read_text()) if (local / DIGESTS_FILE).is_file() else None
        if expected is not None and directory_digests(hf_dir) != expected:
            raise ModelSourceError(f"{source}: the downloaded files differ from the digests logged with them")
        try:
            hf_dir.rename(target)  # atomic: the cache holds a whole version or none
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process (a rank on this node) put it there first: use theirs


def _artifact_path(mlflow_model: Path) -> str:
    """Where the MLflow model keeps the Hugging Face directory (MLmodel records it; it is artifacts/<dir name>)."""
    import yaml

    try:
        description = yaml.safe_load((mlflow_model / "MLmodel").read_text())
        return description["flavors"]["python_function"]["artifacts"][HF_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError) as error:
        raise ModelSourceError(f"{mlflow_model} is not a model registered by bertpipe ({error!r})") from error
